"""AUTH (RFC 4954) payload handling: usernames out, passwords never kept.

Only the username is ever extracted. Decoded buffers that hold a password are
local to these functions and dropped before they return; nothing here logs.
"""

from __future__ import annotations

import base64
import binascii

from analysis.smtp.syntax import wire_text

REDACTED = "[redacted]"


def b64decode(payload: str) -> bytes | None:
    """Strict base64 (RFC 4954 4): None when the text is not valid base64."""
    try:
        return base64.b64decode(payload.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None


def plain_user(payload: str) -> str | None:
    """The identity in a PLAIN response "authzid NUL authcid NUL passwd".

    RFC 4616 2: the authentication identity (authcid) is the user who proves
    the password; the authorization identity is only who to act as. Returns
    authcid, or authzid when authcid is empty.
    """
    raw = b64decode(payload)
    if raw is None:
        return None
    parts = raw.split(b"\x00")
    if len(parts) < 3:
        return None
    authzid, authcid = parts[0], parts[1]
    return wire_text(authcid or authzid)


def login_user(payload: str) -> str | None:
    """The username sent in answer to LOGIN's "Username:" challenge."""
    raw = b64decode(payload)
    return None if raw is None else wire_text(raw)


def challenge_text(reply_text: str) -> str | None:
    """The decoded text of a 334 challenge, e.g. "Username:" for LOGIN."""
    raw = b64decode(reply_text.strip())
    return None if raw is None else wire_text(raw)


def redact_auth_argument(argument: str) -> str:
    """Keep the mechanism of an AUTH argument and hide any initial response.

    RFC 4954 4: "AUTH mechanism [initial-response]"; "=" stands for an empty
    initial response and is harmless to show.
    """
    mechanism, _, initial = argument.partition(" ")
    initial = initial.strip()
    if not initial or initial == "=":
        return argument.strip()
    return f"{mechanism} {REDACTED}"
