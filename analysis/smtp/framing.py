"""Message content framing: finding the end of DATA fast, and the headers.

A DATA body can be megabytes, so it is scanned with ``bytes.find`` rather
than split into lines. The scanner keeps at most a few bytes between calls
(a possible end-of-data line cut by a segment boundary) plus the header block,
which is bounded.
"""

from __future__ import annotations

import re

from analysis.smtp.syntax import parse_headers

MAX_HEADER_BYTES = 64 * 1024
MAX_AFTER_BARE_LF_END = 64 * 1024
# Every proper prefix of an end-of-data line ends in one of these bytes.
_TAIL_LAST_BYTES = (b"\r", b"\n", b".")
_DOT_LINE_SEARCH = re.compile(rb"\n\.").search


def find_dot_line(buf: bytes, pos: int) -> int:
    """``buf.find(b"\\n.", pos)``: where the next LF "." pair starts, or -1.

    On CPython 3.11 ``bytes.find`` scans for a two-byte needle at about a
    byte a nanosecond; ``memchr`` finds a single "." many times faster, and
    a body chunk often has none at all (base64 has no dots). After a dot the
    regex engine, about twice as quick as ``bytes.find`` here, takes over.
    """
    # A pair at i >= pos has its "." at i + 1 >= pos + 1, so the first dot
    # from there bounds where the pair can start.
    dot = buf.find(b".", pos + 1)
    if dot < 0:
        return -1
    found = _DOT_LINE_SEARCH(buf, dot - 1)
    return found.start() if found is not None else -1


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
        "_after_from",
        "_at_line_start",
        "_carry",
        "_header_buf",
        "_headers_done",
        "_last_counted",
        "_lenient_at",
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
        self._lenient_at = 0  # stream offset of that line's LF
        self._after_from = 0  # stream offset where the bytes after it begin
        self._after = bytearray()
        self._last_counted = -1  # last byte counted so far, -1 before any

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
        # The held-back bytes follow what was counted; the end line may
        # itself reach into them.
        skip = max(0, self._after_from - self.raw_bytes)
        rest = bytes(self._after) + self._carry[skip:]
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
        buf = data[start:] if start else data
        carried = len(self._carry)
        if carried:
            buf = self._carry + buf
            self._carry = b""

        if self._strict:
            end_at, body_len, stuffed = self._scan_strict(buf, carried)
        else:
            end_at, body_len = self._find_end(buf)
            if end_at < 0:
                body_len = len(buf) - self._cut_tail(buf)
            stuffed = buf.count(b"\n.", 0, body_len)
        if self._at_line_start and buf[:1] == b".":
            stuffed += 1

        # Count buf[:body_len] as body, ``stuffed`` of its lines dot-stuffed.
        if body_len > 0:
            self.raw_bytes += body_len
            self.stuffed_dots += stuffed
            if self._lenient_size is not None:
                self._keep_after(buf[:body_len])
            last = buf[body_len - 1]
            self._at_line_start = last == 0x0A  # LF
            self._last_counted = last
            if not self._headers_done:
                self._collect_headers(buf[:body_len])

        if end_at < 0:
            if body_len < len(buf):
                self._carry = buf[body_len:]
            return -1
        return start + end_at - carried

    def _find_end(self, buf: bytes) -> tuple[int, int]:
        """In a lenient (bare LF) body: (offset after the end line, body
        length before it) or (-1, 0). Such a body ends at any dot line."""
        if self._at_line_start:
            for marker in (b".\r\n", b".\n"):
                if buf.startswith(marker):
                    return len(marker), 0
        best = -1
        best_len = 0
        for marker in (b"\n.\r\n", b"\n.\n"):
            i = buf.find(marker)
            if i >= 0 and (best < 0 or i < best):
                best = i
                best_len = len(marker)
        if best < 0:
            return -1, 0
        # The body keeps the LF that precedes the dot line.
        return best + best_len, best + 1

    def _cut_tail(self, buf: bytes) -> int:
        """How many bytes at the end could start an end-of-data line.

        Every proper prefix of the end markers, strict and lenient, is held
        back, a lone final LF included: a marker is then always seen whole,
        wherever the sender split its segments.
        """
        if buf[-1:] not in _TAIL_LAST_BYTES:
            return 0  # most segments: no marker can start in the last bytes
        if self.raw_bytes == 0 and buf in (b".", b".\r"):
            return len(buf)  # an empty message whose end was cut short
        for tail in (b"\r\n.\r", b"\r\n.", b"\r\n", b"\n.\r", b"\n.", b"\r", b"\n"):
            if buf.endswith(tail):
                return len(tail)
        if self._at_line_start and buf in (b".", b".\r"):
            return len(buf)
        return 0

    def _scan_strict(self, buf: bytes, seen: int) -> tuple[int, int, int]:
        """One pass over the dot lines of a CRLF body.

        Returns where the end-of-data line ends (-1 if ``buf`` has none),
        the body bytes before it (the CRLF ahead of the dot line included;
        without an end, all but what ``_cut_tail`` holds back), and how many
        LF "." pairs those bytes hold: the stuffed dots.

        Dot lines are also where smuggling hides: LF "." LF, or LF "." CRLF
        after a bare LF, is no end for a strict server and an end for a
        lenient one; each is counted and the first remembered. ``buf``
        starts at stream offset ``raw_bytes``; its first ``seen`` bytes were
        scanned last time (held back then), so only shapes ending after them
        count.
        """
        if self.raw_bytes == 0 and buf.startswith(b".\r\n"):
            return 3, 0, 0  # an empty message: the first line is the end
        stuffed = 0
        last = -1
        i = find_dot_line(buf, 0)
        while i >= 0:
            after = buf[i + 2 : i + 4]
            if after == b"\r\n":
                before = buf[i - 1] if i else self._last_counted
                if before != 0x0D:
                    if i + 4 > seen:
                        self._bare_lf_dot_line(buf, i, i + 4)
                elif i:
                    # CRLF "." CRLF: the end. The body keeps the CRLF.
                    return i + 4, i + 1, stuffed
            elif after[:1] == b"\n" and i + 3 > seen:
                self._bare_lf_dot_line(buf, i, i + 3)
            stuffed += 1
            last = i
            i = find_dot_line(buf, i + 2)
        body_len = len(buf)
        if buf[-1:] in _TAIL_LAST_BYTES:  # most segments end in none of them
            body_len -= self._cut_tail(buf)
        if last >= 0 and last + 2 > body_len:
            stuffed -= 1  # the last dot line starts in the bytes held back
        return -1, body_len, stuffed

    def _bare_lf_dot_line(self, buf: bytes, i: int, end: int) -> None:
        self.bare_lf_dot_lines += 1
        self._note_bare_lf_end(buf, i, end)

    def _note_bare_lf_end(self, buf: bytes, i: int, end: int) -> None:
        """Remember the first such line: where the message would end there."""
        if self._lenient_size is not None and self._lenient_at <= self.raw_bytes + i:
            return
        kept = buf[: i + 1]
        dots = self.stuffed_dots + kept.count(b"\n.")
        if self.raw_bytes == 0 and buf[:1] == b".":
            dots += 1
        self._lenient_size = self.raw_bytes + len(kept) - dots
        self._lenient_at = self.raw_bytes + i
        self._after_from = self.raw_bytes + end
        self._after = bytearray()

    def _keep_after(self, counted: bytes) -> None:
        """Bytes after the lenient end, for replay as commands (bounded)."""
        start = self.raw_bytes - len(counted)  # raw_bytes already advanced
        skip = max(0, self._after_from - start)
        if skip < len(counted):
            self._after += counted[skip:]
        if len(self._after) > MAX_AFTER_BARE_LF_END:
            self._lenient_size = None  # too far back to matter

    def _collect_headers(self, body: bytes) -> None:
        buf = self._header_buf
        # Only the new bytes, and the three before them that a blank line
        # may span, are searched: a message sent a byte per segment would
        # otherwise have the whole block searched again for every byte.
        start = max(0, len(buf) - 3)
        buf += body[: MAX_HEADER_BYTES - len(buf)]
        if buf[:2] == b"\r\n" or buf[:1] == b"\n":
            # The body opens with an empty line: it has no header block.
            buf.clear()
            self._headers_done = True
            return
        for blank in (b"\r\n\r\n", b"\n\n"):
            i = buf.find(blank, start)
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
        buf = self._buf
        start = max(0, len(buf) - 3)  # as in DataBody._collect_headers
        buf += data[: MAX_HEADER_BYTES - len(buf)]
        ended = buf.find(b"\r\n\r\n", start) >= 0 or buf.find(b"\n\n", start) >= 0
        if ended or len(buf) >= MAX_HEADER_BYTES:
            self._done = True

    def headers(self) -> tuple[tuple[str, str], ...]:
        return parse_headers(bytes(self._buf))
