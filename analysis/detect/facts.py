"""What a session's rows mean for abuse detection: addresses and replies.

Pure functions over the records of ``analysis.records``; no state. They
read addresses as RFC 5321 4.1.2 writes them and reply codes as RFC 3463
classifies them.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass

from analysis.escape import escape_controls
from analysis.records import CommandRecord, SessionRecord

# RFC 3463 3.2: x.1.1 bad destination mailbox, x.1.0 other address status,
# x.1.10 recipient address has a null MX (RFC 7505 3.2 counts it here too).
_UNKNOWN_USER_CODES = frozenset({"5.1.1", "5.1.0", "5.1.10"})
_UNKNOWN_USER_TEXT = re.compile(
    r"user unknown|unknown user|no such user|unknown recipient|"
    r"recipient not found|does not exist|invalid recipient|mailbox not found",
    re.IGNORECASE,
)
# RFC 3463 3.8: x.7.1 delivery not authorized; relaying is its most common
# use, so without the word "relay" it counts only for a foreign domain.
_POLICY_CODES = frozenset({"5.7.1", "4.7.1"})
_RELAY_TEXT = re.compile(r"relay", re.IGNORECASE)
SYNTAX_ERROR_CODES = frozenset({500, 501})
# The verbs that open a conversation and draw the server's name and
# extensions: LHLO is LMTP's EHLO (RFC 2033 4.1).
HELO_VERBS = frozenset({"EHLO", "HELO", "LHLO"})
EXAMPLE_TEXT = 120  # characters of a reply kept in an example


@dataclass(frozen=True, slots=True)
class Target:
    """Where an RCPT address sends mail in the end."""

    address: str
    domain: str | None  # lower-case; the final domain of a routed address
    routed: str | None  # "percent-hack", "source route" or "bang path"

    @property
    def internal(self) -> bool:
        """A domain no mail can be relayed to over the Internet.

        A name without a dot (``root@localhost``, ``postmaster``) and an
        address literal (RFC 5321 4.1.3) are the receiving host itself.
        """
        return self.domain is not None and (
            "." not in self.domain or self.domain.startswith("[")
        )


def target(address: str) -> Target:
    """The final domain of an RCPT address and how it is routed, if at all."""
    routed = None
    mailbox = address
    if mailbox.startswith("@") and ":" in mailbox:
        # RFC 5321 4.1.2 / C: "@relay1,@relay2:user@host", a source route.
        routed = "source route"
        mailbox = mailbox.partition(":")[2]
    local, at, domain = mailbox.rpartition("@")
    if not at:
        local, domain = mailbox, ""
    if "%" in local:
        # "user%host@relay": the relay is asked to send on to host.
        routed = routed or "percent-hack"
        domain = local.rpartition("%")[2]
    elif "!" in local:
        routed = routed or "bang path"
        domain = local.partition("!")[0]
    domain = domain.strip().rstrip(".").lower()
    return Target(address, domain or None, routed)


def sender_domain(address: str | None) -> str | None:
    if not address or "@" not in address:
        return None
    return address.rpartition("@")[2].strip().rstrip(".").lower() or None


def is_unknown_user(command: CommandRecord) -> bool:
    code = command.reply_code
    if code is None or code // 100 not in (4, 5):
        return False
    if command.reply_enhanced is not None:
        return command.reply_enhanced in _UNKNOWN_USER_CODES
    return code // 100 == 5 and bool(
        _UNKNOWN_USER_TEXT.search(command.reply_text or "")
    )


def is_relay_refusal(command: CommandRecord, foreign: bool) -> bool:
    """A refused RCPT that refuses relaying; ``foreign``: not a local domain."""
    code = command.reply_code
    if code is None or code // 100 not in (4, 5):
        return False
    if _RELAY_TEXT.search(command.reply_text or "") or code == 551:
        return True
    return foreign and command.reply_enhanced in _POLICY_CODES


def start_seen(session: SessionRecord) -> bool:
    """Whether the capture holds the session's start (its SYN or SYN-ACK).

    A session caught after its start (the capture began mid-traffic, or
    the connection was evicted and caught again) may have sent its
    greeting, HELO, AUTH and commands before the capture: what the capture
    lacks there is no evidence that the client or server left it out.
    """
    return session.handshake_seen or session.synack_seen


def accepted(command: CommandRecord) -> bool:
    return command.reply_code is not None and command.reply_code // 100 == 2


def refused(command: CommandRecord) -> bool:
    return command.reply_code is not None and command.reply_code // 100 in (4, 5)


def rcpt_address(command: CommandRecord) -> str:
    """The address of an RCPT command, as the session builder reads it."""
    argument = command.argument
    start, end = argument.find("<"), argument.rfind(">")
    if start != -1 and end > start:
        return argument[start + 1 : end]
    return argument.partition(":")[2].strip()


def example(command: CommandRecord) -> str:
    """A command and its reply on one escaped line, for an alert's evidence."""
    line = f"C: {command.verb} {command.argument}".rstrip()
    if command.reply_code is not None:
        text = (command.reply_text or "").split("\n", 1)[0][:EXAMPLE_TEXT]
        line += f" / S: {command.reply_code} {text}".rstrip()
    return escape_controls(line)


# Greetings and EHLO replies repeat across a server's sessions, clients
# come back often, and every detector asks about the same few strings: the
# answers below are cached. Small caches: at 4096 entries each they held
# 4 MiB more on the 1 GB benchmark capture than on the 100 MB one, which is
# memory growing with the input rather than with the open connections.
_CACHE_SIZE = 512


def host_names(text: str | None) -> frozenset[str]:
    """The host name a greeting or EHLO reply starts with, and its parent.

    RFC 5321 4.2 and 4.1.1.1: both begin with the server's domain.
    """
    # Cached by that first word, not by the whole text: a cache of whole
    # replies of megabytes held what the capture held (found in review).
    first = _FIRST_WORD.match(text or "")
    return _host_names(first.group(1)) if first else frozenset()


# The first word of a text: what ``str.split`` would give first.
_FIRST_WORD = re.compile(r"\s*(\S+)")


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _host_names(word: str) -> frozenset[str]:
    first = word.rstrip(".").lower()
    if "." not in first or is_address(first):
        return frozenset()
    names = {first}
    parent = first.partition(".")[2]
    if "." in parent:
        names.add(parent)
    return frozenset(names)


# A character no IPv4 address has; without a colon, which every IPv6
# address has, such a text is no address at all.
_NOT_IPV4 = re.compile(r"[^0-9.]")


@functools.lru_cache(maxsize=_CACHE_SIZE)
def parse_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address in ``text``, or None."""
    if ":" not in text and _NOT_IPV4.search(text):
        # Host names are asked about as often as addresses; turning them
        # down here spares ``ip_address`` raising for each of them.
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


@functools.lru_cache(maxsize=_CACHE_SIZE)
def is_global(text: str) -> bool:
    """An Internet address: not private, loopback, link-local or reserved."""
    # Cached apart from ``parse_address``: ``is_global`` is a property that
    # tests the address against a dozen networks every time.
    address = parse_address(text)
    return address is not None and address.is_global


def is_address(text: str) -> bool:
    return parse_address(text) is not None
