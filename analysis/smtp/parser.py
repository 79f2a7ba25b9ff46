"""The SMTP conversation state machine (RFC 5321, 2920, 3030, 3207, 4954).

One ``SmtpParser`` follows one TCP connection. It is fed the client's and the
server's bytes in capture order and returns typed events. Two cursors move
independently: the client side (commands, message content, AUTH answers) and
the server side (replies), joined by a queue of commands waiting for a reply,
which is what makes pipelining (RFC 2920) work.

Some client bytes cannot be understood before the server has answered: what
follows DATA is a message only if the reply was 354; what follows STARTTLS is
TLS only if the reply was 220. After such a *blocking* command the parser
holds the client's bytes until the reply arrives and then replays them in the
mode the reply chose. When the server is silent (a capture of one side only)
nothing is held and the hopeful outcome is assumed.

All transitions driven by replies are in ``_AFTER_REPLY``; anything the table
does not know leaves the client in command mode.
"""

from __future__ import annotations

import enum
import re
from array import array
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from analysis.smtp import auth, sniff
from analysis.smtp.events import (
    AnomalySeen,
    AuthResponseSeen,
    AuthUserSeen,
    CommandSeen,
    GreetingSeen,
    MessageEnded,
    MessageStarted,
    Reply,
    ReplySeen,
    SmtpEvent,
    TlsAbandoned,
    TlsBytesSeen,
    TlsStarted,
)
from analysis.smtp.framing import ChunkHeaders, DataBody
from analysis.smtp.syntax import (
    KNOWN_VERBS,
    REPLY_CODES,
    enhanced_code,
    parse_bdat,
    parse_reply_line,
    show_bytes,
    split_command,
    wire_text,
)
from analysis.tls.hello import V2_OPENING, starts_v2_client_hello

# RFC 5321 4.5.3.1.4 / 4.5.3.1.5: command and reply lines are at most 512
# octets with their CRLF. Longer lines are flagged; past MAX_LINE they are
# also cut, so that memory stays bounded whatever the peer sends.
RFC_LINE_LIMIT = 512
MAX_LINE = 16 * 1024
MAX_REPLY_LINES = 256
MAX_HELD_BYTES = 256 * 1024  # client bytes held while a reply is awaited
# Runs of held client bytes that keep their own capture time (_Held), 16
# bytes each: past it a segment joins the last run, whose time it takes.
MAX_HELD_RUNS = 16 * 1024
MAX_PENDING = 65536  # commands waiting for a reply (bounds a hostile pipeline)
MAX_ANOMALIES_PER_KIND = 20

# SmtpParser._auth_expect once a LOGIN exchange is past its username (the
# first answer, or the initial response): a "Username:" challenge after it
# asks for no username (found in review: a server asking twice, or one
# forged segment, had the password shown as auth_user and left unhidden).
_SPENT: Final = "spent"

# What SmtpParser._pending is until a command waits for its reply: an
# empty deque allocates a block of 64 entries (about 0.7 KB), and a port
# scan or SYN flood opens many connections that never send one. maxlen=0
# makes it refuse to hold anything, should an append bypass _expect.
_NOTHING_PENDING: deque[_Pending] = deque(maxlen=0)

_TLS_HANDSHAKE = 0x16  # TLS record content type handshake (RFC 8446 5.1)
# change_cipher_spec, alert, handshake, application_data (RFC 8446 5.1)
_TLS_CONTENT_TYPES = frozenset({0x14, 0x15, 0x16, 0x17})
# The longest TLS record (RFC 5246 6.2.3, a TLSCiphertext): a length past it
# is no record's.
_TLS_RECORD_MAX = 2**14 + 2048

# Builds an event NamedTuple without its Python-level __new__, about half
# the cost, for the events made per segment or per line; every field must
# be given, defaults included.
_new = tuple.__new__
_CR = 0x0D


class ClientMode(enum.Enum):
    COMMAND = "command"
    DATA_BODY = "data_body"  # after 354, until CRLF "." CRLF
    BDAT_CHUNK = "bdat_chunk"  # a counted chunk (RFC 3030 2)
    AUTH_ANSWER = "auth_answer"  # the next line answers a 334 challenge
    REFUSED_BODY = "refused_body"  # a body sent although DATA was refused
    TLS = "tls"
    OTHER = "other"  # another protocol on an SMTP port: nothing is parsed
    TLS_RECORD = "tls_record"  # TLS where a command was due, skipped by length


# Python 3.11 reads an Enum member through EnumType.__getattr__, a few
# hundred nanoseconds a read, and the mode is looked at several times for
# every segment: the code below names the modes by these globals.
_COMMAND: Final = ClientMode.COMMAND
_DATA_BODY: Final = ClientMode.DATA_BODY
_BDAT_CHUNK: Final = ClientMode.BDAT_CHUNK
_AUTH_ANSWER: Final = ClientMode.AUTH_ANSWER
_REFUSED_BODY: Final = ClientMode.REFUSED_BODY
_TLS: Final = ClientMode.TLS
_OTHER: Final = ClientMode.OTHER
_TLS_RECORD: Final = ClientMode.TLS_RECORD


# (what the reply answers, reply class) -> client mode afterwards.
_AFTER_REPLY: dict[tuple[str, int], ClientMode] = {
    ("DATA", 3): _DATA_BODY,
    ("STARTTLS", 2): _TLS,
    ("AUTH", 3): _AUTH_ANSWER,
}
_BLOCKING = frozenset({"DATA", "STARTTLS", "AUTH"})
_GREETING_VERBS = frozenset({"EHLO", "HELO", "LHLO"})
# Commands after which a half-sent BDAT message no longer exists (RFC 3030
# 2, RFC 5321 4.1.1.5), and whose acceptance opens a transaction afresh
# (4.1.1.2, 4.1.4); the session builder drops such a message alike.
TRANSACTION_RESETS = _GREETING_VERBS | {"RSET", "MAIL"}
# How many withheld secrets are looked for in the replies that follow (found
# in review: nine pipelined NOOPs with a blob each, and the first one's echo
# came after it had been let go at eight).
_SECRETS_KEPT = 32
# A reply that echoes a secret cut short (sendmail shortens what it echoes)
# still shows its start: a run that begins with this many of its characters
# is hidden too.
_SECRET_START = 8
# Commands whose argument is "mechanism [initial-response]": AUTH (RFC 4954
# 4) and Exchange's X-EXPS, "similar to AUTH" (Microsoft KB 812455), whose
# GSSAPI or NTLM response holds what a password can be guessed from.
_AUTH_VERBS = frozenset({"AUTH", "X-EXPS"})
# Commands whose argument is free text nothing reads (RFC 5321 4.1.1.8,
# 4.1.1.9), and those that take none (4.1.1.4, 4.1.1.5, 4.1.1.10, RFC 3207
# 4, and TURN of RFC 821 4.1.1), after which what a client sends is no name
# nor address: what could be SASL data there is hidden.
_FREE_TEXT_VERBS = frozenset(
    {"HELP", "NOOP", "DATA", "RSET", "QUIT", "STARTTLS", "TURN"}
)
# Commands whose argument is a name (RFC 5321 4.1.1.6, 4.1.1.7), the users
# and lists a client probes for: kept as names are, but hidden when the
# whole of it is one base64 word.
_NAME_VERBS = frozenset({"VRFY", "EXPN"})
# "AUTH" as a word of its own inside another command's argument, and the
# white space after it: an AUTH command run into another line, by a bare
# CR ("EHLO c.example\rAUTH PLAIN ...", which a server may read as two
# commands) or a line end lost, or appended to MAIL (found in review).
# Where a line end was lost, or a NUL stands for it, "AUTH" follows the
# other line's last character ("EHLO c.example\0AUTH PLAIN ...", found in
# review): there it must be followed by a registered mechanism that takes
# an initial response, and one: prose ends words in "auth" too ("Subject:
# OAuth token refresh failed", "preauth check done", found in review, hid
# "refresh failed" and "done"). "AUTH=" (RFC 4954 5, MAIL's parameter) is
# no such word.
_EMBEDDED_AUTH = re.compile(
    r"(?<!\S)AUTH\s+|AUTH\s+(?=(?:PLAIN|LOGIN|XOAUTH2?|OAUTHBEARER|NTLM|GSSAPI"
    r"|EXTERNAL|ANONYMOUS|DIGEST-MD5|SCRAM-SHA-[0-9]+(?:-PLUS)?)\s+\S)",
    re.ASCII | re.IGNORECASE,
)
# Commands a 354 that answers a later DATA may pass over, and how many at
# most (SmtpParser._skipped_before_data).
_PASSED_OVER = (KNOWN_VERBS - _BLOCKING) - {"BDAT", "XEXCH50"}  # 354 too
_REALIGN_SPAN = 1024
# RFC 2920 3.1: commands that can only be last in a pipelined group.
_GROUP_ENDERS = (
    _GREETING_VERBS | {"DATA", "VRFY", "EXPN", "TURN", "QUIT", "NOOP"} | _BLOCKING
)


def without_credentials(sent: bytes) -> bytes:
    """Client bytes for an anomaly's detail, with whatever a command row
    would hide of them hidden (``redacted``), line by line: AUTH payloads,
    blobs where a name belongs, base64 lines, and the one-word lines that
    follow an AUTH (a LOGIN username and password)."""
    shown = []
    after_auth = False
    for line in sent.splitlines(keepends=True):
        body = line.rstrip(b"\r\n")
        ending = line[len(body) :]
        text = wire_text(body)
        verb, argument, known = split_command(text)
        one_word = after_auth and len(text.split()) == 1
        if not known and (one_word or auth.looks_like_sasl_data(text)):
            # As the parser takes such a line (SASL data): the one after
            # it may be SASL data too.
            shown.append(auth.REDACTED.encode() + ending)
            continue
        shown_verb, argument_shown, _ = redacted(verb, argument, known)
        if (shown_verb, argument_shown) != (verb, argument):
            body = " ".join(filter(None, (shown_verb, argument_shown))).encode()
        shown.append(body + ending)
        after_auth = verb == "AUTH"
    return b"".join(shown)


