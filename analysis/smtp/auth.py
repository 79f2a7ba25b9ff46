"""AUTH (RFC 4954) payload handling: usernames out, passwords never kept.

Only the username is ever extracted. Decoded buffers that hold a password are
local to these functions and dropped before they return; nothing here logs.
"""

from __future__ import annotations

import base64
import binascii
import re

from analysis.smtp.syntax import BASE64_LINE, wire_text

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


def cram_user(payload: str) -> str | None:
    """The username of a CRAM-MD5 response, "user SP digest" (RFC 2195 2).

    The digest, 32 lower-case hex digits, is an HMAC of the challenge keyed
    by the password: no secret to show, but a password can be guessed from
    it, so it is never kept. A response of any other shape (a password sent
    by mistake, say) reveals no user.
    """
    raw = b64decode(payload)
    if raw is None:
        return None
    user, _, digest = raw.rpartition(b" ")
    if not user or len(digest) != 32 or digest.strip(b"0123456789abcdef"):
        return None
    return wire_text(user)


def mechanism_of(argument: str) -> str:
    """The SASL mechanism an AUTH argument names, in upper case.

    SASL names are ASCII (RFC 4422 3.1): a word that is not is kept as sent,
    since str.upper reads Unicode, where "plain" with a dotless i is PLAIN,
    a mechanism the server would not take it for (found in review).
    """
    word = argument.split(None, 1)[0] if argument.strip() else ""
    return word.upper() if word.isascii() else word


def decoded_secret(payload: str) -> str | None:
    """What a base64 ``payload`` hides, as a server may echo it decoded:
    the password of a PLAIN response (after its last NUL), the token of
    an OAUTHBEARER or XOAUTH2 one, or the whole of any other (a LOGIN
    password). None when it is not base64, nor a
    PLAIN response in the URL-safe alphabet, without its padding or glued
    after other base64 (``is_plain_response``), or hides nothing
    printable. Other text is not decoded so leniently: what it gave would
    be noise to scrub the replies of. A PLAIN response is looked for
    first, for base64 decodes a glued one (found in review: "x<response>")
    to noise without a complaint."""
    raw = _plain_response(payload.strip())
    if raw is None:
        raw = b64decode(payload)
    if raw is None:
        return None
    token = _bearer_token(raw)
    if token is not None:
        return wire_text(token) or None
    # NULs after the password are a client's slip, not its end.
    secret = wire_text(raw.rstrip(b"\x00").rpartition(b"\x00")[2]).strip()
    return secret or None


def _bearer_token(raw: bytes) -> bytes | None:
    """The token of an OAUTHBEARER or XOAUTH2 response, "... ^Aauth=Bearer
    <token>^A^A" (RFC 7628 3.1; Google's XOAUTH2 alike), for a server may
    echo it alone (found in review: "535 5.7.8 token ya29.<token>
    rejected" kept it, the whole response decoded being withheld)."""
    if raw.startswith(b"auth="):
        at = len(b"auth=")
    else:
        found = raw.find(b"\x01auth=")
        if found < 0:
            return None
        at = found + len(b"\x01auth=")
    value = raw[at:].split(b"\x01", 1)[0].strip()
    # "Bearer <token>" (RFC 6750 2.1): the scheme is no secret.
    return value.split(None, 1)[-1] if value else None


# What a final reply to AUTH says of the attempt (RFC 4954 4 and 6).
SUCCESS = "success"  # 235: accepted
FAILURE = "failure"  # 535 5.7.8: the credentials are invalid
REFUSED = "refused"  # refused before, or without, judging the credentials


# 2xx replies that cannot accept credentials: a greeting and the reply to
# QUIT. Paired with an AUTH, they answer another line (found in a new user's
# trial: a capture cut by its snap length lost the 535, and the 221 to QUIT
# made the failed login a success).
_NO_VERDICT = frozenset({220, 221})


