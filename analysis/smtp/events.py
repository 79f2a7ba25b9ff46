"""Events the SMTP parser emits. Names say what was observed on the wire.

NamedTuples rather than frozen dataclasses: as immutable, and several are
built for every segment of a run, which a frozen dataclass makes more
than twice as costly.
"""

from __future__ import annotations

from typing import NamedTuple


class Reply(NamedTuple):
    """One complete server reply; multi-line replies joined (RFC 5321 4.2.1)."""

    code: int
    enhanced: str | None  # RFC 3463 status code from the first line, if any
    lines: tuple[str, ...]  # text after "ddd-" / "ddd " on each line

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def klass(self) -> int:
        return self.code // 100


class GreetingSeen(NamedTuple):
    ts: int
    reply: Reply


class CommandSeen(NamedTuple):
    ts: int
    # Position among this session's client command lines, from 0.
    command_index: int
    verb: str  # upper-cased if known, else as sent
    argument: str  # AUTH payloads already redacted
    pipelined: bool  # an earlier command was still waiting for its reply
    known: bool


class ReplySeen(NamedTuple):
    """A reply and what it answers.

    ``answers`` is the verb of the command waiting for it, "." for the end of
    a DATA message, "AUTH" for an answer line inside an AUTH exchange, or
    None when nothing was waiting. ``command_index`` is the command whose
    row the reply belongs to (for "." the DATA, inside AUTH the AUTH).

    ``recipient`` is set on the replies to a message in LMTP, one for each
    RCPT the server accepted (RFC 2033 4.2): (n, count) for the n-th of
    them, from 0, in the order the RCPTs were accepted.
    """

    ts: int
    reply: Reply
    command_index: int | None
    answers: str | None
    recipient: tuple[int, int] | None = None


class AuthResponseSeen(NamedTuple):
    """A client line inside an AUTH exchange; its content is never kept."""

    ts: int
    command_index: int  # the AUTH command it belongs to
    cancelled: bool  # the client sent "*" (RFC 4954 4)


class AuthUserSeen(NamedTuple):
    """The username of an AUTH exchange; the password is never kept."""

    ts: int
    mechanism: str
    user: str


class MessageStarted(NamedTuple):
    ts: int
    method: str  # DATA or BDAT


class MessageEnded(NamedTuple):
    """The client finished sending a message's content.

    ``size`` counts the content after dot-unstuffing (DATA) or the sum of the
    chunk sizes (BDAT). ``complete`` is false when part of it was never seen
    (a TCP gap) or the connection ended before the end of data.
    """

    ts: int
    size: int
    headers: tuple[tuple[str, str], ...]  # (lower-cased name, unfolded value)
    complete: bool


class TlsStarted(NamedTuple):
    ts: int
    implicit: bool  # TLS from the first byte (port 465) rather than STARTTLS
    # False for a connection caught inside TLS: its handshake is not in the
    # capture, so there is nothing of it to read.
    handshake_seen: bool = True


class TlsAbandoned(NamedTuple):
    """After a 220 to STARTTLS, clear text came where TLS was due: the
    session goes on in clear text, as though STARTTLS had never been said."""

    ts: int


class TlsBytesSeen(NamedTuple):
    """Bytes of the TLS stream, in order per direction, for a TLS parser.

    ``missing`` is non-zero for bytes the capture lost (``data`` is empty).
    """

    ts: int
    from_client: bool
    data: bytes
    missing: int = 0


class AnomalySeen(NamedTuple):
    ts: int
    kind: str
    detail: str


SmtpEvent = (
    GreetingSeen
    | CommandSeen
    | ReplySeen
    | AuthUserSeen
    | AuthResponseSeen
    | MessageStarted
    | MessageEnded
    | TlsStarted
    | TlsAbandoned
    | TlsBytesSeen
    | AnomalySeen
)