def redacted(verb: str, argument: str, known: bool) -> tuple[str, str, list[str]]:
    """What a command row shows of a client's ``verb`` and ``argument``
    (``split_command``'s), and the secrets it hid, for the replies that
    may echo them.

    AUTH (and X-EXPS) keeps its mechanism only; other known commands keep
    their argument but what ``_known_argument`` hides. A mangled AUTH's
    initial response ("\\0AUTH PLAIN ..."), which no look tells from a
    word, is hidden whole. Other unknown commands keep all but the runs
    that could be SASL data, and what ``_known_argument`` hides wherever
    it stands.
    """
    hidden: list[str] = []
    if verb in _AUTH_VERBS:
        shown = auth.redact_auth_argument(argument)
        return verb, shown, _words_hidden(argument, shown)
    if known:
        return verb, _known_argument(verb, argument, hidden), hidden
    upper = verb.upper()
    if upper == "PASS" and argument:
        # POP3's PASS (RFC 1939 7), sent to an SMTP port by a client set up
        # wrong or a scanner: the argument is a password, whatever it looks
        # like (found in review: "PASS hunter2" was shown, and "PASS
        # Tr0ub4dor&3" as "[redacted]&3").
        return verb, auth.REDACTED, [argument.strip()]
    login = argument.split(None, 2)
    if len(login) == 3 and login[0].upper() == "LOGIN":
        # IMAP's "tag LOGIN user password" (RFC 9051 6.2.3), likewise: all
        # after the user is the password.
        shown = f"{login[0]} {auth.hide_secrets(login[1], hidden)} {auth.REDACTED}"
        return auth.hide_secrets(verb, hidden), shown, [*hidden, login[2].strip()]
    if upper == "LOGIN" and len(login) >= 2:
        # The same without a tag (found in review: "LOGIN nora S3cr3t!21"
        # showed "!21").
        shown = f"{auth.hide_secrets(login[0], hidden)} {auth.REDACTED}"
        return verb, shown, [*hidden, argument.split(None, 1)[1].strip()]
    shown_verb = auth.hide_secrets(verb, hidden)
    if "AUTH" in upper and argument:
        # "\\0AUTH PLAIN <b64>", "AUTH=LOGIN <b64>" and the like: an initial
        # response, perhaps of letters only; one word alone is taken for one.
        if len(argument.split()) > 1:
            shown = auth.redact_auth_argument(argument)
            return shown_verb, shown, hidden + _words_hidden(argument, shown)
        return shown_verb, auth.REDACTED, [*hidden, argument.strip()]
    shown = auth.hide_secrets(_embedded_auth(argument, hidden), hidden)
    return shown_verb, auth.hide_plain_responses(shown, hidden), hidden


def _known_argument(verb: str, argument: str, hidden: list[str]) -> str:
    """What a command row shows of the argument of a known ``verb`` other
    than AUTH; what it hides is added to ``hidden``.

    No password belongs in any of them, but a client confused or careless
    puts one there (found in review). Wherever it stands, a PLAIN response
    (``auth.hide_plain_responses``) and what follows "AUTH mechanism"
    (``_embedded_auth``) are hidden. Where a name or an address belongs
    (EHLO, MAIL, RCPT ...) nothing else is: a name that merely looks like
    base64 is kept, for bots use them and Windows clients are called
    DESKTOP-7G3K2LM, which ``auth.hide_secrets`` would hide, and MAIL's
    AUTH=<mailbox> (RFC 4954 5) is an address. Where free text belongs, or
    nothing, what could be SASL data is hidden too: the whole of it when
    it is one base64 word (a client that answered a challenge it never
    got), else its runs that look like a secret. VRFY and EXPN hide the
    one word alone: ``auth.hide_secrets`` would hide the names of a
    harvest, as john_smith-2. The runs of a BDAT argument that does not
    parse are hidden as free text's.
    """
    if not argument:
        return argument
    shown = _embedded_auth(argument, hidden)
    free = verb in _FREE_TEXT_VERBS
    if (free or verb in _NAME_VERBS) and auth.looks_like_sasl_data(shown):
        hidden.append(shown.strip())
        return auth.REDACTED
    if free or (verb == "BDAT" and parse_bdat(argument) is None):
        shown = auth.hide_secrets(shown, hidden)
    return auth.hide_plain_responses(shown, hidden)


def _embedded_auth(argument: str, hidden: list[str]) -> str:
    """``argument`` with "AUTH mechanism initial-response" inside it shown
    as an AUTH command's argument is (``auth.redact_auth_argument``): the
    mechanism kept, all after it hidden, and added to ``hidden``. Any
    response will do, a LOGIN password of capitals too (see
    _EMBEDDED_AUTH)."""
    if "AUTH" not in argument.upper():
        return argument  # most arguments: one test spares the search
    found = _EMBEDDED_AUTH.search(argument)
    if found is None:
        return argument
    rest = argument[found.end() :]
    shown = auth.redact_auth_argument(rest)
    hidden += _words_hidden(rest, shown)
    return argument[: found.end()] + shown


def without_sent(reply: Reply, sent: str) -> Reply:
    """``reply`` without the words of ``sent``, a client line it shows to
    have been SASL data (a 535 to a line of an unknown verb), which the
    parser could not withhold when it read it: its words are looked for
    as withheld secrets are (``_hide_secret``), those under four
    characters only where they stand alone."""
    secrets = [_lowered(word) for word in sent.split() if word != auth.REDACTED]
    return _scrubbed(reply, secrets)


def _scrubbed(reply: Reply, secrets: Iterable[str]) -> Reply:
    """``reply`` without ``secrets`` (lowered, ``_lowered``), withheld from
    the client: servers echo a line they did not understand, some in upper
    case (aiosmtpd's ``500 Error: command "..." not recognized``: found in
    a trial), from which the secret comes back by trying the cases."""
    shown = tuple(_without_secrets(line, secrets) for line in reply.lines)
    return reply._replace(lines=shown) if shown != reply.lines else reply


def _without_secrets(line: str, secrets: Iterable[str]) -> str:
    """``line`` with each of ``secrets`` (lowered, ``_lowered``) hidden
    wherever it appears (``_hide_secret``). A substring test per secret
    first (found in review: a regular expression per secret, compiled
    again for every reply of 20 sessions of 32 long secrets each, took
    minutes)."""
    lowered = _lowered(line)
    for secret in secrets:
        if secret[:_SECRET_START] in lowered:
            line = _hide_secret(line, lowered, secret)
            lowered = _lowered(line)
    return line


def _hide_secret(line: str, lowered: str, secret: str) -> str:
    """``line`` (``lowered``: the same in lower case, ``_lowered``) with
    ``secret`` (lowered so) hidden wherever it appears, in any case.
    A long secret is also found by its first _SECRET_START characters,
    with the run of base64 characters that goes on from there (an echo cut
    short, as sendmail shortens what it echoes). No regular expression:
    building one per secret cost more than all the scrubbing (0.3 ms each).
    """
    long = len(secret) > _SECRET_START
    probe = secret[:_SECRET_START] if long else secret
    pieces: list[str] = []
    pos = 0
    while (found := lowered.find(probe, pos)) >= 0:
        end = found + len(probe)
        if len(secret) < _SHORT_SECRET and not _stands_alone(lowered, found, end):
            # A password of a few characters, inside a word: not its echo.
            pieces += (line[pos:end],)
            pos = end
            continue
        # As far as the echo follows the secret (a decoded password cut
        # short keeps no base64 shape), then over the base64 that goes on.
        while (
            end < len(lowered)
            and end - found < len(secret)
            and lowered[end] == secret[end - found]
        ):
            end += 1
        if long:
            while end < len(lowered) and lowered[end] in _BASE64_LOWER:
                end += 1
        elif lowered.startswith("=", end):
            # The padding of base64 withheld without it (_withhold).
            end = len(lowered) - len(lowered[end:].lstrip("="))
        pieces += (line[pos:found], auth.REDACTED)
        pos = end
    if not pieces:
        return line
    pieces.append(line[pos:])
    return "".join(pieces)


_BASE64_LOWER = frozenset("abcdefghijklmnopqrstuvwxyz0123456789+/=_-")
# What a client sends in an AUTH exchange that hides nothing: an empty
# response and a cancel (RFC 4954 4).
_NO_SECRETS = frozenset({"", "=", "*"})
# Secrets shorter than this (only decoded passwords are) are hidden where
# they stand alone, not inside a word, which they would cut holes in.
_SHORT_SECRET = 4


def _stands_alone(text: str, start: int, end: int) -> bool:
    """Whether ``text[start:end]`` is a word of its own: no letter or digit
    on either side (but the "\\0" a server may show a PLAIN response's NUL
    as), and not within the enhanced status code the line begins with."""
    status = _ENHANCED_AT_START.match(text)
    if status is not None and start < status.end():
        return False
    before = text[start - 1] if start else " "
    after = text[end] if end < len(text) else " "
    escaped_nul = text[max(start - 2, 0) : start] == "\\0"
    return not ((before.isalnum() and not escaped_nul) or after.isalnum())


_ENHANCED_AT_START = re.compile(r"[245]\.\d{1,3}\.\d{1,3}\b")


def _lowered(text: str) -> str:
    """``text`` in lower case, letter for letter: str.lower where it keeps
    the length (a password "Pässwörd" echoed "PÄSSWÖRD" is found, found in
    review), else ASCII letters alone (see _ASCII_LOWER)."""
    low = text.lower()
    return low if len(low) == len(text) else text.translate(_ASCII_LOWER)


# Lower case for ASCII letters alone: str.lower may change a string's length
# ("İ" becomes two characters), and positions found in the lowered text must
# be those of the reply itself.
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _words_hidden(argument: str, shown: str) -> list[str]:
    """The words of ``argument`` that ``shown`` no longer holds."""
    kept = set(shown.split())
    return [word for word in argument.split() if word not in kept]


def _opens_tls(data: bytes) -> bool:
    """Whether a client's bytes where a command was due begin a TLS
    handshake: a handshake record (RFC 8446 5.1), or a whole SSL 2.0
    CLIENT-HELLO opening (RFC 5246 E.2). No command starts with either."""
    return data[:2] == b"\x16\x03" or (
        len(data) >= V2_OPENING and starts_v2_client_hello(data)
    )


def _tls_record_size(data: bytes) -> int:
    """The size of the TLS record ``data`` begins with, header included: a
    record of TLS (RFC 8446 5.1: a content type, version 3.x, a length) or
    an SSL 2.0 CLIENT-HELLO (RFC 5246 E.2, two bytes of length). 0 when it
    begins with none, -1 when it may but its opening is not all there yet.
    No command line starts with either."""
    first = data[0]
    if first in _TLS_CONTENT_TYPES:
        if len(data) < 5:
            return -1 if data[1:2] in (b"", b"\x03") else 0
        length = data[3] << 8 | data[4]
        return 5 + length if data[1] == 3 and length <= _TLS_RECORD_MAX else 0
    if first & 0x80 and starts_v2_client_hello(data[:V2_OPENING]):
        if len(data) < V2_OPENING:
            return -1
        return 2 + ((first & 0x7F) << 8 | data[1])
    return 0