def outcome(code: int, enhanced: str | None) -> str:
    """``SUCCESS``, ``FAILURE`` or ``REFUSED`` for a final reply to AUTH.

    Only a verdict on the credentials is a failure: 535, or any refusal
    with the enhanced code x.7.8 "authentication credentials invalid"
    (RFC 4954 6); a success is a 2xx other than 220 and 221. The other
    refusals say nothing of a password: 504
    mechanism unknown, 534 too weak, 538 encryption required, 432 and 454
    temporary, 500 and 501 syntax or bad base64, 503 out of sequence (an
    AUTH after one that succeeded, RFC 4954 4), 530 and whatever else a
    server says. A cancelled exchange (the client's "*") is the caller's
    to tell apart: its reply is a 501 like a syntax error's.
    """
    if code // 100 == 2 and code not in _NO_VERDICT:
        return SUCCESS
    if code == 535 or (enhanced is not None and enhanced[1:] == ".7.8"):
        return FAILURE
    return REFUSED


def challenge_text(reply_text: str) -> str | None:
    """The decoded text of a 334 challenge, e.g. "Username:" for LOGIN."""
    raw = b64decode(reply_text.strip())
    return None if raw is None else wire_text(raw)


def redact_auth_argument(argument: str) -> str:
    """Keep the mechanism of an AUTH argument and hide any initial response.

    RFC 4954 4: "AUTH mechanism [initial-response]"; "=" stands for an empty
    initial response and is harmless to show.
    """
    # Split on any white space: "AUTH<TAB>PLAIN<TAB>payload" is seen too.
    parts = argument.split(None, 1)
    mechanism = parts[0] if parts else ""
    if mechanism and not _is_mechanism(mechanism):
        # "PLAIN:<base64>" and the like: no mechanism, a secret perhaps.
        mechanism = hide_secrets(mechanism)
    elif _one_case_base64(mechanism):
        # A response where the mechanism belongs, of letters of one case
        # (found in review: "AUTH TUFTVEVS", the base64 of MASTER, was
        # shown); no registered mechanism name is such base64.
        mechanism = REDACTED
    initial = parts[1].strip() if len(parts) > 1 else ""
    if not initial or initial == "=":
        return " ".join(filter(None, (mechanism, initial)))
    return f"{mechanism} {REDACTED}"


def hide_secrets(text: str, hidden: list[str] | None = None) -> str:
    """``text`` with every run of characters that could be SASL data hidden.

    For what a client sends that is not a command the parser knows. A
    mangled AUTH ("\\x00AUTH PLAIN ...", "AUTH=PLAIN:...", a byte-order
    mark before the verb) is no command to the parser, and servers differ
    in what they make of it, but its initial response is a password all the
    same, inside a word or standing alone, in base64 or its URL-safe variant
    (RFC 4648 4, 5). A run of at least eight such characters with a digit,
    a sign or both letter cases is hidden. Words with a dot or an at sign,
    which base64 never holds, are host names, addresses and versions, and
    are kept; so are other words and long numbers. The runs hidden are
    added to ``hidden``, for the server's echo of them.
    """

    def hide(run: re.Match[str]) -> str:
        token = run.group()
        if _looks_secret(token):
            if hidden is not None:
                hidden.append(token)
            return REDACTED
        return token

    def word(found: re.Match[str]) -> str:
        token = found.group()
        if "." in token or "@" in token:
            return token
        return _RUN.sub(hide, token)

    return _WORD.sub(word, text)


_WORD = re.compile(r"[^\s\"'<>]+")
_RUN = re.compile(r"[A-Za-z0-9+/_-]{6,}={0,2}")


def _looks_secret(token: str) -> bool:
    if len(token) < 8 or token.isdecimal() or token.upper() in _KEYWORDS:
        return False
    # A capitalised word ("Authentication") counts as mixed case too: a
    # password is shaped like one as often (found in review: "PASS
    # Fakepassword" was shown once such words were let through).
    return any(c in token for c in "0123456789+/=_-") or (
        token != token.upper() and token != token.lower()
    )


# SMTP service extension keywords of eight characters and more, which a
# client may send as words (RFC 6152, 6531, 3030, 2920 and others): no
# secrets, though some hold digits.
_KEYWORDS = frozenset(
    {
        "8BITMIME",
        "SMTPUTF8",
        "BINARYMIME",
        "CHUNKING",
        "PIPELINING",
        "STARTTLS",
        "ENHANCEDSTATUSCODES",
        "DELIVERBY",
        "REQUIRETLS",
        "XFORWARD",
        "FUTURERELEASE",
        "MT-PRIORITY",
        "CRAM-MD5",
        "DIGEST-MD5",
        "SCRAM-SHA-1",
        "SCRAM-SHA-256",
    }
)


