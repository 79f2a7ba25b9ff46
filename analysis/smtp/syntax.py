"""Small, pure parsers for the pieces of SMTP text: no state, no I/O.

Each function takes one line (or one argument) exactly as it came off the
wire, minus its line ending, and never raises on malformed input.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from typing import Final

# RFC 5321 4.1.1 and the extensions seen in practice. Anything else is kept
# verbatim as an unknown verb.
KNOWN_VERBS = frozenset(
    {
        "EHLO",
        "HELO",
        "LHLO",
        "MAIL",
        "RCPT",
        "DATA",
        "BDAT",
        "RSET",
        "VRFY",
        "EXPN",
        "HELP",
        "NOOP",
        "QUIT",
        "STARTTLS",
        "AUTH",
        "ETRN",
        "TURN",
        "ATRN",
        "XCLIENT",
        "XFORWARD",
        "XEXCH50",
        "X-EXPS",
        "SEND",
        "SOML",
        "SAML",
    }
)

# RFC 3463 2: class "." subject "." detail, class matching the reply's digit.
_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)")

# Queue identifiers as the common MTAs print them in the reply to the end of
# data: Postfix "queued as 4Xyz", Exim "id=1Mugho-0003Dg-Un", Sendmail
# "x8F1abc123 Message accepted", Microsoft "InternalId=...".
_QUEUE_ID_PATTERNS = (
    re.compile(r"queued as ([A-Za-z0-9][A-Za-z0-9._-]*)", re.IGNORECASE),
    re.compile(r"\bid=([A-Za-z0-9][A-Za-z0-9._-]*)"),
    re.compile(r"^(?:[245]\.\d+\.\d+ )?([A-Za-z0-9]{8,24}) Message accepted"),
    re.compile(r"InternalId=([0-9]+)"),
    re.compile(r"^(?:[245]\.\d+\.\d+ )?OK ([0-9]{6,}) "),
)


def wire_text(raw: bytes) -> str:
    """Decode wire bytes as UTF-8, keeping invalid bytes as ``\\xNN`` escapes."""
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        return raw.decode("utf-8", "backslashreplace")


def show_bytes(raw: bytes, limit: int = 64) -> str:
    """A short, printable rendering of raw bytes for an anomaly's detail.

    Printable ASCII is kept; CR, LF and tab become \\r, \\n and \\t; every
    other byte becomes \\xNN, so the detail is safe in any view.
    """
    text = repr(raw[:limit])[2:-1]
    return text + ("..." if len(raw) > limit else "")


# Every three ASCII digits to their value: one lookup both checks and
# converts a reply code, for half the cost of two tests and int().
REPLY_CODES: Final = {f"{n:03d}": n for n in range(1000)}


def parse_reply_line(line: str) -> tuple[int, bool, str] | None:
    """Split "250-text" into (250, more_lines_follow, "text").

    RFC 5321 4.2: a reply line is three digits, then "-" on every line but the
    last, or " " (or nothing) on the last. Returns None for anything else.
    """
    code = REPLY_CODES.get(line[:3])
    if code is None:
        return None
    sep = line[3:4]
    if sep == "-":
        return code, True, line[4:]
    if sep in (" ", ""):
        return code, False, line[4:]
    return None


# Most replies repeat a few texts ("2.1.0 Ok"): a bounded cache spares the
# regular expression for them.
@functools.lru_cache(maxsize=1024)
def enhanced_code(text: str, code: int) -> str | None:
    """The RFC 3463 status code at the start of a reply text, if present."""
    m = _ENHANCED.match(text)
    if m is None or int(m.group(1)) != code // 100:
        return None
    return m.group(0)


# A line that is nothing but base64 (RFC 4648 4): what SASL answers look like.
BASE64_LINE = re.compile(r"[A-Za-z0-9+/]{4,}={0,2}")


def split_command(line: str) -> tuple[str, str, bool]:
    """Split a command line into (verb, argument, known).

    Verbs are matched case-insensitively (RFC 5321 2.4) and upper-cased when
    known; unknown verbs are kept as sent so that garbage stays visible.
    """
    # RFC 5321 4.1.1 wants one SP; a TAB is accepted by some servers, so it
    # separates too (an "AUTH<TAB>LOGIN" must still be seen as AUTH).
    # Only ASCII white space separates, and only an ASCII verb is matched:
    # servers compare verbs as ASCII, while str.split and str.upper read
    # Unicode, where "ma\u0131l" (a dotless i) is MAIL, "\u017ftarttls" (a
    # long s) STARTTLS and "MAIL\u00a0FROM:" MAIL: the rows showed
    # commands and transactions the server refused as unknown (found in
    # review).
    parts = _ASCII_SPACE.split(line.lstrip(_ASCII_SPACE_CHARS), 1)
    verb = parts[0]
    argument = parts[1] if len(parts) > 1 else ""
    known = _KNOWN.get(verb.upper()) if verb.isascii() else None
    if known is not None:
        return known, argument.strip(" \t"), True
    return verb, argument.strip(" \t"), False


# What bytes.split() takes for white space: ASCII's alone.
_ASCII_SPACE_CHARS = " \t\n\r\x0b\x0c"
_ASCII_SPACE = re.compile(f"[{_ASCII_SPACE_CHARS}]+")

# One string per known verb, whatever case it came in: a command waiting
# for its reply holds its verb, and 65,536 of them may wait per connection.
_KNOWN = {verb: verb for verb in KNOWN_VERBS}


def parse_path(argument: str, keyword: str) -> tuple[str | None, str]:
    """Take the path out of a MAIL/RCPT argument: (address, parameters).

    ``argument`` is everything after the verb, e.g. "FROM:<a@b> SIZE=10".
    RFC 5321 4.1.2 wants "<...>", but bare addresses and a space after the
    colon are common, so both are accepted. Returns (None, argument) when
    the keyword is missing.
    """
    head = argument[: len(keyword) + 1]
    if head.upper() != keyword + ":":
        return None, argument
    rest = argument[len(keyword) + 1 :].lstrip(" \t")
    if rest.startswith("<"):
        close = rest.find(">")
        if close < 0:
            return rest[1:], ""
        return rest[1:close], rest[close + 1 :].strip(" \t")
    address, _, params = rest.partition(" ")
    return address, params.strip(" \t")


BDAT_MAX_CHUNK = 1 << 40  # larger sizes are taken as invalid


def parse_bdat(argument: str) -> tuple[int, bool] | None:
    """(chunk size, LAST) of a BDAT argument, or None when it is invalid.

    RFC 3030 2: "BDAT" SP chunk-size [SP end-marker], the size a string of
    digits and the end marker "LAST".
    """
    parts = argument.split()
    if not parts or len(parts) > 2:
        return None
    size_text = parts[0]
    last = len(parts) == 2 and parts[1].upper() == "LAST"
    if len(parts) == 2 and not last:
        return None
    # The length first: int() of thousands of digits is slow on purpose.
    if not size_text.isascii() or not size_text.isdigit() or len(size_text) > 15:
        return None
    size = int(size_text)
    if size > BDAT_MAX_CHUNK:
        return None
    return size, last


def queue_id(reply_text: str) -> str | None:
    """The MTA's queue identifier in a reply to the end of data, if any."""
    for pattern in _QUEUE_ID_PATTERNS:
        m = pattern.search(reply_text)
        if m is not None:
            return m.group(1)
    return None


