"""A tiny raw-socket SMTP client for things smtplib and swaks cannot do.

Used for BDAT/CHUNKING, LF-only line endings with lowercase verbs, and
cancelling an AUTH exchange with "*".  It sends exactly the bytes it is given
and reads whole (possibly multi-line) replies.
"""

from __future__ import annotations

import socket


class RawSMTP:
    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        if host not in ("127.0.0.1", "::1"):
            raise ValueError("raw client talks to loopback only")
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        self.transcript: list[tuple[str, bytes]] = []

    def _readline(self) -> bytes:
        while b"\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("server closed the connection")
            self.buf += data
        line, _, self.buf = self.buf.partition(b"\n")
        return line + b"\n"

    def reply(self) -> tuple[int, list[bytes]]:
        """Read one complete reply; return (code, lines)."""
        lines = []
        while True:
            line = self._readline()
            self.transcript.append(("S", line))
            lines.append(line)
            if len(line) < 4 or line[3:4] != b"-":
                return int(line[:3]), lines

    def send(self, data: bytes) -> None:
        self.transcript.append(("C", data))
        self.sock.sendall(data)

    def cmd(self, line: bytes, expect: int | None = None) -> int:
        """Send one command line (caller supplies the line ending)."""
        self.send(line)
        code, lines = self.reply()
        if expect is not None and code != expect:
            raise RuntimeError(f"{line!r} -> {b''.join(lines)!r}, wanted {expect}")
        return code

    def close(self) -> None:
        self.sock.close()