def _is_mechanism(word: str) -> bool:
    """A SASL mechanism name (RFC 4422 3.1: upper-case letters, digits,
    hyphens and underscores, 20 at most), in one case as clients send it
    ("CRAM-MD5", "plain"); base64 mixes the cases."""
    return bool(_MECHANISM.fullmatch(word)) and (
        word == word.upper() or word == word.lower()
    )


_MECHANISM = re.compile(r"[A-Za-z0-9_-]{1,20}")


def looks_like_sasl_data(text: str) -> bool:
    """A line that could be a base64 SASL answer (a password, perhaps).

    One token of the base64 alphabet (RFC 4648 4) with a digit, "+", "/",
    "=" or both letter cases: what encoded credentials look like and SMTP
    verbs (one case, letters only) do not. Or letters of one case that
    are base64 all the same: see ``_one_case_base64``.
    """
    token = text.strip()
    if not BASE64_LINE.fullmatch(token):
        return False
    if any(c in token for c in "0123456789+/="):
        return True
    if token != token.upper() and token != token.lower():
        return True
    return _one_case_base64(token)


def _one_case_base64(token: str) -> bool:
    """Whether ``token``, letters of one case, is the base64 of text.

    The base64 of a password of capitals may be capitals alone: MASTER is
    TUFTVEVS, PEPPER UEVQUEVS, DECADE REVDQURF (found in review: each was
    kept as a command verb where the capture began inside an AUTH, or
    after a refused one). Such a token is taken for one when it is whole
    quanta of four characters, eight at least, that decode to printable
    text. Words seldom are: no SMTP verb or extension keyword, nor any
    POP3, IMAP, HTTP or FTP command (tests/analysis/test_parser.py tries
    them), and about one word of eight random capitals in a hundred.
    """
    if len(token) < 8 or len(token) % 4:
        return False
    raw = b64decode(token)
    return raw is not None and _printable(raw)


def hide_plain_responses(text: str, hidden: list[str]) -> str:
    """``text`` with every run of base64 in it that is a PLAIN response
    hidden, and added to ``hidden``.

    For the arguments of commands, where a client confused or careless may
    put one (found in review: "EHLO <response> c.example", "RSET
    <response>", "MAIL FROM:<a@b> AUTH PLAIN <response>"). Unlike
    ``hide_secrets`` this goes by what a run decodes to, not by its look:
    names and addresses, which decode to no such shape, are kept (the
    EHLO name DESKTOP-7G3K2LM of a Windows client, which ``hide_secrets``
    would hide), while a response of letters of one case is found, or one
    inside a word with a dot.
    """
    if not _may_hold_nul(text):
        return text  # most arguments: a few tests spare the decoding

    def hide(run: re.Match[str]) -> str:
        token = run.group()
        if _NUL_BASE64.search(token) is None or not is_plain_response(token):
            return token
        hidden.append(token)
        return REDACTED

    return _BASE64_RUN.sub(hide, text)


# A run of the base64 alphabet or its URL-safe variant (RFC 4648 4, 5), of
# four characters at least: the shortest PLAIN response that holds a
# password, "NUL NUL p", is one group of four.
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/_-]{4,}={0,2}")


def _may_hold_nul(text: str) -> bool:
    """Whether ``text`` may hold the base64 of a NUL byte, in either
    alphabet (_NUL_BASE64). Its eight zero bits span two characters: "A"
    and one of A to P for a NUL that begins a group of three bytes, one
    of A, Q, g, w and one of A to D for one in its middle, one of sixteen
    and "A" for one that ends it. Each pair holds an A, B, C or D, which
    most arguments (lower-case names and addresses, NOTIFY=NEVER) do not:
    four substring tests pass them over, cheaper than the search (found
    timing a harvest of 100,000 RCPTs, read 45 % slower when the runs of
    every address were decoded).
    """
    if "A" not in text and "B" not in text and "C" not in text and "D" not in text:
        return False
    return _NUL_BASE64.search(text) is not None