def decoded_words(value: str) -> str:
    """A header value with its RFC 2047 encoded words decoded.

    ``=?charset?B?...?=`` and ``?Q?`` words become the text they encode,
    by the standard library's reading of them; the rest is kept as it is.
    A charset Python does not know, or whose codec fails on the bytes (the
    ``idna`` codec raises where others replace), is read as ASCII, and
    bytes that do not decode become U+FFFD, as a mail client would show
    them; so do the lone surrogates some codecs make. Control characters
    come through: every writer escapes them (``analysis.escape``). Only
    the first MAX_DECODED characters are decoded: the standard library
    takes time growing with the square of the number of words, and a 64 KB
    Subject of them took a tenth of a second.
    """
    if "=?" not in value:
        return value
    head, tail = value[:MAX_DECODED], value[MAX_DECODED:]
    # Only the runs of encoded words go to the standard library: it hands
    # the text around them back as bytes in its own encoding, which turns a
    # "\\u000d" the peer wrote into a CR (found in review), and as ASCII
    # would have lost every other character (Grüße, found in review).
    text = []
    last = 0
    for run in _WORD_RUN.finditer(head):
        text.append(head[last : run.start()])
        text.append(_decoded_run(run.group()))
        last = run.end()
    text.append(head[last:])
    # Some codecs decode to lone surrogates (UTF-7's "+2AA-", and
    # unicode_escape's "\\ud800"), which no UTF-8 writer takes: found in
    # review, one such Subject ended read_captures and the Parquet output
    # with a traceback, and made the JSON Lines table unloadable.
    return _SURROGATE.sub("\ufffd", "".join(text)) + tail


