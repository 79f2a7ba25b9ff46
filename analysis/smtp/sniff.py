"""Other protocols that turn up on SMTP ports, told apart by their first bytes.

Only openings that no SMTP peer can send are recognised, so a real SMTP
session is never mistaken for something else: a server greeting starts with
three digits (RFC 5321 4.2), and no SMTP verb is an HTTP method.
"""

from __future__ import annotations

import re

_HTTP_REQUEST = re.compile(
    rb"(GET|POST|HEAD|PUT|DELETE|OPTIONS|CONNECT|PATCH|TRACE) \S+ HTTP/\d"
)
_SERVER_OPENINGS: tuple[tuple[bytes, str], ...] = (
    (b"SSH-", "SSH"),  # RFC 4253 4.2
    (b"HTTP/", "HTTP"),
    (b"* OK", "IMAP"),  # RFC 9051 7.1.1
    (b"+OK", "POP3"),  # RFC 1939 4
)


def client_protocol(first: bytes) -> str | None:
    """The protocol a client's first bytes belong to, if not SMTP."""
    if first.startswith(b"SSH-"):
        return "SSH"
    if _HTTP_REQUEST.match(first):
        return "HTTP"
    return None


def server_protocol(first: bytes) -> str | None:
    """The protocol a server's first bytes belong to, if not SMTP."""
    for opening, name in _SERVER_OPENINGS:
        if first.startswith(opening):
            return name
    return None
