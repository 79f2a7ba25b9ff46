"""Events the SMTP parser emits. Names say what was observed on the wire."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reply:
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


@dataclass(frozen=True, slots=True)
class GreetingSeen:
    ts: int
    reply: Reply


@dataclass(frozen=True, slots=True)
class CommandSeen:
    ts: int
    index: int  # position among this session's client command lines, from 0
    verb: str  # upper-cased if known, else as sent
    argument: str  # AUTH payloads already redacted
    pipelined: bool  # an earlier command was still waiting for its reply
    known: bool


@dataclass(frozen=True, slots=True)
class ReplySeen:
    """A reply and what it answers.

    ``answers`` is the verb of the command waiting for it, "." for the end of
    a DATA message, "AUTH" for an answer line inside an AUTH exchange, or
    None when nothing was waiting. ``command_index`` is the command whose
    row the reply belongs to (for "." the DATA, inside AUTH the AUTH).
    """

    ts: int
    reply: Reply
    command_index: int | None
    answers: str | None


@dataclass(frozen=True, slots=True)
class AuthResponseSeen:
    """A client line inside an AUTH exchange; its content is never kept."""

    ts: int
    command_index: int  # the AUTH command it belongs to
    cancelled: bool  # the client sent "*" (RFC 4954 4)


@dataclass(frozen=True, slots=True)
class AuthUserSeen:
    """The username of an AUTH exchange; the password is never kept."""

    ts: int
    mechanism: str
    user: str


@dataclass(frozen=True, slots=True)
class MessageStarted:
    ts: int
    method: str  # DATA or BDAT


@dataclass(frozen=True, slots=True)
class MessageEnded:
    """The client finished sending a message's content.

    ``size`` counts the content after dot-unstuffing (DATA) or the sum of the
    chunk sizes (BDAT). ``complete`` is false when part of it was never seen
    (a TCP gap) or the connection ended before the end of data.
    """

    ts: int
    size: int
    headers: tuple[tuple[str, str], ...]  # (lower-cased name, unfolded value)
    complete: bool


@dataclass(frozen=True, slots=True)
class TlsStarted:
    ts: int
    implicit: bool  # TLS from the first byte (port 465) rather than STARTTLS


@dataclass(frozen=True, slots=True)
class TlsBytesSeen:
    """Bytes of the TLS stream, in order per direction, for a TLS parser.

    ``missing`` is non-zero for bytes the capture lost (``data`` is empty).
    """

    ts: int
    from_client: bool
    data: bytes
    missing: int = 0


@dataclass(frozen=True, slots=True)
class AnomalySeen:
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
    | TlsBytesSeen
    | AnomalySeen
)