def _decoded_run(run: str) -> str:
    """Encoded words separated by white space (RFC 2047 6.2 drops it),
    decoded; kept as sent where the standard library cannot read them."""
    from email.errors import HeaderParseError
    from email.header import decode_header

    try:
        parts = decode_header(run)
    except (ValueError, LookupError, HeaderParseError):
        # binascii.Error is a ValueError; a base64 word of a length no
        # padding mends (=?utf-8?B?a?=) raises HeaderParseError, which
        # killed the whole run (found in review).
        return run
    text = []
    for chunk, charset in parts:
        if isinstance(chunk, str):
            text.append(chunk)
            continue
        try:
            text.append(chunk.decode(charset or "ascii", errors="replace"))
        except (LookupError, ValueError):
            # An unknown charset; or one whose name holds a NUL, which
            # the codec registry refuses with a ValueError (found in
            # review: it ended the whole run).
            text.append(chunk.decode("ascii", errors="replace"))
    return "".join(text)


# An encoded word (RFC 2047 2), as the standard library finds one, and a
# run of them with only white space between.
_WORD = r"=\?[^?]*?\?[qQbB]\?.*?\?="
_WORD_RUN = re.compile(rf"{_WORD}(?:[ \t\r\n]+{_WORD})*")
_SURROGATE = re.compile("[\ud800-\udfff]")


# See decoded_words: a Subject longer than this is rare and never all words.
MAX_DECODED = 2048


# What may be an address in a header: runs of hex digits, dots and colons
# (IPv4, IPv6, IPv4-mapped), each checked by ipaddress.
# Not inside a word: IPv6:2001:db8::5 (RFC 5321's literal) is 2001:db8::5.
_ADDRESS_LIKE = re.compile(r"(?<![0-9A-Za-z])[0-9A-Fa-f:.]{2,45}")
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def first_address(value: str) -> str | None:
    """The first IP address in a header value (X-Originating-IP holds one,
    often in brackets); None without one. IPv6 as written there, IPv4 in
    plain decimal: some writers pad it (10.000.000.004), which ipaddress
    refuses and arkime reads as 10.0.0.4."""
    for found in _ADDRESS_LIKE.finditer(value):
        # Dots around the run are no part of it (a sentence's full stop,
        # "...1.2.3.4"); nor is a port after an IPv4 address (1.2.3.4:5060).
        text = found[0].strip(".")
        head, colon, port = text.partition(":")
        if colon and "." in head and port.isdecimal() and ":" not in port:
            text = head
        if not any(c in _HEX_DIGITS for c in text):
            continue  # "::" alone is no writer's address ("n/a :: unknown")
        octets = text.split(".")
        if len(octets) == 4 and all(o.isdecimal() and len(o) <= 3 for o in octets):
            text = ".".join(str(int(o)) for o in octets)
        try:
            ipaddress.ip_address(text)
        except ValueError:
            continue
        return text
    return None


def parse_headers(block: bytes) -> tuple[tuple[str, str], ...]:
    """Parse an RFC 5322 header block into (lower-cased name, value) pairs.

    Folded lines are unfolded (RFC 5322 2.2.3); a line that is neither a
    header nor a continuation ends the block, as a mail client would treat it.
    """
    # Each header's value in pieces, joined once at the end: joined at each
    # folded line, a 64 KiB header of short folds was copied thousands of
    # times (found in review: 55 MB of such messages took 6.3 s, not 1.9).
    headers: list[tuple[str, list[str]]] = []
    # Decoded whole, as wire_text would each line: UTF-8 never uses the LF
    # byte inside a character, so no line decodes differently.
    for line in wire_text(block).split("\n"):
        line = line.rstrip("\r")
        if not line:
            break
        if line[0] in " \t":
            # RFC 5322 2.2.3: unfolding removes the CRLF and nothing else;
            # the value ends at no space, and so does each folded line
            # within it.
            if headers:
                headers[-1][1].append(line.rstrip())
            continue
        name, colon, value = line.partition(":")
        if not colon or not name or " " in name.strip():
            break
        headers.append((name.strip().lower(), [value.strip()]))
    return tuple(
        (name, parts[0] if len(parts) == 1 else "".join(parts).strip())
        for name, parts in headers
    )
