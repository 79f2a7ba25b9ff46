"""Message content framing: finding the end of DATA fast, and the headers.

A DATA body can be megabytes, so it is scanned with ``bytes.find`` rather
than split into lines. The scanner keeps at most a few bytes between calls
(a possible end-of-data line cut by a segment boundary) plus the header block,
which is bounded.
"""

from __future__ import annotations

from analysis.smtp.syntax import parse_headers

MAX_HEADER_BYTES = 64 * 1024
MAX_AFTER_BARE_LF_END = 64 * 1024


class DataBody:
    """Follows one DATA body (RFC 5321 4.1.1.4) to its end-of-data line.

    ``strict`` (the client ends its lines with CRLF) accepts only
    CRLF "." CRLF as the end, as RFC 5321 4.1.1.4 and 2.3.8 require; a dot
    line ended by a bare LF inside such a body is the shape used for SMTP
    smuggling and is counted in ``bare_lf_dot_lines``. A client that ends
    its lines with bare LF gets LF "." LF (or LF "." CRLF) as its end.
    """

    __slots__ = (
        "_after",
        "_at_line_start",
        "_carry",
        "_header_buf",
        "_headers_done",
        "_lenient_size",
        "_strict",
        "bare_lf_dot_lines",
        "complete",
        "raw_bytes",
        "stuffed_dots",
    )

    def __init__(self, strict: bool) -> None:
        self._strict = strict
        self._at_line_start = True
        self._carry = b""  # a possible end-of-data line cut by a boundary
        self._header_buf = bytearray()
        self._headers_done = False
        self.raw_bytes = 0  # body bytes before unstuffing, terminator excluded
        self.stuffed_dots = 0  # lines starting with "." (RFC 5321 4.5.2)
        self.bare_lf_dot_lines = 0
        self.complete = True
        # The first place a lenient server would have ended a strict body,
        # and the bytes after it (bounded), in case the server's reply shows
        # that it did: see ``cut_at_bare_lf_end``.
        self._lenient_size: int | None = None
        self._after = bytearray()

    @property
    def size(self) -> int:
        return self.raw_bytes - self.stuffed_dots

    def headers(self) -> tuple[tuple[str, str], ...]:
        return parse_headers(bytes(self._header_buf))

    def cut_at_bare_lf_end(self) -> tuple[int, bytes] | None:
        """End the body where a lenient server ended it; None if nowhere.

        Returns the message size up to that end-of-data line and the client
        bytes that followed it, which the server read as commands.
        """
        if self._lenient_size is None:
            return None
        rest = bytes(self._after) + self._carry
        self.raw_bytes, self.stuffed_dots = self._lenient_size, 0
        self._carry = b""
        return self._lenient_size, rest

    def lost(self, size: int) -> None:
        """A TCP gap inside the body: the size stays an estimate."""
        self.raw_bytes += len(self._carry) + size
        self._carry = b""
        self._at_line_start = False
        self._headers_done = True
        self.complete = False

    def feed(self, data: bytes, start: int) -> int:
        """Consume ``data[start:]``; return where the body ended, or -1.

        The returned offset is just past the end-of-data line; bytes after it
        belong to the client's next command.
        """
        buf = self._carry + data[start:] if self._carry else data[start:]
        carried = len(self._carry)
        self._carry = b""
        if self._strict and self.raw_bytes == 0 and not carried:
            self._choose_line_ending(buf)

        end_at, body_len = self._find_end(buf)
        if end_at < 0:
            body_len = len(buf) - self._cut_tail(buf)
        self._count(buf, body_len)

        if end_at < 0:
            self._carry = buf[body_len:]
            return -1
        return start + end_at - carried

    def _choose_line_ending(self, buf: bytes) -> None:
        """A body whose first line ends in a bare LF is an LF-only body.

        Some clients send CRLF commands but LF-only content, and servers that
        accept it end such a message at LF "." LF. A smuggling attempt looks
        different: its first lines end in CRLF, so it stays strict.
        """
        first = buf.find(b"\n")
        if first == 0 or (first > 0 and buf[first - 1] != 0x0D):
            self._strict = False

    def _find_end(self, buf: bytes) -> tuple[int, int]:
        """(offset after the end line, body length before it) or (-1, 0)."""
        # In a CRLF body only the very first line can be a bare "." without
        # a CRLF in front of it; a lenient (bare LF) body ends at any such line.
        at_start = self.raw_bytes == 0 if self._strict else self._at_line_start
        if at_start:
            for marker in self._line_start_markers():
                if buf.startswith(marker):
                    return len(marker), 0
        best = -1
        best_len = 0
        for marker in self._markers():
            i = buf.find(marker)
            if i >= 0 and (best < 0 or i < best):
                best = i
                best_len = len(marker)
        if best < 0:
            return -1, 0
        # The body keeps the line ending that precedes the dot line.
        lead = 2 if buf[best : best + 2] == b"\r\n" else 1
        return best + best_len, best + lead

    def _markers(self) -> tuple[bytes, ...]:
        if self._strict:
            return (b"\r\n.\r\n",)
        return (b"\n.\r\n", b"\n.\n")

    def _line_start_markers(self) -> tuple[bytes, ...]:
        if self._strict:
            return (b".\r\n",)
        return (b".\r\n", b".\n")

    def _cut_tail(self, buf: bytes) -> int:
        """How many bytes at the end could start an end-of-data line."""
        for tail in (b"\r\n.\r", b"\r\n.", b"\r\n", b"\r", b"\n.\r", b"\n."):
            if buf.endswith(tail):
                return len(tail)
        if self._at_line_start and buf in (b".", b".\r"):
            return len(buf)
        return 0

    def _count(self, buf: bytes, n: int) -> None:
        if n <= 0:
            return
        body = buf[:n]
        self.raw_bytes += n
        self.stuffed_dots += body.count(b"\n.")
        if self._at_line_start and body[:1] == b".":
            self.stuffed_dots += 1
        # Dot lines ended by a bare LF, or a dot after a bare LF, inside a
        # CRLF body: invisible to a strict server, an end to a lenient one.
        if self._strict and b"\n." in body:
            self.bare_lf_dot_lines += body.count(b"\n.\n") + (
                body.count(b"\n.\r\n") - body.count(b"\r\n.\r\n")
            )
        if self._strict:
            self._note_bare_lf_end(body)
        self._at_line_start = body[-1:] == b"\n"
        if not self._headers_done:
            self._collect_headers(body)

    def _note_bare_lf_end(self, body: bytes) -> None:
        """Remember the first dot line a lenient server would end data at."""
        if self._lenient_size is not None:
            if len(self._after) < MAX_AFTER_BARE_LF_END:
                self._after += body
            else:
                self._lenient_size = None  # too far back to matter
            return
        ends = [i for i in (body.find(b"\n.\n"), body.find(b"\n.\r\n")) if i >= 0]
        if not ends:
            return
        i = min(ends)
        marker = 3 if body[i : i + 3] == b"\n.\n" else 4
        kept = body[: i + 1]
        before = self.raw_bytes - len(body)
        dots = self.stuffed_dots - body.count(b"\n.") + kept.count(b"\n.")
        self._lenient_size = before + len(kept) - dots
        self._after = bytearray(body[i + marker :])

    def _collect_headers(self, body: bytes) -> None:
        room = MAX_HEADER_BYTES - len(self._header_buf)
        self._header_buf += body[:room]
        joined = bytes(self._header_buf)
        if joined.startswith((b"\r\n", b"\n")):
            # The body opens with an empty line: it has no header block.
            self._header_buf.clear()
            self._headers_done = True
            return
        for blank in (b"\r\n\r\n", b"\n\n"):
            i = joined.find(blank)
            if i >= 0:
                del self._header_buf[i + len(blank) :]
                self._headers_done = True
                return
        if len(self._header_buf) >= MAX_HEADER_BYTES:
            self._headers_done = True


class ChunkHeaders:
    """Collects the header block from the first BDAT chunks (RFC 3030)."""

    __slots__ = ("_buf", "_done")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._done = False

    def feed(self, data: bytes) -> None:
        if self._done:
            return
        self._buf += data[: MAX_HEADER_BYTES - len(self._buf)]
        joined = bytes(self._buf)
        ended = b"\r\n\r\n" in joined or b"\n\n" in joined
        if ended or len(self._buf) >= MAX_HEADER_BYTES:
            self._done = True

    def headers(self) -> tuple[tuple[str, str], ...]:
        return parse_headers(bytes(self._buf))