# Record types a connection caught inside TLS may begin with (RFC 8446 5.1).
_MID_TLS_TYPES = frozenset({0x14, 0x15, 0x17})


def _mid_tls_record(data: bytes) -> bool:
    """Whether ``data`` begins with the whole header of a TLS record past
    the hellos (RFC 8446 5.1): ChangeCipherSpec, alert or application data,
    version 3.x, a length a record may have. No SMTP line starts with these
    control bytes. A handshake record is left out: it may be a ClientHello,
    which the caller reads as the start of TLS."""
    if len(data) < 5 or data[0] not in _MID_TLS_TYPES or data[2] > 4:
        return False
    return _tls_record_size(data) > 5  # version 3.x, 0 < length <= the most


# A line's first word, for the verbs looked for inside a skipped TLS record
# (SmtpParser._command_in_record): as long as the longest verb, plus one so
# that a longer word is no verb.
_VERB_BYTES = frozenset(verb.encode() for verb in KNOWN_VERBS)
_VERB_STARTS = frozenset(
    verb[:size] for verb in _VERB_BYTES for size in range(1, len(verb) + 1)
)
_VERB_LOOK = max(map(len, KNOWN_VERBS)) + 1
# White space before the verb is skipped, as split_command (and servers)
# skip it (found in review: " RCPT TO:..." lines hid a harvest).
_FIRST_WORD = re.compile(rb"[ \t\r\x0b\x0c]*([^ \t\r\n\x0b\x0c]{0,%d})" % _VERB_LOOK)


def _starts_like_command(data: bytes) -> bool:
    """Whether a line after a gap, or the bytes after a 220 to STARTTLS,
    begin with a known verb (RFC 5321 4.1.1)."""
    # Up to the line end too: a verb without argument (QUIT, RSET) has
    # no space after it (found in review: "QUIT\r\n" after the 220 was
    # not taken for clear text).
    verb = data.split(b"\n", 1)[0].split(b" ", 1)[0].rstrip(b"\r").upper()
    return verb in _VERB_BYTES


@dataclass(slots=True)
class _Pending:
    index: int  # the command row the reply belongs to
    answers: str  # verb, "." for end of data, "AUTH" inside an exchange
    ts: int
    assumed: bool = False  # the parser already acted as if it were positive
    sasl: bool = False  # a line answering a 334 challenge, not the AUTH itself
    ends_message: bool = False  # the end of data, or a valid BDAT LAST
    # In LMTP, which of the message's replies this is (see ReplySeen).
    recipient: tuple[int, int] | None = None


class _Held:
    """Client bytes not parsed yet, oldest first, with the capture times the
    events they give must carry: those held behind a blocking command, then
    (during a replay) those still to replay.

    Each segment once was a tuple of its own, about 150 bytes on top of its
    payload: 250 KB held in one-byte segments took 30 MB. The bytes now go
    into one bytearray, and each *run* of them has a length and a time in
    two arrays (16 bytes). A segment with no LF joins the run before it if
    that run has no LF either, and the run takes the new segment's time:
    every event a line gives (a command, an AUTH answer, the end of a
    message, the first line of a refused body) is made when its LF is read
    and carries the time of the segment that brought it, and in a run only
    the last segment may hold an LF. So rows are those of the segments
    replayed one by one (the time of the LF's segment, as before), however
    finely the client cut them.

    Three events are not made at an LF; if one falls inside a run it takes
    the time of the run's last segment, later than that of the segment it
    fell in (the bytes, rows and order of events are the same): a line cut
    at MAX_LINE (line_truncated and the cut command, as if the line came
    whole), the end of a BDAT LAST chunk (the message's end) and TLS bytes
    (fewer TlsBytesSeen). Each needs held bytes sent in segments with no LF
    that are not lines, from a client that did not wait for its reply.
    Past MAX_HELD_RUNS runs behind one reply, a segment joins the last run
    whatever it holds, and its lines take the time of the run's last
    segment too: this bounds the times kept (16 bytes a run) at 256 KiB
    beside the 256 KiB of MAX_HELD_BYTES.

    A blocked line's segment is held from past the line, not copied (a
    client may pipeline a hundred thousand blocking lines in one): such
    entries, (time, bytes, where the held part starts), go before all else,
    the last one first, as a replay puts the rest of what it parsed back.
    """

    __slots__ = (
        "_data",
        "_first",
        "_lengths",
        "_off",
        "_open",
        "_rests",
        "_times",
        "size",
    )

    def __init__(self) -> None:
        self._rests: list[tuple[int, bytes, int]] = []  # the last is first out
        self._data = bytearray()
        self._lengths = array("q")
        self._times = array("q")
        self._first = 0  # runs already taken off the front
        self._off = 0  # their bytes, at the start of _data
        self._open = False  # the last run has no LF: a segment may join it
        self.size = 0  # bytes held in all

    def __len__(self) -> int:
        return len(self._rests) + len(self._lengths) - self._first

    def append(self, ts: int, data: bytes) -> None:
        """A segment, after all else."""
        runs = len(self._lengths) - self._first
        lf = b"\n" in data
        if runs and (self._open or runs >= MAX_HELD_RUNS):
            self._lengths[-1] += len(data)
            self._times[-1] = ts
            self._open = self._open and not lf
        else:
            self._lengths.append(len(data))
            self._times.append(ts)
            self._open = not lf
        self._data += data
        self.size += len(data)

    def appendleft(self, ts: int, buf: bytes, start: int) -> None:
        """What follows a blocked line, from ``start``, before all else."""
        self._rests.append((ts, buf, start))
        self.size += len(buf) - start

    def last_ts(self) -> int:
        if len(self._lengths) > self._first:
            return self._times[-1]
        return self._rests[0][0]

    def popleft(self) -> tuple[int, bytes, int]:
        if self._rests:
            entry = self._rests.pop()
            self.size -= len(entry[1]) - entry[2]
            return entry
        first = self._first
        size = self._lengths[first]
        ts = self._times[first]
        off = self._off
        data = bytes(self._data[off : off + size])
        self.size -= size
        if first + 1 == len(self._lengths):
            self._clear()
        else:
            self._first = first + 1
            self._off = off + size
            if self._off > 4096 and self._off * 2 > len(self._data):
                # What was taken off goes, once it is half of what is kept.
                del self._data[: self._off]
                del self._lengths[: self._first]
                del self._times[: self._first]
                self._off = self._first = 0
        return ts, data, 0

    def take_all(self) -> bytes:
        """Everything held, in order, which is then dropped."""
        parts = [buf[start:] for _, buf, start in reversed(self._rests)]
        parts.append(bytes(self._data[self._off :]))
        self._rests.clear()
        self._clear()
        self.size = 0
        return b"".join(parts)

    def _clear(self) -> None:
        self._data = bytearray()
        self._lengths = array("q")
        self._times = array("q")
        self._first = self._off = 0
        self._open = False