_NUL_BASE64 = re.compile(r"A[A-P]|[AQgw][A-D]|[AEIMQUYcgkosw048]A")


def _any_b64decode(token: str) -> bytes | None:
    """``token`` decoded as base64 or its URL-safe variant (RFC 4648 4, 5),
    its "=" padding left out or not, as URL-safe encoders often leave it
    out; else strictly: None when any character is outside the alphabet.
    Lenient for what a client put where no SASL answer belongs: no server
    decodes it there, and whether it is one is for its look to say."""
    if len(token) % 4 == 1 or not token.isascii():
        return None  # no base64 is that long, or holds such characters
    if "-" in token or "_" in token:
        token = token.translate(_URL_SAFE)
    try:
        # base64.b64decode(validate=True) checks the alphabet with a
        # regular expression, which took most of the time.
        return binascii.a2b_base64(token + "=" * (-len(token) % 4), strict_mode=True)
    except (binascii.Error, ValueError):
        return None


_URL_SAFE = str.maketrans("-_", "+/")


def is_plain_response(token: str) -> bool:
    """Whether ``token`` decodes, as base64 or its URL-safe variant (RFC
    4648 4, 5), to the shape of a PLAIN response, "authzid NUL authcid NUL
    passwd" (RFC 4616 2): two NULs, and a password after the second (NULs
    after it too, from a client that ends it with one), the password and
    the identity printable text (``_plain_shape``). Other binary holds
    more NULs, or fewer: the EHLO name "OBLAHOBLAH..." of a public capture
    decodes to dozens. The "=" padding may be left out (``_any_b64decode``):
    a password is one all the same."""
    return _plain_response(token) is not None


def _plain_response(token: str) -> bytes | None:
    """What ``token`` decodes to when it is a PLAIN response
    (``is_plain_response``), else None.

    A response glued after other base64 (found in review: "EHLO
    x<response>", "MAIL FROM:<a@b> XYZ<response>") may start inside a
    group of four, and the run then decodes to noise: it is decoded again
    from its second, third and fourth characters, one of which puts the
    response on a group's start whatever the length of what came before.
    That decodes into the authzid, which is not judged. Three more tries
    find more noise, so the identity and the password must add up to six
    bytes there: with two, one Windows server name in 7,400 ("WIN-" and
    11 random capitals and digits) was taken for a response glued so,
    with six one in 100,000."""
    raw = _any_b64decode(token)
    if raw is not None and _plain_shape(raw, 2):
        return raw
    if len(token.rstrip("=")) < _GLUED_LEAST:
        return None  # most runs: too short to hold a response after another
    for skip in (1, 2, 3):
        part = token[skip:].rstrip("=")
        raw = _any_b64decode(part[:-1] if len(part) % 4 == 1 else part)
        if raw is not None and _plain_shape(raw, 6):
            return raw
    return None


# The shortest run a response glued after other base64 fits in: one
# character before it, and eleven for the eight bytes of two NULs and six of
# identity and password (found in review: three more decodes of every run
# of four characters or more made reading arguments full of capitals, as
# Windows names and bounce addresses are, 40 % slower).
_GLUED_LEAST = 12


def _plain_shape(raw: bytes, least: int) -> bool:
    """Whether ``raw`` is "authzid NUL authcid NUL passwd" (RFC 4616 2),
    NULs after the password allowed: an identity (the authcid, or the
    authzid where it is empty) and a password, each printable UTF-8, as
    RFC 4616 has them, of ``least`` bytes together at least. Two NULs
    alone are no proof: about one Windows server name in 660 ("WIN-" and
    11 random capitals and digits) decodes to two NULs among noise (found
    in review: "EHLO WIN-AZUKAJMAB6F" was hidden); one in 25,000 passes
    this test."""
    parts = raw.rstrip(b"\x00").split(b"\x00")
    if len(parts) != 3:
        return False
    authzid, authcid, passwd = parts
    identity = authcid or authzid
    return (
        len(identity) + len(passwd) >= least
        and _printable(identity)
        and _printable(passwd)
    )


def _printable(text: bytes) -> bool:
    """Whether ``text`` is UTF-8 of printable characters, one at least."""
    try:
        return bool(text) and text.decode("utf-8").isprintable()
    except UnicodeDecodeError:
        return False