class SmtpParser:
    """Sans-IO parser of one SMTP connection. Never raises on wire input."""

    # One parser per open connection: without an instance dict each takes
    # about a third of the memory, which counts under a SYN flood.
    __slots__ = (
        "_anomaly_counts",
        "_auth_expect",
        "_auth_index",
        "_auth_mechanism",
        "_auth_open",
        "_auth_recent",
        "_body",
        "_caught",
        "_cbuf",
        "_chunk_complete",
        "_chunk_headers",
        "_chunk_last",
        "_chunk_left",
        "_chunk_total",
        "_client_discard",
        "_client_resync",
        "_client_spoke_first",
        "_command_index",
        "_data_refused",
        "_echoed",
        "_echoed_until",
        "_greeting_seen",
        "_held",
        "_holding",
        "_implicit_tls_port",
        "_last_data_index",
        "_let_go",
        "_lf_only_client",
        "_lf_only_server",
        "_lmtp",
        "_mode",
        "_pending",
        "_rcpts_ok",
        "_record_at_line",
        "_record_left",
        "_refused_lines",
        "_replaying",
        "_reply_code",
        "_reply_lines",
        "_sbuf",
        "_secrets",
        "_server_discard",
        "_server_resync",
        "_server_spoke",
        "_server_tls",
        "_server_tls_like",
        "_starttls_refused",
        "_tls_decided",
        "_tls_expected",
        "_tls_waits",
        "tls_client_bytes",
        "tls_server_bytes",
        "tls_started_ts",
    )

    def __init__(
        self,
        *,
        implicit_tls: bool = False,
        after_starttls: bool = False,
        first_command_index: int = 0,
        caught: bool = False,
    ) -> None:
        """``after_starttls`` starts a parser for the SMTP inside a decrypted
        STARTTLS session: no greeting comes (RFC 3207 4.2). Its command
        indexes start at ``first_command_index``. ``caught``: the capture
        began after the connection's start, so its first bytes may be TLS
        whose handshake was missed, and its first reply may answer a
        command sent before the capture."""
        self._implicit_tls_port = implicit_tls
        self._caught = caught
        self._mode: ClientMode = _COMMAND
        self._server_tls = False
        # A caught connection's first bytes are looked at on every port:
        # they may be TLS records, whatever the port.
        self._tls_decided = not implicit_tls and not caught
        # A caught connection's client sent what looks like TLS records
        # where SMTP is due: its bytes are held until the server's first
        # bytes say which it is (_decide_tls).
        self._tls_waits = False
        # A caught connection's server began with what looks like a TLS
        # record: the client's first bytes say whether it was TLS.
        self._server_tls_like = False
        self._cbuf = b""
        self._sbuf = b""
        self._client_discard = False  # skip to the next LF (over-long line)
        self._server_discard = False
        # After a gap the first line may be the tail of a lost one: it is
        # kept only if it looks like the start of a command or reply.
        self._client_resync = False
        self._server_resync = False
        self._pending = _NOTHING_PENDING  # see _expect
        # Commands let go past MAX_PENDING whose replies have not come yet:
        # replies come in the order of the commands (RFC 2920 3.1), so the
        # next ones answer these, not those still in _pending.
        self._let_go = 0
        # Client bytes not parsed yet (see _Held). Made on first use, as
        # _pending.
        self._held: _Held | None = None
        self._holding = False  # a blocking command awaits its reply
        self._replaying = False  # _replay's loop is running
        self._reply_lines: list[str] = []
        self._reply_code = 0
        self._greeting_seen = after_starttls
        self._server_spoke = after_starttls
        self._client_spoke_first = False
        self._command_index = first_command_index
        self._body: DataBody | None = None
        self._chunk_left = 0
        self._chunk_last = False
        self._chunk_headers: ChunkHeaders | None = None
        self._chunk_total = 0
        self._chunk_complete = True
        self._auth_index = -1
        self._auth_mechanism = ""
        # "user", "plain", "cram" or "" for the next answer; "spent" once a
        # username may have been sent, after which none is one (_SPENT).
        self._auth_expect = ""
        self._auth_open = False  # an AUTH exchange awaits its final reply
        self._auth_recent = False  # the last command line was AUTH
        self._last_data_index = -1
        # LMTP (RFC 2033): the server accepted LHLO (not merely the client
        # said it: an SMTP server refuses it and answers a message once).
        # Its server answers a message once for each RCPT it accepted,
        # counted in _rcpts_ok since the reply that opened or reset the
        # transaction.
        self._lmtp = False
        self._rcpts_ok = 0
        self._data_refused = False
        # Lines of a body sent after a refused DATA, each of which the
        # server reads as a command and answers (500 or 502), before the
        # commands sent after them.
        self._refused_lines = 0
        self._record_left = 0  # bytes of a skipped TLS record still to come
        self._record_at_line = False  # the record's bytes so far end a line
        # The last command was STARTTLS and the server refused it: a TLS
        # record may follow, from a client that goes ahead all the same.
        self._starttls_refused = False
        # What was last withheld from the client's lines: a server may echo
        # it in a reply (Sendmail: 500 5.5.1 Command unrecognized: "...").
        self._secrets: deque[str] | None = None  # in lower case
        # Decoded passwords too short to look for in every reply: looked
        # for up to the reply that answers the command they came with,
        # whose index is _echoed_until (see _withhold). Made on first use.
        self._echoed: list[str] | None = None
        self._echoed_until = -1
        self._lf_only_client = False
        self._lf_only_server = False
        self._tls_expected = False  # STARTTLS sent, no server to answer it
        self._anomaly_counts: dict[str, int] = {}
        self.tls_started_ts: int | None = None
        self.tls_client_bytes = 0
        self.tls_server_bytes = 0

    # ------------------------------------------------------------------
    # Public interface

    def oldest_pending(self) -> int | None:
        """The lowest command index a reply may still answer, or None when
        nothing waits. Past MAX_PENDING the oldest go unanswered for good
        (pending_overflow), so a caller may forget what it keeps for lower
        indices."""
        return min((pending.index for pending in self._pending), default=None)

    @property
    def in_tls(self) -> bool:
        return self._mode is _TLS

    @property
    def commands_seen(self) -> int:
        """The index the next command line would get."""
        return self._command_index

    def feed_client(self, data: bytes, ts: int) -> list[SmtpEvent]:
        out: list[SmtpEvent] = []
        if not data:
            return out
        mode = self._mode
        if (
            (mode is _DATA_BODY or mode is _TLS)
            and not self._holding
            and not self._cbuf
            and not self._tls_expected
            and self._tls_decided
        ):
            # Most client segments: message content, or TLS. All the rest of
            # this method and _client_input would do for them is the
            # early-talker note and the step for the mode, taken here.
            if not self._greeting_seen and not self._server_spoke:
                self._client_spoke_first = True
            if mode is _TLS:
                self.tls_client_bytes += len(data)
                out.append(_new(TlsBytesSeen, (ts, True, data, 0)))
                return out
            body = self._body
            assert body is not None  # in DATA_BODY mode there is one
            end = body.feed(data, 0)
            if end >= 0:  # the end-of-data line: then commands, perhaps
                self._body_ended(ts, out)
                if end < len(data):
                    self._client_input(data[end:], ts, out)
            return out
        if not self._tls_decided:
            self._decide_tls(data, ts, from_client=True, out=out)
        if self._tls_waits:
            self._hold(data, ts, out)  # for the server's first bytes
            return out
        mode = self._mode
        if mode is _OTHER or (
            # _other_protocol looks only at the opening bytes: the test that
            # it has nothing to do is made here, without a call, as it is
            # for every segment after them.
            mode is _COMMAND
            and self._command_index == 0
            and not self._server_spoke
            and self._other_protocol(data, ts, out, from_client=True)
        ):
            return out
        if self._holding:
            self._hold(data, ts, out)
            return out
        if not self._greeting_seen and not self._server_spoke:
            self._client_spoke_first = True
        if self._tls_expected and not self._cbuf and _opens_tls(data):
            # STARTTLS with no server in sight, then a ClientHello: the
            # hopeful outcome, as for DATA.
            self._tls_expected = False
            self._start_tls(ts, out, implicit=False)
            self._tls_decided = True  # by this ClientHello
        elif (
            self._mode is _COMMAND
            and self._command_index == 0
            and not self._cbuf
            and _opens_tls(data)
        ):
            # A TLS ClientHello where SMTP commands were due.
            self._anomaly(out, ts, "tls_on_plain_port", "client began TLS at once")
            self._start_tls(ts, out, implicit=True)
        self._client_input(data, ts, out)
        return out

    def feed_server(self, data: bytes, ts: int) -> list[SmtpEvent]:
        out: list[SmtpEvent] = []
        if not data:
            return out
        if not self._tls_decided:
            self._decide_tls(data, ts, from_client=False, out=out)
        mode = self._mode
        if mode is _OTHER or (
            mode is _COMMAND  # and the opening bytes, as in feed_client
            and self._command_index == 0
            and not self._server_spoke
            and self._other_protocol(data, ts, out, from_client=False)
        ):
            return out
        self._server_spoke = True
        if self._server_tls:
            self.tls_server_bytes += len(data)
            out.append(_new(TlsBytesSeen, (ts, False, data, 0)))
            return out
        self._server_input(data, ts, out)
        return out

    def client_gap(self, size: int, ts: int) -> list[SmtpEvent]:
        """Bytes the client sent that the capture never showed."""
        out: list[SmtpEvent] = []
        if self._holding:
            self._release_held(ts, out, hopeful=True)
        mode = self._mode
        if mode is _TLS:
            self._tls_decided = True  # what follows a gap starts anywhere
            self.tls_client_bytes += size
            out.append(TlsBytesSeen(ts, True, b"", size))
        elif mode is _DATA_BODY and self._body is not None:
            self._body.lost(size)
        elif mode is _TLS_RECORD and size < self._record_left:
            self._record_left -= size
        elif mode is _BDAT_CHUNK:
            # As a gap in a DATA body: the message goes on, incomplete.
            self._chunk_complete = False
            left = self._chunk_left
            if size < left:
                self._chunk_left -= size
            else:
                # The gap swallowed the rest of the chunk and perhaps some of
                # what followed it (more chunks, the LAST one, commands):
                # resume at the next line we can trust. A message short of
                # its LAST chunk stays open for a BDAT that goes on with it.
                if size > left:
                    self._anomaly(
                        out,
                        ts,
                        "message_incomplete",
                        f"a TCP gap took the last {left} bytes of a BDAT chunk "
                        f"and {size - left} bytes after it",
                    )
                self._chunk_left = 0
                self._end_chunk(ts, out)
                self._cbuf = b""
                self._client_resync = True
        else:
            if mode is _TLS_RECORD:  # the gap took the record's end
                self._mode = _COMMAND
                self._record_left = 0
            self._cbuf = b""
            self._client_resync = True
        return out

    def server_gap(self, size: int, ts: int) -> list[SmtpEvent]:
        """Bytes the server sent that the capture never showed."""
        out: list[SmtpEvent] = []
        self._server_spoke = True
        if self._server_tls:
            self._tls_decided = True  # what follows a gap starts anywhere
            self.tls_server_bytes += size
            out.append(TlsBytesSeen(ts, False, b"", size))
            return out
        self._sbuf = b""
        self._server_resync = True
        if self._reply_lines:
            self._reply_lines = []
        return out

    def close(self, ts: int) -> list[SmtpEvent]:
        """The connection ended: finish whatever was under way."""
        out: list[SmtpEvent] = []
        if self._holding:
            self._release_held(ts, out, hopeful=True)
        if self._cbuf and self._mode in (_COMMAND, _AUTH_ANSWER):
            rest = self._cbuf
            self._cbuf = b""
            # Its length only: the line may be an AUTH answer.
            self._anomaly(
                out, ts, "unterminated_line", f"{len(rest)} bytes without a line end"
            )
            self._client_line(rest, ts, out)
        if self._mode is _DATA_BODY and self._body is not None:
            self._body.complete = False
            self._finish_body(ts, out)
            self._anomaly(out, ts, "message_incomplete", "connection ended in DATA")
        elif self._mode is _BDAT_CHUNK:
            self._chunk_complete = False
            self._anomaly(out, ts, "message_incomplete", "connection ended in BDAT")
            self._finish_chunks(ts, out)
        if self._server_spoke and self._pending and not self.in_tls:
            verbs = ", ".join(
                "AUTH answer" if p.sasl else p.answers for p in list(self._pending)[:10]
            )
            self._anomaly(
                out, ts, "no_reply", f"{len(self._pending)} unanswered: {verbs}"
            )
        return out

    # ------------------------------------------------------------------
    # Client side

    def _client_input(
        self, data: bytes, ts: int, out: list[SmtpEvent], start: int = 0
    ) -> None:
        """Parse ``data`` from ``start`` on, after what ``_cbuf`` holds."""
        if self._cbuf:
            buf = self._cbuf + data[start:]
            pos = 0
        else:
            buf = data
            pos = start
        self._cbuf = b""
        size = len(buf)
        while pos < size:
            mode = self._mode
            if mode is _TLS:
                self.tls_client_bytes += size - pos
                out.append(TlsBytesSeen(ts, True, buf[pos:]))
                return
            if mode is _DATA_BODY:
                pos = self._body_input(buf, pos, ts, out)
                continue
            if mode is _BDAT_CHUNK:
                pos = self._chunk_input(buf, pos, ts, out)
                continue
            if mode is _TLS_RECORD:
                pos = self._record_input(buf, pos)
                continue
            if (
                mode is _COMMAND
                and (buf[pos] in _TLS_CONTENT_TYPES or buf[pos] & 0x80)
                and self._starttls_refused
                and not self._client_discard
                and not self._client_resync
            ):
                record = _tls_record_size(buf[pos : pos + 5])
                if record < 0:  # perhaps a record: wait for its header
                    self._cbuf = buf[pos:]
                    return
                if record:
                    self._tls_record(record, ts, out)
                    continue

            nl = buf.find(b"\n", pos)
            if nl < 0:
                self._partial_line(buf, pos, ts, out)
                return
            # The line without its CR, if it has one, in one slice.
            crlf = nl > pos and buf[nl - 1] == _CR
            line = buf[pos : nl - 1] if crlf else buf[pos:nl]
            pos = nl + 1
            if self._client_discard:
                self._client_discard = False
                continue
            if self._client_resync:
                self._client_resync = False
                if not _starts_like_command(line):
                    continue
            if not crlf and not self._lf_only_client:
                # Flagged once per direction: a client that does it, does it
                # on every line.
                self._lf_only_client = True
                self._anomaly(out, ts, "bare_lf", "client lines end with LF alone")
            if len(line) > MAX_LINE:
                # Cut as in _partial_line, though whole in one buffer: the
                # rows must not depend on how the line was segmented.
                self._anomaly(
                    out, ts, "line_truncated", f"client line over {MAX_LINE} bytes"
                )
                self._client_line(line[:MAX_LINE], ts, out, cut=True)
            else:
                self._client_line(line, ts, out)
            if self._holding:
                if pos < size:
                    self._hold_rest(buf, pos, ts)
                self._check_held(out)
                return

    def _tls_record(self, size: int, ts: int, out: list[SmtpEvent]) -> None:
        """A TLS record right after a refused STARTTLS (a client that sends
        its ClientHello all the same): it is no command, and is skipped by
        its length, after which commands are read again.

        Only there: elsewhere a record's header is only five bytes a client
        may send to hide what follows behind its length, which a server
        reads as lines all the same (found in review: a forged header hid
        the RCPTs of a harvest, and the server's refusals of them)."""
        self._anomaly(
            out,
            ts,
            "tls_not_agreed",
            f"client sent a TLS record of {size} bytes where a command was due",
        )
        self._mode = _TLS_RECORD
        self._record_left = size
        self._record_at_line = False

    def _record_input(self, buf: bytes, pos: int) -> int:
        end = pos + min(self._record_left, len(buf) - pos)
        command = self._command_in_record(buf, pos, end)
        if command is not None:
            # The server reads the record as lines, and this one as the
            # command it begins with: so is it read here, from there on.
            end = command
            self._record_left = end - pos
        self._record_at_line = end > pos and buf[end - 1] == 0x0A
        if not self._pending:
            # The server reads the record as lines of garbage and refuses
            # each (500), before any command sent after it. With commands
            # still waiting, their replies come first, and which 5xx is
            # whose could not be told: none is then taken for a line's.
            self._refused_lines += buf.count(b"\n", pos, end)
        self._record_left -= end - pos
        if not self._record_left:
            self._mode = _COMMAND
            if command is None and not self._record_at_line:
                # The record ends inside a line, which the server reads on
                # to its end as one of garbage: what follows up to there is
                # no command (found in review: "<record>XXXXDATA" gave a
                # DATA row), and is refused with the rest.
                self._client_discard = True
                if not self._pending:
                    self._refused_lines += 1
        return end

    def _command_in_record(self, buf: bytes, pos: int, end: int) -> int | None:
        """Where, in the skipped record's bytes ``buf[pos:end]``, a line
        begins with a command's verb, or may (its verb cut by the end of
        the segment); None when none does."""
        start = pos if self._record_at_line else buf.find(b"\n", pos, end) + 1
        while 0 < start < end or (start == pos < end and self._record_at_line):
            word = _FIRST_WORD.match(buf, start)
            assert word is not None  # it matches the empty word too
            verb = word.group(1)
            if (
                word.end() == len(buf)
                and len(verb) < _VERB_LOOK
                and (not verb or verb.upper() in _VERB_STARTS)
            ):
                return start  # the segment cut the word, or the space before it
            if verb.upper() in _VERB_BYTES:
                return start
            start = buf.find(b"\n", start, end) + 1
        return None

    def _partial_line(
        self, buf: bytes, pos: int, ts: int, out: list[SmtpEvent]
    ) -> None:
        rest = buf[pos:]
        if self._client_discard:
            # More of a line already cut: dropped as it comes, up to its LF
            # (found in review: the last 16,005 bytes of a 30 MB EHLO line
            # were kept, and became a command of their own at the close).
            return
        if len(rest) <= MAX_LINE:
            self._cbuf = rest
            return
        # A line longer than anyone should send: keep its start as the
        # command, drop the rest up to the next LF.
        self._anomaly(out, ts, "line_truncated", f"client line over {MAX_LINE} bytes")
        self._client_line(rest[:MAX_LINE], ts, out, cut=True)
        self._client_discard = True

    def _client_line(
        self, line: bytes, ts: int, out: list[SmtpEvent], *, cut: bool = False
    ) -> None:
        # A line cut at MAX_LINE was said to be over it (line_truncated):
        # its cut length would only mislead.
        too_long = len(line) + 2 > RFC_LINE_LIMIT and not cut
        if too_long and self._mode is not _REFUSED_BODY:
            self._anomaly(
                out, ts, "line_too_long", f"client line of {len(line) + 2} bytes"
            )
        mode = self._mode
        if mode is _AUTH_ANSWER:
            self._auth_answer(line, ts, out)
            return
        if mode is _REFUSED_BODY:
            self._refused_lines += 1
            if line == b".":
                self._mode = _COMMAND
            return
        if not line.strip():
            # Not a command (RFC 5321 4.1.1), but servers answer it (500),
            # so it takes its place in the queue like any unknown verb. Blank
            # as split_command sees it: any ASCII white space (a form feed
            # alone made a row without a verb and no anomaly: found in
            # review).
            self._anomaly(out, ts, "empty_line", "client sent an empty line")
        try:
            text = line.decode("ascii")  # wire_text, inline for ASCII lines
        except UnicodeDecodeError:
            text = wire_text(line)
        verb, argument, known = split_command(text)
        if self._auth_open and not self._server_spoke and not known:
            # One-sided capture inside AUTH: an unknown "verb" is an answer
            # (a password, perhaps) and must not become a command row.
            self._mode = _AUTH_ANSWER
            self._auth_answer(line, ts, out)
            return
        one_word = not known and self._auth_recent and len(text.split()) == 1
        if one_word or (not known and auth.looks_like_sasl_data(text)):
            # Base64 where a command was due: SASL data after an AUTH the
            # server refused, or in a capture that began inside an exchange
            # or lost its reply. It may be a password, so it is not kept;
            # after an AUTH, one word is taken for one whatever it looks
            # like (the base64 of a short password may be letters only).
            kind = "auth_data_after_auth" if self._auth_recent else "possible_sasl_data"
            self._anomaly(out, ts, kind, "base64 line withheld")
            # Withheld once its row has its index: a short secret within
            # is looked for up to the reply that answers that row.
            self._command("[redacted]", "", False, ts, out)
            self._withhold([text.strip()])
            return
        if self._data_refused and not known and text:
            # RFC 5321 3.3: after a refused DATA the client must not send
            # the message; one that does gets its body read as commands.
            self._data_refused = False
            self._mode = _REFUSED_BODY
            self._refused_lines += 1
            # The server reads the line as a command: it is shown as the
            # row of an unknown command would be (found in review: "X:
            # AUTH LOGIN TUFTVEVS" hid only what looks like base64).
            shown_verb, shown, secrets = redacted(verb, argument, False)
            if secrets:
                self._withhold_body_line(secrets)
            if (shown_verb, shown) != (verb, argument):
                text = " ".join(filter(None, (shown_verb, shown)))
            self._anomaly(out, ts, "data_body_after_refusal", text)
            if line == b".":
                self._mode = _COMMAND
            return
        self._data_refused = False
        self._command(verb, argument, known, ts, out)
        self._auth_recent = verb == "AUTH"

    def _command(
        self, verb: str, argument: str, known: bool, ts: int, out: list[SmtpEvent]
    ) -> None:
        if (
            self._server_spoke
            and not self._server_tls
            and (self._sbuf or self._reply_lines)  # else it has nothing to close
        ):
            self._close_unterminated_reply(ts, out)
        index = self._command_index
        self._command_index += 1
        self._starttls_refused = False  # a record may follow only STARTTLS
        pipelined = bool(self._pending) and self._server_spoke
        shown_verb, shown, secrets = redacted(verb, argument, known)
        if secrets:
            self._withhold(secrets)
        out.append(_new(CommandSeen, (ts, index, shown_verb, shown, pipelined, known)))
        if len(self._pending) >= MAX_PENDING:
            self._pending.popleft()
            self._let_go += 1
            self._anomaly(out, ts, "pending_overflow", "too many unanswered commands")
        self._expect(_Pending(index, verb if known else "?", ts))

        if verb in TRANSACTION_RESETS and self._chunk_headers is not None:
            # RFC 3030 2 and RFC 5321 4.1.1.5: the chunks sent so far belong
            # to a transaction this command abandons.
            self._chunk_headers = None
            self._chunk_last = False
        if verb == "DATA":
            self._last_data_index = index
            if self._chunk_headers is not None:
                # RFC 3030 2: DATA and BDAT cannot be used in one
                # transaction; the server must answer 503.
                self._anomaly(
                    out, ts, "data_after_bdat", "DATA while a BDAT message was open"
                )
        elif verb == "AUTH":
            self._auth_start(index, argument, ts, out)
        elif verb == "BDAT":
            self._bdat_start(argument, shown, ts, out)
        if verb in _BLOCKING and self._server_spoke:
            self._holding = True
        elif verb in _BLOCKING:
            self._assume_outcome(verb, ts, out)

    def _assume_outcome(self, verb: str, ts: int, out: list[SmtpEvent]) -> None:
        """No server in sight: carry on as if the reply were positive."""
        if self._pending:
            self._pending[-1].assumed = True
        if verb == "DATA":
            self._start_body(ts, out)
        elif verb == "AUTH" and self._auth_open:
            self._mode = _AUTH_ANSWER
        elif verb == "STARTTLS":
            self._tls_expected = True  # TLS if the client's next bytes are

    # Hold and replay ----------------------------------------------------

    def _hold(self, data: bytes, ts: int, out: list[SmtpEvent]) -> None:
        """Keep a segment that came while a blocking command awaits its reply."""
        if self._client_discard and not self._held:
            # The rest of a line cut at MAX_LINE (an AUTH of a megabyte,
            # say): dropped as it comes rather than held, or it alone would
            # pass MAX_HELD_BYTES and the reply, still to come, be taken
            # as lost.
            nl = data.find(b"\n")
            if nl < 0:
                return
            self._client_discard = False
            data = data[nl + 1 :]
            if not data:
                return
        self._held_queue().append(ts, data)
        self._check_held(out)

    def _hold_rest(self, buf: bytes, pos: int, ts: int) -> None:
        """A line blocked: the rest of its segment, from ``pos``, is held
        before any segment still queued, for it was sent before them."""
        self._held_queue().appendleft(ts, buf, pos)

    def _held_queue(self) -> _Held:
        if self._held is None:
            self._held = _Held()
        return self._held

    def _check_held(self, out: list[SmtpEvent]) -> None:
        """Past MAX_HELD_BYTES the reply is taken as lost.

        The time is the last segment's: the queue was within the limit
        before it came (every hold is checked), and a replay only takes
        bytes off the front, so it is the one that pushed the total over.
        """
        held = self._held
        if held is None or held.size <= MAX_HELD_BYTES or not held:
            return
        ts = held.last_ts()
        self._anomaly(out, ts, "reply_missing", "client went on without the reply")
        self._release_held(ts, out, hopeful=True)

    def _release_held(self, ts: int, out: list[SmtpEvent], *, hopeful: bool) -> None:
        self._holding = False
        self._tls_waits = False
        if hopeful and self._pending and not self._pending[-1].assumed:
            self._assume_outcome(self._pending[-1].answers, ts, out)
        self._replay(out)

    def _replay(self, out: list[SmtpEvent]) -> None:
        """Parse the queued segments, oldest first, until a line blocks.

        One loop does every replay: a release met while it runs (a reply
        taken as lost in a replayed segment) only clears _holding, and the
        loop goes on with the queue's front. So the stack stays flat
        whatever the client pipelines, and each held byte is queued once
        and taken off once, however many replies it waits through.
        """
        held = self._held
        if self._replaying or not held:
            return
        self._replaying = True
        try:
            while held and not self._holding:
                ts, data, start = held.popleft()
                self._client_input(data, ts, out, start)
        finally:
            self._replaying = False

    # DATA ---------------------------------------------------------------

    def _start_body(self, ts: int, out: list[SmtpEvent]) -> None:
        if self._chunk_headers is not None:
            # DATA took over from a BDAT message (data_after_bdat): it ends
            # as seen, without its LAST chunk.
            self._chunk_complete = False
            self._finish_chunks(ts, out)
        self._mode = _DATA_BODY
        self._body = DataBody(strict=not self._lf_only_client)
        out.append(MessageStarted(ts, "DATA"))

    def _body_input(self, buf: bytes, pos: int, ts: int, out: list[SmtpEvent]) -> int:
        body = self._body
        assert body is not None
        end = body.feed(buf, pos)
        if end < 0:
            return len(buf)
        self._body_ended(ts, out)
        return end

    def _body_ended(self, ts: int, out: list[SmtpEvent]) -> None:
        """The end-of-data line was read: the message awaits its reply."""
        self._finish_body(ts, out)
        self._expect(_Pending(self._last_data_index, ".", ts, ends_message=True))

    def _finish_body(self, ts: int, out: list[SmtpEvent]) -> None:
        body = self._body
        assert body is not None
        self._body = None
        self._mode = _COMMAND
        if body.bare_lf_dot_lines:
            self._anomaly(
                out,
                ts,
                "bare_lf_dot_line",
                f"{body.bare_lf_dot_lines} dot line(s) with a bare LF in a CRLF body",
            )
        out.append(MessageEnded(ts, body.size, body.headers(), body.complete))

    # BDAT (RFC 3030 2) --------------------------------------------------

    def _bdat_start(
        self, argument: str, shown: str, ts: int, out: list[SmtpEvent]
    ) -> None:
        """``shown``: the argument as the command's row shows it, with what
        may be a password hidden (``redacted``), for the anomaly (found in
        review: "BDAT 10 AUTH LOGIN <b64>" hid the response from the row
        but not from bdat_invalid, which hid only what looks like base64
        by its look)."""
        chunk = parse_bdat(argument)
        if chunk is None:
            self._anomaly(out, ts, "bdat_invalid", shown or "(no argument)")
            return
        size, last = chunk
        if last and self._pending:
            self._pending[-1].ends_message = True  # this BDAT's
        if self._chunk_headers is None:
            self._chunk_headers = ChunkHeaders()
            self._chunk_total = 0
            self._chunk_complete = True
            out.append(MessageStarted(ts, "BDAT"))
        self._chunk_left = size
        self._chunk_last = last
        self._chunk_total += size
        if size:
            self._mode = _BDAT_CHUNK
        elif last:
            self._finish_chunks(ts, out)

    def _chunk_input(self, buf: bytes, pos: int, ts: int, out: list[SmtpEvent]) -> int:
        take = min(self._chunk_left, len(buf) - pos)
        if self._chunk_headers is not None:
            self._chunk_headers.feed(buf[pos : pos + min(take, 65536)])
        self._chunk_left -= take
        if self._chunk_left == 0:
            self._end_chunk(ts, out)
        return pos + take

    def _end_chunk(self, ts: int, out: list[SmtpEvent]) -> None:
        self._mode = _COMMAND
        if self._chunk_last:
            self._finish_chunks(ts, out)

    def _finish_chunks(self, ts: int, out: list[SmtpEvent]) -> None:
        self._mode = _COMMAND
        headers = self._chunk_headers.headers() if self._chunk_headers else ()
        out.append(MessageEnded(ts, self._chunk_total, headers, self._chunk_complete))
        self._chunk_headers = None
        self._chunk_last = False

    # AUTH (RFC 4954) ----------------------------------------------------

    def _auth_start(
        self, index: int, argument: str, ts: int, out: list[SmtpEvent]
    ) -> None:
        parts = argument.split(None, 1)
        mechanism = auth.mechanism_of(argument)
        initial = parts[1].strip() if len(parts) > 1 else ""
        self._auth_index = index
        self._auth_open = True
        self._auth_mechanism = mechanism
        self._auth_expect = ""
        if mechanism == "PLAIN":
            if initial and initial != "=":
                self._auth_user(auth.plain_user(initial), ts, out)
            else:
                self._auth_expect = "plain"
        elif mechanism == "LOGIN" and initial and initial != "=":
            self._auth_user(auth.login_user(initial), ts, out)
            self._auth_expect = _SPENT
        elif mechanism == "CRAM-MD5":
            self._auth_expect = "cram"  # its one answer, after the challenge
        # LOGIN without an initial response: only a "Username:" challenge
        # says the next answer is a username. Guessing could store a
        # password as a user name (a refused AUTH, a one-sided capture).

    def _auth_user(self, user: str | None, ts: int, out: list[SmtpEvent]) -> None:
        if user is not None:
            out.append(AuthUserSeen(ts, self._auth_mechanism, user))

    def _auth_answer(self, line: bytes, ts: int, out: list[SmtpEvent]) -> None:
        self._mode = _COMMAND
        text = wire_text(line).strip()
        cancelled = text == "*"
        out.append(AuthResponseSeen(ts, self._auth_index, cancelled))
        if not cancelled:
            if self._auth_expect != "user":
                # A server may echo an answer it could not decode (found in
                # review: a LOGIN password typed as is, not in base64). The
                # LOGIN username is no secret (auth_user shows it), and
                # withheld it blanked every later "user" in the replies.
                self._withhold([text])
            if self._auth_expect == "plain":
                self._auth_user(auth.plain_user(text), ts, out)
            elif self._auth_expect == "user":
                self._auth_user(auth.login_user(text), ts, out)
            elif self._auth_expect == "cram":
                self._auth_user(auth.cram_user(text), ts, out)
        self._auth_expect = _SPENT
        self._expect(_Pending(self._auth_index, "AUTH", ts, sasl=True))
        if self._server_spoke:
            self._holding = True

    def _auth_challenge(self, reply: Reply) -> None:
        """Decide what the client's next answer will carry."""
        if self._auth_mechanism == "LOGIN" and self._auth_expect != _SPENT:
            prompt = (auth.challenge_text(reply.text) or "").lower()
            self._auth_expect = "user" if prompt.startswith("user") else ""

    # ------------------------------------------------------------------
    # Server side

    def _server_input(self, data: bytes, ts: int, out: list[SmtpEvent]) -> None:
        buf = self._sbuf + data if self._sbuf else data
        self._sbuf = b""
        pos = 0
        size = len(buf)
        while pos < size:
            nl = buf.find(b"\n", pos)
            if nl < 0:
                rest = buf[pos:]
                if self._server_discard:
                    return  # more of a line already cut: dropped as it comes
                if len(rest) <= MAX_LINE:
                    self._sbuf = rest
                    return
                # Cut as a client line is (_partial_line): its start is the
                # reply line, the rest is dropped up to the next LF.
                self._server_long_line(rest, ts, out)
                self._server_discard = True
                return
            crlf = nl > pos and buf[nl - 1] == _CR  # as in _client_input
            line = buf[pos : nl - 1] if crlf else buf[pos:nl]
            pos = nl + 1
            if self._server_discard:
                self._server_discard = False
                continue
            if len(line) > MAX_LINE:
                # Whole in one buffer, it is cut all the same: the rows must
                # not depend on how the line was split into segments.
                self._server_long_line(line, ts, out)
                continue
            if self._server_resync:
                self._server_resync = False
                if parse_reply_line(wire_text(line.rstrip(b"\r"))) is None:
                    continue
            if not crlf and not self._lf_only_server:
                self._lf_only_server = True
                self._anomaly(out, ts, "bare_lf", "server lines end with LF alone")
            self._server_line(line, ts, out)
            if self._server_tls:
                # Bytes after the 220 to STARTTLS in the same burst were sent
                # before the TLS handshake could start (reply injection).
                rest = buf[pos:]
                if rest:
                    self._anomaly(
                        out,
                        ts,
                        "starttls_server_injection",
                        f"{len(rest)} bytes after the 220: "
                        f"{show_bytes(self._unechoed_bytes(rest))}",
                    )
                    self.tls_server_bytes += len(rest)
                return

    def _server_long_line(self, line: bytes, ts: int, out: list[SmtpEvent]) -> None:
        self._anomaly(out, ts, "line_truncated", f"server line over {MAX_LINE} bytes")
        self._server_line(line[:MAX_LINE], ts, out, cut=True)

    def _server_line(
        self, line: bytes, ts: int, out: list[SmtpEvent], *, cut: bool = False
    ) -> None:
        if len(line) + 2 > RFC_LINE_LIMIT and not cut:  # as in _client_line
            self._anomaly(
                out, ts, "line_too_long", f"server line of {len(line) + 2} bytes"
            )
        # wire_text and parse_reply_line, inline for the common line: ASCII,
        # three digits, then "-" or " ". Anything else goes by them.
        try:
            text = line.decode("ascii")
        except UnicodeDecodeError:
            text = wire_text(line)
        code = REPLY_CODES.get(text[:3])
        sep = text[3:4]
        if code is not None and sep == "-":
            more = True
            rest = text[4:]
        elif code is not None and sep == " ":
            more = False
            rest = text[4:]
        else:
            parsed = parse_reply_line(text)
            if parsed is None:
                # Client text where replies were due (roles taken from the
                # ports the wrong way round) may hold an AUTH payload, and a
                # server's line what was withheld from the client.
                shown = self._unechoed(wire_text(without_credentials(line)))
                self._anomaly(out, ts, "malformed_reply", shown[:200])
                return
            code, more, rest = parsed
        if self._reply_lines and code != self._reply_code:
            shown = self._unechoed(text)
            self._anomaly(
                out, ts, "malformed_reply", f"code changed inside a reply: {shown}"
            )
        if not self._reply_lines:
            self._reply_code = code
        if len(self._reply_lines) < MAX_REPLY_LINES:
            self._reply_lines.append(rest)
        if not more:
            self._complete_reply(ts, out)

    def _complete_reply(self, ts: int, out: list[SmtpEvent]) -> None:
        """The lines collected so far are one reply (RFC 5321 4.2.1)."""
        lines = tuple(self._reply_lines)
        self._reply_lines = []
        code = self._reply_code
        first = lines[0] if lines else ""
        self._reply(_new(Reply, (code, enhanced_code(first, code), lines)), ts, out)

    def _withhold(self, secrets: list[str]) -> None:
        """Remember what was hidden from a client line, for the replies.

        Base64 comes in fours: shorter words (a stray "a") would cut holes
        in every reply, and are looked for only in the one that answers
        them, as short decoded passwords are (below).
        """
        if self._secrets is None:
            self._secrets = deque(maxlen=_SECRETS_KEPT)
        # A server may echo a response decoded, as it read it (found in
        # review: "535 bad credentials for (\\0hank\\0<password>)"): the
        # password within is withheld beside the base64 that carried it.
        # Base64's "=" padding is left out, as a server may echo it without,
        # or with more (found in review: "YWJjZA==" came back as "YWJjZA").
        self._secrets.extend(
            _lowered(secret.rstrip("=") or secret)
            for secret in secrets
            if len(secret) >= _SHORT_SECRET
        )
        # A decoded password is one whatever its length (found in review: a
        # three-letter one came back in the echo). Long ones are looked for
        # in every reply, as base64 is; shorter ones only up to the reply
        # that answers them, where a server echoes what it decoded: a
        # password "as" or "user" looked for in every reply blanked the
        # queue ids and addresses of the session (found in review). That
        # reply is the one to the last command read (an AUTH answer's is
        # its AUTH's), not merely the next: pipelined behind EHLO, an AUTH
        # is answered after it (found in review: "abc123" was shown in the
        # AUTH's 535, the EHLO's 250 having been scrubbed of it).
        #
        # A line shorter than base64 comes (a LOGIN password of two letters
        # typed as is, not encoded) is one too, looked for as those are:
        # found in review, "ab" came back in "501 5.5.2 cannot decode: ab".
        # An empty response ("=", RFC 4954 4) or a cancel ("*") is none.
        echoed = [
            secret
            for secret in secrets
            if len(secret) < _SHORT_SECRET and secret not in _NO_SECRETS
        ]
        for secret in filter(None, map(auth.decoded_secret, secrets)):
            if len(secret) >= _SECRET_START:
                self._secrets.append(_lowered(secret))
            else:
                echoed.append(secret)
        self._echoed_in_answer(echoed)

    def _withhold_body_line(self, secrets: list[str]) -> None:
        """Remember what was hidden from the first line of a body sent after
        a refused DATA (``redacted``, as an unknown command's row).

        What looks like SASL data is withheld from every later reply, as
        from a command. The other words are prose more often than not (an
        "Authentication-Results:" header, a "Subject:" that says "auth
        code required"): withheld for the session, they blanked "failed",
        "user" or "spf=pass" in every later reply (found in review), so
        they are looked for only in the next reply, the server's refusal
        of that line, where a server that echoes it (sendmail) shows it.
        """
        kept = [
            secret
            for secret in secrets
            if auth.looks_like_sasl_data(secret)
            or auth.hide_secrets(secret) != secret
            or auth.is_plain_response(secret)
        ]
        if kept:
            self._withhold(kept)
        # DATA's row, already answered: the next reply clears them.
        self._echoed_in_answer(
            [s for s in secrets if s not in kept and s not in _NO_SECRETS]
        )

    def _echoed_in_answer(self, secrets: list[str]) -> None:
        """Look for ``secrets`` in the replies up to the one that answers
        the last command read (see _withhold), not in every reply."""
        if not secrets:
            return
        if self._echoed is None:
            self._echoed = []
        self._echoed += map(_lowered, secrets)
        self._echoed_until = self._command_index - 1

    def _unechoed(self, text: str) -> str:
        """``text``, a server line an anomaly shows, without what was
        withheld from the client, as ``_reply`` hides it in a reply (found
        in review: a line that was no reply, or that changed the code of
        its reply, echoed a password whole into the anomalies). The short
        secrets that only the next reply is scrubbed of are kept for it."""
        for secrets in (self._secrets, self._echoed):
            if secrets:
                text = _without_secrets(text, secrets)
        return text

    def _unechoed_bytes(self, data: bytes) -> bytes:
        """``_unechoed`` for a server's bytes an anomaly shows raw (found in
        review: bytes after the 220 to STARTTLS, or clear text where TLS
        was due, echoed a password withheld earlier). Latin-1 keeps one
        character for each byte, so that what is not hidden is shown as
        it came."""
        if not self._secrets and not self._echoed:
            return data
        return self._unechoed(data.decode("latin-1")).encode("latin-1")

    def _reply(self, reply: Reply, ts: int, out: list[SmtpEvent]) -> None:
        if self._secrets:
            reply = _scrubbed(reply, self._secrets)
        if self._echoed:
            reply = _scrubbed(reply, self._echoed)
            pending = self._pending
            if not pending or pending[0].index >= self._echoed_until:
                self._echoed = None  # the reply that answers them
        if not self._greeting_seen and self._is_greeting(reply):
            self._greeting_seen = True
            if self._client_spoke_first:
                self._anomaly(
                    out, ts, "early_talker", "client sent data before the greeting"
                )
            out.append(GreetingSeen(ts, reply))
            return
        if not self._greeting_seen:
            self._greeting_seen = True
            self._anomaly(
                out, ts, "greeting_missing", "capture starts after the greeting"
            )

        if self._refused_lines:
            if reply.code // 100 == 5:
                # The server's refusal of a line of that body: sent before
                # anything still waiting, it is answered first.
                self._refused_lines -= 1
                out.append(ReplySeen(ts, reply, None, None))
                return
            # Not how a line of garbage is answered: this server does not
            # answer the body's lines, and this reply is for a command.
            self._refused_lines = 0
        if self._let_go:
            # The reply to a command let go past MAX_PENDING: it answers no
            # row (found in review: it went to the oldest command still
            # waiting, and every later reply shifted by one with it).
            self._let_go -= 1
            out.append(ReplySeen(ts, reply, None, None))
            return
        if not self._pending and self._mode is _DATA_BODY:
            self._server_ended_data(ts, out)
        if not self._pending and self._caught and self._command_index == 0:
            # Before the client's first line of a caught connection: the
            # reply to a command sent before the capture began.
            out.append(ReplySeen(ts, reply, None, None))
            return
        if not self._pending:
            # What the server echoes here was maybe never seen sent (a
            # capture of one side): whatever looks like a secret is hidden.
            shown = auth.hide_secrets(reply.text[:120])
            self._anomaly(out, ts, "reply_without_command", f"{reply.code} {shown}")
            out.append(ReplySeen(ts, reply, None, None))
            return
        if reply.code == 354 and self._pending[0].answers != "DATA":
            self._skipped_before_data(ts, out)
        waiting = self._pending.popleft()
        if waiting.ends_message and self._lmtp and waiting.recipient is None:
            self._per_recipient(waiting)
        out.append(
            _new(
                ReplySeen,
                (ts, reply, waiting.index, waiting.answers, waiting.recipient),
            )
        )
        self._after_reply(waiting, reply, ts, out)

    def _per_recipient(self, waiting: _Pending) -> None:
        """The first reply to an LMTP message: one more is due for each
        other RCPT the server accepted (RFC 2033 4.2; LMTP servers that
        offer CHUNKING answer BDAT LAST so too), before anything sent after
        the message. With none accepted, the one reply is all."""
        count = min(max(self._rcpts_ok, 1), MAX_PENDING)
        self._rcpts_ok = 0  # the transaction ends with the message
        waiting.recipient = (0, count)
        for n in range(count - 1, 0, -1):
            more = _Pending(waiting.index, waiting.answers, waiting.ts)
            more.recipient = (n, count)
            self._pending.appendleft(more)

    def _skipped_before_data(self, ts: int, out: list[SmtpEvent]) -> None:
        """A 354 came while commands sent before a DATA still wait.

        354 answers DATA alone (RFC 5321 4.3.2): a server that sends it has
        read DATA, and so every command before it, which it answers in order
        (RFC 2920 3.1). The replies of those it never sent: they are let go
        and the 354 goes to DATA. Only plain commands are passed over, never
        one whose reply changes what the client's bytes are (DATA, BDAT,
        STARTTLS, AUTH), an end of data, or a line of an unknown verb (an
        extension may answer 354); nor more than _REALIGN_SPAN of them, so
        a hostile pipeline cannot make each reply walk the whole queue.
        """
        pending = self._pending
        for skipped in range(min(len(pending), _REALIGN_SPAN)):
            waiting = pending[skipped]
            if waiting.answers == "DATA" and not waiting.assumed:
                break
            if waiting.answers not in _PASSED_OVER or waiting.sasl:
                return
        else:
            return
        verbs = [pending.popleft().answers for _ in range(skipped)]
        self._anomaly(
            out,
            ts,
            "replies_skipped",
            f"354 to DATA with {skipped} command(s) before it unanswered: "
            + ", ".join(verbs[:10]),
        )

    def _expect(self, pending: _Pending) -> None:
        """Queue what the next reply answers, after those already waiting."""
        if self._pending is _NOTHING_PENDING:
            self._pending = deque()
        self._pending.append(pending)

    def _server_ended_data(self, ts: int, out: list[SmtpEvent]) -> None:
        """The server replied while the client was, for us, inside DATA.

        A server that accepts a bare LF before the dot (Sendmail, older
        Postfix) ended the message at the first LF "." line; the reply is its
        verdict and what followed that line were commands.
        """
        body = self._body
        cut = body.cut_at_bare_lf_end() if body is not None else None
        if cut is None:
            return
        _size, rest = cut
        self._anomaly(
            out, ts, "bare_lf_end_of_data", "the server ended DATA at a bare LF dot"
        )
        self._finish_body(ts, out)
        self._expect(_Pending(self._last_data_index, ".", ts, ends_message=True))
        if rest:
            self._client_input(rest, ts, out)

    def _close_unterminated_reply(self, ts: int, out: list[SmtpEvent]) -> None:
        """The client moved on while the server's reply looked unfinished.

        A client waits for the greeting, and RFC 2920 3.1 lets EHLO, DATA,
        VRFY, EXPN, TURN, QUIT and NOOP only end a pipelined group; a client
        that sends a command after one of them has seen the whole reply, so
        the server never sent the line ending or the last "ddd " line.
        """
        waiting = not self._greeting_seen or (
            bool(self._pending) and self._pending[0].answers in _GROUP_ENDERS
        )
        if not waiting:
            return
        partial = self._sbuf.rstrip(b"\r")
        parsed = parse_reply_line(wire_text(partial)) if partial else None
        if parsed is not None and not parsed[1]:
            self._sbuf = b""
            self._anomaly(out, ts, "unterminated_reply", "reply line without CRLF")
            self._server_line(partial, ts, out)
            return
        if self._reply_lines:
            code = self._reply_code
            self._anomaly(
                out, ts, "unterminated_reply", f"{code} reply had no last line"
            )
            self._complete_reply(ts, out)

    def _is_greeting(self, reply: Reply) -> bool:
        if not self._pending:
            # On a caught connection only a greeting's code says it is one
            # (RFC 5321 3.1, 4.3.2): another answers a command not captured.
            return not self._caught or reply.code in (220, 421, 554)
        # A capture that starts mid-connection shows a reply to a command
        # first; the greeting is 220, or 421/554 for a refusal (RFC 5321 3.1).
        first = self._pending[0].answers
        return reply.code in (220, 421, 554) and first not in ("STARTTLS", "?")

    def _after_reply(
        self, waiting: _Pending, reply: Reply, ts: int, out: list[SmtpEvent]
    ) -> None:
        answers = waiting.answers
        if answers == "RCPT" and reply.klass == 2:
            self._rcpts_ok += 1
        elif answers in TRANSACTION_RESETS and reply.klass == 2:
            self._rcpts_ok = 0
            if answers in _GREETING_VERBS:
                # The greeting the server took says which protocol it
                # speaks; a refused one changes nothing (found in review: a
                # refused LHLO on port 25 made an SMTP server's replies to
                # the next transaction go to the message's recipients).
                self._lmtp = answers == "LHLO"
        if answers == "AUTH" and reply.klass != 3:
            self._auth_open = False
        if answers == "?" and reply.code == 334:
            # A 334 to a line we did not take for AUTH: the capture began
            # inside an AUTH exchange. The next line is SASL data too.
            self._auth_index = waiting.index
            self._auth_mechanism = ""
            self._auth_expect = ""
            self._auth_open = True
            self._mode = _AUTH_ANSWER
            return
        if answers not in _BLOCKING or waiting.assumed:
            return
        mode = _AFTER_REPLY.get((answers, reply.klass), _COMMAND)
        # Not holding, the queue is a replay's, not this reply's to judge.
        held = self._held if self._holding else None
        self._holding = False
        self._mode = mode

        if answers == "DATA":
            if mode is _DATA_BODY:
                self._start_body(ts, out)
            else:
                self._data_refused = True
        elif answers == "STARTTLS" and mode is not _TLS:
            self._starttls_refused = True
        elif answers == "STARTTLS":
            self._start_tls(ts, out, implicit=False)
            if held:
                sent = held.take_all()
                self._anomaly(
                    out,
                    ts,
                    "starttls_client_injection",
                    f"{len(sent)} bytes before the 220: "
                    f"{show_bytes(without_credentials(sent))}",
                )
        elif answers == "AUTH" and mode is _AUTH_ANSWER:
            self._auth_challenge(reply)
        self._replay(out)

    def _other_protocol(
        self, data: bytes, ts: int, out: list[SmtpEvent], *, from_client: bool
    ) -> bool:
        """At the very start, recognise a protocol that is not SMTP."""
        opening = self._command_index == 0 and not self._server_spoke
        if not opening or self._mode is not _COMMAND:
            return False
        side = "client" if from_client else "server"
        if from_client:
            if self._cbuf:
                return False
            name = sniff.client_protocol(data)
        else:
            if self._sbuf:
                return False
            name = sniff.server_protocol(data)
        if name is None:
            return False
        self._mode = _OTHER
        shown = without_credentials(data) if from_client else self._unechoed_bytes(data)
        self._anomaly(
            out, ts, "not_smtp", f"{side} speaks {name}: {show_bytes(shown, 40)}"
        )
        return True

    # ------------------------------------------------------------------
    # TLS

    def _start_tls(
        self, ts: int, out: list[SmtpEvent], *, implicit: bool, seen: bool = True
    ) -> None:
        self._mode = _TLS
        self._server_tls = True
        # After STARTTLS, the next bytes either way say whether TLS really
        # began (_decide_tls): a client may ignore the 220 and go on in
        # clear text, which a server may even answer. TLS caught under way
        # (not ``seen``) was judged by its first bytes already.
        self._tls_decided = implicit or not seen
        self.tls_started_ts = ts
        self._pending.clear()
        self._let_go = 0
        out.append(TlsStarted(ts, implicit, seen))
        if self._cbuf:
            if not self._tls_decided:
                self._decide_tls(self._cbuf, ts, from_client=True, out=out)
            if self._mode is _TLS:
                self.tls_client_bytes += len(self._cbuf)
                out.append(TlsBytesSeen(ts, True, self._cbuf))
                self._cbuf = b""

    def _held_were_tls(self, ts: int, out: list[SmtpEvent]) -> None:
        """The client's bytes held for the server's (``_tls_waits``) were
        TLS records, as the server's turned out to be."""
        self._holding = False
        sent = self._held.take_all() if self._held else b""
        if sent:
            self.tls_client_bytes += len(sent)
            out.append(TlsBytesSeen(ts, True, sent))

    def _decide_tls(
        self, data: bytes, ts: int, *, from_client: bool, out: list[SmtpEvent]
    ) -> None:
        """On an implicit-TLS port, or after a 220 to STARTTLS, check the
        first bytes really are TLS."""
        self._tls_decided = True
        if self._mode is _TLS:
            # After STARTTLS: any TLS record (RFC 8446 5.1), or an SSLv2
            # hello, whose first byte has its top bit set.
            if data[0] in _TLS_CONTENT_TYPES or data[0] & 0x80:
                return
            smtp = _starts_like_command(data) if from_client else data[:3].isdigit()
            if not smtp:
                # Neither TLS nor SMTP (Suricata's protocol-change test: an
                # HTTP upgrade): the TLS parser says not_tls, as it did.
                return
            self._mode = _COMMAND
            self._server_tls = False
            self._clear_text(
                out, ts, data, from_client, "plaintext_after_starttls",
                "went on in clear text after the 220",
            )  # fmt: skip
            out.append(TlsAbandoned(ts))
            return
        # A ClientHello in a TLS record, or from the client in SSL 2.0 form,
        # judged by as much of its opening as this segment holds: on this
        # port nothing else is due, so a hello sent a byte at a time counts.
        implicit = self._implicit_tls_port
        hello = data[0] == _TLS_HANDSHAKE or (
            from_client and starts_v2_client_hello(data)
        )
        if implicit and hello:
            self._start_tls(ts, out, implicit=True)
            return
        waited = self._tls_waits
        self._tls_waits = False
        if self._caught and _mid_tls_record(data):
            # The capture began inside TLS (a rotated ring buffer): records
            # whose handshake it never saw, and none of these bytes is SMTP.
            # But one side's bytes alone do not make the connection TLS:
            # five forged bytes of a record's header would hide every
            # command after them from the tables and detectors, while the
            # peer, reading them as a bad line, takes the commands (found in
            # review, from a client on 25 and on 465, and from a client that
            # took the server's place by connecting from port 25). Both
            # sides' first bytes must be records.
            if (waited and not from_client) or (from_client and self._server_tls_like):
                self._start_tls(ts, out, implicit=implicit, seen=False)
                if waited:
                    self._held_were_tls(ts, out)
                return
            if from_client:
                # Held until the server's first bytes, which decide.
                self._tls_decided = False
                self._tls_waits = True
                self._holding = True
                return
            # The server's first bytes: read as replies (a forger's
            # commands show, as malformed replies), and the client's first
            # bytes decide.
            self._server_tls_like = True
            self._tls_decided = False
            return
        if waited:
            self._release_held(ts, out, hopeful=False)  # SMTP after all
        if not implicit:
            return  # a caught connection in clear text, read as SMTP
        self._clear_text(
            out, ts, data, from_client, "plaintext_on_tls_port", "began with"
        )

    def _clear_text(
        self,
        out: list[SmtpEvent],
        ts: int,
        data: bytes,
        from_client: bool,
        kind: str,
        what: str,
    ) -> None:
        """An anomaly for clear text where TLS was due, its start shown
        without what may be a password."""
        side = "client" if from_client else "server"
        shown = without_credentials(data) if from_client else self._unechoed_bytes(data)
        self._anomaly(out, ts, kind, f"{side} {what}: {show_bytes(shown, 40)}")

    # ------------------------------------------------------------------

    def _anomaly(
        self, out: list[SmtpEvent], ts: int, kind: str, detail: str | bytes
    ) -> None:
        """Record an anomaly; repeated kinds are capped to bound memory."""
        count = self._anomaly_counts.get(kind, 0) + 1
        self._anomaly_counts[kind] = count
        if count > MAX_ANOMALIES_PER_KIND:
            return
        if isinstance(detail, bytes):
            detail = show_bytes(detail, 200)
        if count == MAX_ANOMALIES_PER_KIND:
            detail = f"{detail} (further {kind} not recorded)"
        out.append(AnomalySeen(ts, kind, detail))
