"""From one connection's stream and SMTP events to the rows of the tables.

``SessionBuilder`` owns the SMTP parser of one TCP connection. It turns the
parser's events into a session record, its mail transactions, one row per
client command and its anomalies, and hands them over as a ``SessionResult``
when the connection closes. Transaction rules follow RFC 5321 3.3: a MAIL
starts a transaction, RSET or a new MAIL abandons it, the reply to the end of
the message content ends it.

A transaction's ``end`` is when its ``status`` got its value: the reply
that refused its MAIL, DATA or BDAT or gave the verdict on its message, its
RSET, or the accepted EHLO, HELO, LHLO or new MAIL that replaced it. One
still open when the connection closed (QUIT, FIN, RST, idle, end of
capture, an interrupted run) has status incomplete and no end: nothing on
the wire ended it. ``message_complete`` is None until message content is
sent (a 354 to DATA, or a BDAT chunk), then false once part of it is found
missing or the message never reaches its end.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from analysis.communityid import community_id
from analysis.handshake import HandshakeBuilder
from analysis.records import (
    AnomalyRecord,
    CommandRecord,
    SessionRecord,
    SessionResult,
    TlsRecord,
    TransactionRecord,
)
from analysis.smtp import auth
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
from analysis.smtp.parser import (
    MAX_PENDING,
    TRANSACTION_RESETS,
    SmtpParser,
    without_sent,
)
from analysis.smtp.syntax import (
    KNOWN_VERBS,
    decoded_words,
    first_address,
    parse_bdat,
    parse_path,
    queue_id,
)
from analysis.tls.decrypt import DecryptedChunk
from capture.stream import Connection, Direction

NS = 1_000_000_000
MAX_ANOMALIES_PER_KIND = 100  # rows of one kind per session
# Command rows per session. A row costs about 0.6 KB of memory until its
# session closes and may stand for one byte of input (a bare LF is an empty
# command): 1 MiB of them held 1,048,577 rows and 680 MiB. The busiest real
# sessions give a few thousand (a thousand recipients per message is
# Postfix's default limit). Past MAX_COMMAND_ROWS only the rows a detector
# reads are kept, so that padding a session with harmless commands hides
# nothing from them (see _read_by_detectors); past MAX_KEPT_ROWS none, so
# that a flood of those commands is bounded too (1 MiB of QUIT and bare LF
# in turn, 50,000 rows, peaked at 75 MiB).
MAX_COMMAND_ROWS = 10_000
MAX_KEPT_ROWS = 50_000
# Transaction rows per session, for the same reason: MAIL, RCPT and RSET in
# turn, 400,000 times (83 MB of capture), held 1.5 GB until the session
# closed. As many as MAIL commands may have rows (MAX_KEPT_ROWS). Past it
# a transaction is counted in the session and followed as any other, but
# gets no row, and is let go once it has ended and its commands have their
# replies (SessionBuilder._answered).
MAX_TRANSACTION_ROWS = MAX_KEPT_ROWS
# RCPT addresses listed in a session's transactions (rcpt_to and rcpt_codes),
# for the same reason: an address costs about 100 bytes until its session
# closes, and twice that as it is encoded, and a RCPT line can follow the
# last within 30 bytes of capture. One transaction of a million RCPTs (a 58
# MB capture) peaked at 347 MiB. Past the cap a RCPT is still counted in its
# transaction (rcpts_total, rcpts_accepted) and its command row is kept for
# the detectors as any other, but its address and code are not listed.
MAX_LISTED_RCPTS = MAX_KEPT_ROWS
_UNLISTED = -1  # the _rcpt_slot of a RCPT past MAX_LISTED_RCPTS
# Characters of wire text a session's rows keep in full: command arguments
# and reply texts, reverse-paths, ESMTP parameters, recipients and message
# header values. The row caps count rows, and a row may hold a 16 KB line
# or a reply of 256 such lines: replies of 4 MB held 321 MB for 96 MB of
# capture, 16 KB MAIL arguments 414 MB for 47 MB (found in review). Past it
# each such value keeps its first _TEXT_CUT characters and says how long
# it was.
MAX_ROW_TEXT = 8 * 1024 * 1024
_TEXT_CUT = 256
# What waits for a reply (_txn_of, _rcpt_slot, _displaced) is looked through
# for commands the parser let go unanswered once it holds this many entries:
# MAIL pipelined with no reply, 21 MB of it, held 983 MB in transactions
# kept only for replies that could never come.
_FORGET_PAST = MAX_PENDING + MAX_PENDING // 4
# Commands whose rows the detectors read: AUTH outcomes, RCPTs and their
# refusals, MAIL for bulk sending, HELO names, what follows QUIT.
# Closes where the capture saw the whole connection: FIN, RST, or its
# 4-tuple taken by a new connection. Idle, end of capture, an interrupt or
# eviction leave open what came after.
_ENDED_BY_PEERS = frozenset({"fin", "rst", "reused"})

_NO_GREETING_SENT = "the server's first reply answers a command: it sent no greeting"

_HELO_VERBS = frozenset({"EHLO", "HELO", "LHLO"})
_DETECTED_VERBS = _HELO_VERBS | {"AUTH", "MAIL", "RCPT", "QUIT"}
# Commands that belong to a transaction (SessionBuilder._txn_of).
_TRANSACTION_VERBS = frozenset({"MAIL", "RCPT", "DATA", "BDAT"})
# Replies that only SASL data gets (RFC 4954 4, 6): challenge, success,
# failure, mechanism too weak, encryption required.
_SASL_CODES = frozenset({334, 235, 535, 534, 538})
# Replies that only an AUTH exchange gets (RFC 4954 6): given to SASL data
# in a capture that began after the server's last challenge, they are that
# exchange's outcome.
_AUTH_OUTCOMES = frozenset({235, 535})
# Past the row caps, commands whose reply changes nothing in the session
# (a withheld line included: see SmtpParser), so none waits for it; and
# what an unknown verb waits with instead of its row.
_REPLY_UNREAD = frozenset({"NOOP", "RSET", "VRFY", "EXPN", "HELP", "[redacted]"})
_UNKNOWN_VERB = CommandRecord("", 0, "", "")
# Headers kept as their transaction's columns, the first of each name:
# those Zeek's smtp.log keeps (user_agent from whichever of its three names
# comes first).
_HEADER_COLUMNS = {
    "date": "date",
    "from": "from_",
    "to": "to",
    "cc": "cc",
    "subject": "subject",
    "message-id": "message_id",
    "reply-to": "reply_to",
    "in-reply-to": "in_reply_to",
    "user-agent": "user_agent",
    "x-mailer": "user_agent",
    "x-user-agent": "user_agent",
}

# Python 3.11 reads an Enum member through EnumType.__getattr__, a few
# hundred nanoseconds a read: the check made for every segment uses this.
_CLIENT: Final = Direction.CLIENT


def session_id(conn: Connection) -> str:
    """A stable id from the connection's first packet time and 4-tuple.

    Stable means the same connection gets the same id however the input is
    split into files or across worker processes.
    """
    key = (
        f"{conn.first_ts}|{conn.client_ip}|{conn.client_port}|"
        f"{conn.server_ip}|{conn.server_port}"
    )
    digest = hashlib.blake2b(key.encode(), digest_size=10).digest()
    return "S" + base32(digest)


# Every pair of RFC 4648 base 32 digits, lower case: 10 bits per lookup.
_BASE32_PAIRS: Final = [
    a + b
    for a in "abcdefghijklmnopqrstuvwxyz234567"
    for b in "abcdefghijklmnopqrstuvwxyz234567"
]


def base32(digest: bytes) -> str:
    """``base64.b32encode(digest).decode().lower()`` for a 10-byte digest.

    Made for every session, so for every SYN of a flood: base64's own runs
    in Python and took 3.3 µs where this takes 1.5.
    """
    n = int.from_bytes(digest, "big")
    pairs = _BASE32_PAIRS
    return (
        pairs[n >> 70] + pairs[(n >> 60) & 1023] + pairs[(n >> 50) & 1023]
        + pairs[(n >> 40) & 1023] + pairs[(n >> 30) & 1023]
        + pairs[(n >> 20) & 1023] + pairs[(n >> 10) & 1023] + pairs[n & 1023]
    )  # fmt: skip


def _held_argument(verb: str, argument: str) -> str:
    """What a command without a row keeps of a long ``argument`` while it
    waits for its reply: a valid BDAT's chunk as ``parse_bdat`` reads it,
    else the start and the length, as a row past MAX_ROW_TEXT keeps it
    (which no BDAT syntax accepts either, so an invalid one stays invalid).
    """
    if verb == "BDAT":
        chunk = parse_bdat(argument)
        if chunk is not None:
            return f"{chunk[0]} LAST" if chunk[1] else str(chunk[0])
    return _cut(argument)


def _cut(text: str) -> str:
    """``text`` as a value past MAX_ROW_TEXT shows it: its start, its length."""
    return f"{text[:_TEXT_CUT]}... [{len(text):,} characters]"


def _offers_starttls(reply: Reply) -> bool:
    # RFC 3207 4: the EHLO keyword is STARTTLS, with no parameters.
    return any(line.split(" ", 1)[0].upper() == "STARTTLS" for line in reply.lines[1:])


# SessionBuilder._decrypted of a session with nothing to decrypt; never
# filled, since only decrypted chunks given at the start are ever queued.
_NOTHING_DECRYPTED: deque[DecryptedChunk] = deque(maxlen=0)


class _AuthAttempt:
    """One AUTH command, while its outcome is awaited."""

    __slots__ = ("cancelled", "index", "mechanism", "user")

    def __init__(self, index: int, mechanism: str | None) -> None:
        self.index = index  # its command index
        self.mechanism = mechanism or None  # None: not named, or not seen
        self.user: str | None = None  # as PLAIN and LOGIN reveal it
        self.cancelled = False  # the client answered "*"


# Which AUTH of a session its row tells of (see SessionBuilder._show_auth):
# the higher rank, and of equal ranks the later.
_AUTH_RANK: Final = {auth.SUCCESS: 3, auth.FAILURE: 2}


def _seconds(later: int | None, earlier: int | None) -> float | None:
    if later is None or earlier is None:
        return None
    return (later - earlier) / NS


@dataclass(slots=True)
class _Deliveries:
    """What an LMTP message's replies said so far (see _on_delivery_reply)."""

    slots: list[int]  # rcpt_to positions of the accepted RCPTs, in order
    delivered: Reply | None = None  # the first success
    refused: Reply | None = None  # the first refusal


class SessionBuilder:
    """Builds the records of one connection. Feed it in capture order."""

    # One builder per open connection: no instance dict (see SmtpParser).
    __slots__ = (
        "_anomaly_kinds",
        "_auth",
        "_auth_rank",
        "_capped",
        "_caught",
        "_decrypted",
        "_displaced",
        "_handshake",
        "_helo_accepted",
        "_inner",
        "_inside",
        "_last_verb",
        "_lmtp",
        "_message_open",
        "_message_start",
        "_message_txn",
        "_pipelined_kept",
        "_rcpt_slot",
        "_rcpts_capped",
        "_rcpts_listed",
        "_refused_open",
        "_rows",
        "_settled_transactions",
        "_text",
        "_transactions_capped",
        "_txn",
        "_txn_of",
        "_unkept",
        "anomalies",
        "commands",
        "conn",
        "parser",
        "session",
        "transactions",
    )

    def __init__(
        self,
        conn: Connection,
        implicit_tls_ports: frozenset[int],
        decrypted: Sequence[DecryptedChunk] = (),
    ) -> None:
        self.conn = conn
        sid = session_id(conn)
        self.session = SessionRecord(
            session_id=sid,
            start=conn.first_ts,
            end=conn.first_ts,
            client_ip=conn.client_ip,
            client_port=conn.client_port,
            server_ip=conn.server_ip,
            server_port=conn.server_port,
            community_id=community_id(
                conn.client_ip, conn.client_port, conn.server_ip, conn.server_port
            ),
        )
        # Caught after its start (no SYN, no SYN-ACK): the capture did not
        # see the greeting, so a client that talks before the first reply
        # seen did not talk first (found in review, on connections evicted
        # under a flood and caught again).
        self._caught = conn.syn_ts is None and conn.synack_ts is None
        self.parser = SmtpParser(
            implicit_tls=conn.server_port in implicit_tls_ports, caught=self._caught
        )
        self.transactions: list[TransactionRecord] = []
        self.commands: list[CommandRecord] = []
        self.anomalies: list[AnomalyRecord] = []
        self._rows: dict[int, CommandRecord] = {}  # command index -> row
        # Past MAX_COMMAND_ROWS: commands awaiting a reply (see _unkept_row).
        self._unkept: OrderedDict[int, CommandRecord] | None = None
        self._last_verb = ""  # the command before, for what follows QUIT
        # A pipelined command has a row since the last HELO: the protocol
        # detector reads only the first (PIPELINING used unoffered).
        self._pipelined_kept = False
        self._capped = 0  # which caps a command missed its row by: see _unkept_row
        self._transactions_capped = False  # see MAX_TRANSACTION_ROWS
        self._txn: TransactionRecord | None = None  # the open transaction
        self._txn_of: dict[int, TransactionRecord] = {}  # command -> txn
        self._rcpt_slot: dict[int, int] = {}  # RCPT command -> rcpt index
        self._rcpts_listed = 0  # see MAX_LISTED_RCPTS
        self._text = 0  # characters of long values kept, see MAX_ROW_TEXT
        self._rcpts_capped = False
        self._message_txn: TransactionRecord | None = None
        self._message_start = 0
        self._auth: _AuthAttempt | None = None  # the last AUTH, until answered
        self._auth_rank = 0  # _AUTH_RANK of the AUTH the session row shows
        # The replies to an LMTP message so far, while more are due.
        self._lmtp: _Deliveries | None = None
        # The transaction whose message content started and has not ended.
        self._message_open: TransactionRecord | None = None
        # A transaction whose DATA or BDAT command the server refused: its
        # status and end are set, but the server keeps it open (see
        # _on_command_reply), so a later verdict may still replace them.
        self._refused_open: TransactionRecord | None = None
        self._helo_accepted = False  # session.helo is a name the server took
        # MAIL or HELO command -> the transaction open when it was sent,
        # which it ends if accepted.
        self._displaced: dict[int, TransactionRecord] = {}
        self._anomaly_kinds: dict[str, int] = {}
        self._handshake: HandshakeBuilder | None = None
        # The SMTP inside TLS, when a key log decrypted it: its own parser,
        # fed the plaintext tshark recovered, in capture order.
        # A shared empty deque when there is nothing to decrypt (almost
        # always): an empty deque costs about 0.7 KB per open connection.
        self._decrypted = deque(decrypted) if decrypted else _NOTHING_DECRYPTED
        self._inner: SmtpParser | None = None
        self._inside = False  # the events being applied came from inside TLS
        self._settled_transactions = 0  # see settled()

    # Stream side ---------------------------------------------------------

    def data(self, direction: Direction, data: bytes, ts: int) -> None:
        if direction is _CLIENT:
            self.session.client_bytes += len(data)
            events = self.parser.feed_client(data, ts)
        else:
            self.session.server_bytes += len(data)
            events = self.parser.feed_server(data, ts)
        if events:  # most segments of a message body or of TLS make none
            self._apply(events)
        if self._inner is not None and self._decrypted:
            self._feed_decrypted(ts)

    def _feed_decrypted(self, until: int | None) -> None:
        """Hand the inner parser the plaintext recorded up to ``until``."""
        inner = self._inner
        assert inner is not None
        self._inside = True
        try:
            while self._decrypted and (until is None or self._decrypted[0].ts <= until):
                chunk = self._decrypted.popleft()
                self.session.tls_decrypted = True
                if chunk.from_client:
                    self._apply(inner.feed_client(chunk.data, chunk.ts))
                else:
                    self._apply(inner.feed_server(chunk.data, chunk.ts))
        finally:
            self._inside = False

    def gap(self, direction: Direction, size: int, ts: int) -> None:
        self.session.gaps += 1
        self.session.gap_bytes += size
        side = "client" if direction is _CLIENT else "server"
        self._add_anomaly(ts, "tcp_gap", f"{size} {side} bytes missing")
        if direction is _CLIENT:
            self._apply(self.parser.client_gap(size, ts))
        else:
            self._apply(self.parser.server_gap(size, ts))

    def tcp_anomaly(self, ts: int, kind: str, detail: str) -> None:
        self._add_anomaly(ts, kind, detail)

    def close(self, ts: int, reason: str) -> SessionResult:
        """The connection closed; ``ts``: its last packet (``StreamClosed``).

        What is settled only now is stamped with ``ts``, the session's end,
        not with the moment of the close: a last line without its line end,
        the anomalies of the close (``no_reply``, ``message_incomplete``,
        ``not_smtp``), a TLS handshake's ``incomplete`` outcome. An open
        transaction is left without an end: the close did not end it on the
        wire (see the module's docstring).
        """
        self._apply(self.parser.close(ts))
        if (
            self._handshake is not None
            and not self._handshake.begun
            and reason in _ENDED_BY_PEERS
        ):
            # The 220 to STARTTLS came, then the connection ended without a
            # TLS byte either way: TLS was agreed but never used, which
            # counts as no TLS, as clear text after the 220 does.
            self._on_tls_abandoned()
        if self._inner is not None:
            self._feed_decrypted(None)
            self._inside = True
            self._apply(self._inner.close(ts))
            self._inside = False
        if self._message_open is not None:
            # A BDAT message without its LAST chunk, cut between chunks (the
            # parser ends one cut inside a chunk or a DATA body itself).
            self._message_open.message_complete = False
            self._message_open = None
        tls: list[TlsRecord] = []
        client_random = None
        if self._handshake is not None:
            tls.append(self._handshake.close(ts, self.session))
            for anomaly in self._handshake.anomalies:
                self._add_anomaly(anomaly.ts, anomaly.kind, anomaly.detail)
            client_random = self._handshake.client_random
        self._finish_session(ts, reason)
        return SessionResult(
            self.session,
            self.transactions,
            self.commands,
            self.anomalies,
            tls,
            client_random,
        )

    def settled(self) -> tuple[int, int]:
        """How many leading transactions and commands can no longer change.

        Live capture writes these rows before the session closes. A command
        row is final once its reply is in. A transaction is final once it
        has ended, is neither current (a refused MAIL stays current for the
        RCPTs after it) nor waiting aside or for its message's verdict, and
        no command sent so far awaits a reply (a pipelined RCPT's reply may
        still land in an ended transaction).
        """
        commands = 0
        for row in self.commands:
            if row.reply_code is None:
                break
            commands += 1
        if commands < len(self.commands):
            return self._settled_transactions, commands
        pending = {id(t) for t in self._displaced.values()}
        count = self._settled_transactions
        for txn in self.transactions[count:]:
            open_ = self._is_open(txn) or txn is self._txn or txn is self._message_txn
            if open_ or id(txn) in pending:
                break
            count += 1
        self._settled_transactions = count
        return count, commands

    # SMTP side -----------------------------------------------------------

    def _apply(self, events: list[SmtpEvent]) -> None:
        # The most frequent kinds first.
        for event in events:
            if isinstance(event, TlsBytesSeen):
                if self._handshake is not None and not self._inside:
                    ts, from_client, data, missing = event
                    self._handshake.data(from_client, data, missing, ts)
            elif isinstance(event, ReplySeen):
                self._on_reply(event)
            elif isinstance(event, CommandSeen):
                self._on_command(event)
            elif isinstance(event, MessageStarted):
                self._on_message_started(event)
            elif isinstance(event, MessageEnded):
                self._on_message_ended(event)
            elif isinstance(event, GreetingSeen):
                self._on_greeting(event)
            elif isinstance(event, AuthUserSeen):
                # The user of the AUTH just sent (the parser tells it on
                # the AUTH line or on the answer that follows), not the
                # session's: another AUTH may reveal another or none.
                if self._auth is not None:
                    self._auth.user = event.user
            elif isinstance(event, AuthResponseSeen):
                auth_attempt = self._auth
                if auth_attempt is not None and (
                    auth_attempt.index == event.command_index
                ):
                    auth_attempt.cancelled = event.cancelled
            elif isinstance(event, TlsStarted):
                self._on_tls(event)
            elif isinstance(event, TlsAbandoned):
                self._on_tls_abandoned()
            elif isinstance(event, AnomalySeen):
                if event.kind == "early_talker" and self._caught:
                    continue  # its first reply was never its greeting
                detail = event.detail
                if event.kind == "greeting_missing" and self.conn.syn_ts is not None:
                    # The capture holds the connection's start, so the
                    # greeting was not missed: the server sent none.
                    detail = _NO_GREETING_SENT
                self._add_anomaly(event.ts, event.kind, detail)

    def _on_greeting(self, event: GreetingSeen) -> None:
        self.session.greeting_code = event.reply.code
        self.session.greeting_text = event.reply.text
        start = self.conn.ack_ts or self.conn.synack_ts or self.conn.syn_ts
        self.session.greeting_delay_s = _seconds(event.ts, start)

    def _on_tls(self, event: TlsStarted) -> None:
        if self._inside:
            # STARTTLS inside TLS is refused by servers (RFC 3207 4.2);
            # one that said 220 anyway is worth a look.
            self._add_anomaly(event.ts, "starttls_inside_tls", "220 to STARTTLS in TLS")
            return
        self.session.tls = "implicit" if event.implicit else "starttls"
        if not event.handshake_seen:
            # Caught inside TLS: no handshake to read, no row for it, and
            # no key log entry could match it; when TLS began is not known.
            return
        self.session.tls_start = event.ts
        self._handshake = HandshakeBuilder(
            self.session.session_id, event.ts, event.implicit
        )
        if self._decrypted:
            self._inner = SmtpParser(
                after_starttls=not event.implicit,
                first_command_index=self.parser.commands_seen,
            )

    def _on_tls_abandoned(self) -> None:
        """Clear text came after the 220 to STARTTLS: no TLS after all."""
        if self._inside:
            return
        self.session.tls = "none"
        self.session.tls_start = None
        self._handshake = None
        self._inner = None

    def _on_command(self, event: CommandSeen) -> None:
        # The first fields by position and the rest set after: about half the
        # cost of all of them by keyword, once per command.
        row = CommandRecord(
            self.session.session_id, event.ts, event.verb, event.argument
        )
        row.pipelined = event.pipelined
        row.tls = self._inside
        self.session.commands += 1
        if len(self._txn_of) > _FORGET_PAST:
            self._forget_unanswerable()
        verb = event.verb
        kept = len(self.commands)
        if kept < MAX_COMMAND_ROWS or (
            kept < MAX_KEPT_ROWS and self._read_by_detectors(verb, row.pipelined)
        ):
            if len(row.argument) > _TEXT_CUT:
                row.argument = self._kept(row.argument, event.ts)
            self.commands.append(row)
            self._rows[event.command_index] = row
            self._pipelined_kept = self._pipelined_kept or row.pipelined
        else:
            self._unkept_row(event.command_index, row, event.ts)
        self._last_verb = verb

        if verb in TRANSACTION_RESETS and self._message_open is not None:
            # The message never got its LAST chunk.
            self._message_open.message_complete = False
            self._message_open = None
        if verb in _HELO_VERBS:
            self._pipelined_kept = False  # the next one counts again
            if self._txn is not None:
                # Its reply may come after a MAIL pipelined behind it: an
                # accepted one ends only what was open before it.
                self._displaced[event.command_index] = self._txn
            # The name the client gave until the server accepts one; after
            # that, only another accepted one replaces it (see _on_reply).
            if not self._helo_accepted:
                self.session.helo = event.argument
                self.session.helo_verb = verb
        elif verb == "MAIL":
            self._start_txn(event)
        elif verb == "RCPT":
            self._add_rcpt(event)
        elif verb in ("DATA", "BDAT"):
            if self._txn is not None:
                self._txn_of[event.command_index] = self._txn
        elif verb == "RSET":
            if self._txn is not None:
                if self._txn.status == "incomplete":
                    self._txn.status = "reset"
                self._end_txn(self._txn, event.ts)
        elif verb == "STARTTLS" and not self._inside:
            self.session.starttls_attempted = True
        elif verb == "AUTH":
            cleartext = not self._inside and not self.parser.in_tls
            if cleartext and not self.session.auth_cleartext:
                # RFC 4954 4: credentials in clear text; on an implicit-TLS
                # port the parser is in TLS from the start, so this is AUTH
                # on a plain port or plain text where TLS was due. Flagged
                # once per session.
                self.session.auth_cleartext = True
                self._add_anomaly(
                    event.ts, "auth_cleartext", "AUTH sent before any TLS"
                )
            self.session.auth_attempts += 1
            self._auth = _AuthAttempt(
                event.command_index, auth.mechanism_of(event.argument)
            )

    def _read_by_detectors(self, verb: str, pipelined: bool) -> bool:
        """Whether a detector reads this command's row (past MAX_COMMAND_ROWS).

        What ``analysis.detect`` reads of the commands: the verbs of
        _DETECTED_VERBS, the command after a QUIT, and the first pipelined
        command after each HELO (is PIPELINING used before it was offered).
        What they read of other commands' replies (a 421's text, syntax
        errors) is not kept past the cap.
        """
        return (
            verb in _DETECTED_VERBS
            or self._last_verb == "QUIT"
            or (pipelined and not self._pipelined_kept)
        )

    def _unkept_row(self, index: int, row: CommandRecord, ts: int) -> None:
        """A command counted but given no row (see MAX_COMMAND_ROWS).

        Its reply is still followed, since it may settle a transaction, so
        what the reply needs of it is held until the reply comes: the row
        of a known verb, a marker for an unknown one, nothing where the
        reply changes nothing. Past MAX_PENDING waiting commands the parser
        stops waiting for the oldest, and it goes too.
        """
        # Each cap is said once, when a command first misses a row by it.
        hard = len(self.commands) >= MAX_KEPT_ROWS
        if self._capped < (2 if hard else 1):
            self._capped = 2 if hard else 1
            if hard:
                detail = (
                    f"past {MAX_KEPT_ROWS:,} rows no command gets one; all "
                    "are counted in the session"
                )
            else:
                detail = (
                    f"past {MAX_COMMAND_ROWS:,} commands only those the "
                    "detectors read get a row (AUTH, MAIL, RCPT, HELO, EHLO, "
                    "LHLO, QUIT, the command after a QUIT, the first pipelined "
                    "command after a HELO); the others are counted in the session"
                )
            self._add_anomaly(ts, "command_rows_capped", detail)

        # Held only as long and as much as its reply needs: 65,536 commands
        # may wait per connection, and 40 connections of unanswered NOOPs
        # took 1 GB when each held its row (found in review).
        verb = row.verb
        if verb in _REPLY_UNREAD:
            return  # its reply changes nothing
        unkept = self._unkept
        if unkept is None:
            unkept = self._unkept = OrderedDict()
        if verb in KNOWN_VERBS:
            if len(row.argument) > _TEXT_CUT:
                # A BDAT's chunk or an accepted HELO name is all its reply
                # reads of it: 60,000 unanswered NOOPs of 16 KB past the
                # cap held 1.2 GB for a 0.96 GB capture.
                row.argument = _held_argument(verb, row.argument)
            unkept[index] = row
        else:
            unkept[index] = _UNKNOWN_VERB  # its reply may say it was SASL data
        if len(unkept) > MAX_PENDING:
            # Not a dict: deleting at a dict's front leaves holes that every
            # later search for its first entry walks (quadratic).
            unkept.popitem(last=False)

    def _start_txn(self, event: CommandSeen) -> None:
        if self._txn is not None:
            # RFC 5321 3.3: a MAIL inside a transaction is out of sequence.
            # Whether it replaced the open one only the reply tells (Postfix
            # answers 503 and keeps the first), so the old one waits aside.
            self._displaced[event.command_index] = self._txn
        address, params = parse_path(event.argument, "FROM")
        txn = TransactionRecord(
            session_id=self.session.session_id,
            index=len(self.transactions),
            start=event.ts,
            mail_from=self._kept(address, event.ts) if address else address,
            mail_params=self._kept(params, event.ts) if params else None,
            tls=self.parser.in_tls,
        )
        self.session.transactions += 1
        self._txn = txn
        self._txn_of[event.command_index] = txn
        if len(self.transactions) < MAX_TRANSACTION_ROWS:
            self.transactions.append(txn)
        elif not self._transactions_capped:
            # Followed as any other, then let go: nothing keeps it once it
            # has ended and its commands have their replies (see _answered).
            self._transactions_capped = True
            self._add_anomaly(
                event.ts,
                "transaction_rows_capped",
                f"past {MAX_TRANSACTION_ROWS:,} transactions none gets a "
                "row; all are counted in the session",
            )

    def _add_rcpt(self, event: CommandSeen) -> None:
        txn = self._txn
        if txn is None:
            self._add_anomaly(event.ts, "rcpt_without_mail", event.argument)
            return
        self._txn_of[event.command_index] = txn
        txn.rcpts_total += 1
        if self._rcpts_listed >= MAX_LISTED_RCPTS:
            self._rcpt_slot[event.command_index] = _UNLISTED
            if not self._rcpts_capped:
                self._rcpts_capped = True
                self._add_anomaly(
                    event.ts,
                    "rcpt_list_capped",
                    f"past {MAX_LISTED_RCPTS:,} RCPTs in the session none is "
                    "listed in rcpt_to; rcpts_total counts them all",
                )
            return
        self._rcpts_listed += 1
        address, _ = parse_path(event.argument, "TO")
        self._rcpt_slot[event.command_index] = len(txn.rcpt_to)
        address = address if address is not None else event.argument
        txn.rcpt_to.append(self._kept(address, event.ts))
        txn.rcpt_codes.append(None)

    def _on_reply(self, event: ReplySeen) -> None:
        if event.command_index is None:
            return
        reply = event.reply
        answers = event.answers
        if event.recipient is not None:
            self._on_delivery_reply(event, event.command_index, event.recipient)
            return
        if answers == ".":
            self._on_message_reply(event.command_index, reply, event.ts)
            return
        try:
            self._on_command_reply(event, reply, answers)
        finally:
            if answers in _TRANSACTION_VERBS and (
                answers != "DATA" or reply.klass != 3
            ):
                self._answered(event.command_index)

    def _on_command_reply(
        self, event: ReplySeen, reply: Reply, answers: str | None
    ) -> None:
        assert event.command_index is not None  # see _on_reply
        row = self._rows.get(event.command_index)
        if row is None:
            if not self._unkept:
                return
            held = self._unkept.get(event.command_index)
            if held is None:
                return
            if held is _UNKNOWN_VERB:
                # As below for a line of an unknown verb, without its row.
                del self._unkept[event.command_index]
                if reply.code in _SASL_CODES:
                    self._add_anomaly(
                        event.ts, "auth_midstream", "SASL data seen outside an AUTH"
                    )
                return
            row = held
            if reply.klass != 3 or (answers != "AUTH" and row.verb != "AUTH"):
                del self._unkept[event.command_index]  # its last reply
        if reply.code in _SASL_CODES and row.verb not in KNOWN_VERBS:
            # The server took this line as SASL data (a capture that began
            # inside AUTH): it may hold a password, so it is not kept.
            if row.verb != "[redacted]":
                self._add_anomaly(
                    event.ts, "auth_midstream", "SASL data seen outside an AUTH"
                )
                # Nor is the server's echo of it in this reply (found in
                # review: "ab" and "p@ss!", which look like no base64, came
                # back in "535 5.7.8 bad ab").
                reply = without_sent(reply, f"{row.verb} {row.argument}")
            row.verb = "[redacted]"
            row.argument = ""
        # Only the first line of a connection caught after its start can
        # be the last answer of an exchange the capture missed: later in a
        # session, a line answered 235 or 535 outside any AUTH is not one
        # (a client could otherwise add attempts, or blank the user of a
        # failed AUTH it made before).
        sasl_outcome = (
            row.verb == "[redacted]"
            and reply.code in _AUTH_OUTCOMES
            and self._caught
            and event.command_index == 0
        )
        if answers == "AUTH" or row.verb == "AUTH" or sasl_outcome:
            if reply.klass == 3:
                return  # a 334 challenge: the row waits for the outcome
            self._on_auth_result(event.command_index, row, reply)
        self._fill_reply(row, reply, event.ts, event.command_index in self._rows)

        verb = row.verb
        if verb == "STARTTLS" and not self._inside:
            self.session.starttls_reply = reply.code
        if verb in _HELO_VERBS and reply.klass != 2:
            self._displaced.pop(event.command_index, None)
        elif verb in _HELO_VERBS:
            # A refused EHLO (a 501 for a bad name) changes nothing on the
            # server: the name it accepted before is still the session's.
            self.session.helo = row.argument
            self.session.helo_verb = verb
            self._helo_accepted = True
            if verb != "HELO":
                # Some servers (SubEthaSMTP) end the list with "250 Ok",
                # which names no extension (RFC 5321 4.1.1.1: keywords).
                self.session.capabilities = [
                    line for line in reply.lines[1:] if line.upper() != "OK"
                ]
                if not self._inside and not self.parser.in_tls:
                    self.session.starttls_offered |= _offers_starttls(reply)
            # RFC 5321 4.1.4: an accepted EHLO or HELO resets the state.
            older = self._displaced.pop(event.command_index, None)
            if older is not None and self._is_open(older):
                if older.status == "incomplete":
                    older.status = "reset"
                self._end_txn(older, event.ts)
        elif verb == "MAIL":
            self._on_mail_reply(event.command_index, reply, event.ts)
        elif verb == "RCPT":
            self._on_rcpt_reply(event.command_index, reply)
        elif verb == "DATA" and reply.klass != 3:
            # A refused DATA leaves the transaction open on the server (it
            # may still be reset, or DATA tried again): only the outcome so
            # far is recorded.
            txn = self._txn_of.get(event.command_index)
            if txn is not None and txn.status != "accepted":
                self._refused(txn, "DATA", reply, event.ts)
        elif verb == "BDAT":
            # RFC 3030 2: every chunk gets a reply; a refused chunk ends the
            # message, and the reply to the LAST chunk is its verdict.
            txn = self._txn_of.get(event.command_index)
            chunk = parse_bdat(row.argument)
            if txn is None:
                pass
            elif chunk is None:
                # A BDAT refused for its syntax carried no chunk: it is
                # recorded as a refused DATA is, and the transaction goes on
                # (Postfix answers 521 and keeps it).
                if reply.klass != 2 and txn.status != "accepted":
                    self._refused(txn, "BDAT", reply, event.ts)
            elif (reply.klass != 2 or chunk[1]) and self._is_open(txn):
                self._settle_message(txn, reply, event.ts)

    def _refused(
        self, txn: TransactionRecord, method: str, reply: Reply, ts: int
    ) -> None:
        """The server refused a DATA or BDAT command of ``txn``: no content
        went. The outcome so far is rejected, from this reply; the server
        keeps the transaction open (it may be reset, or DATA tried again
        and accepted, which replaces status and end)."""
        txn.data_method = method
        self._final_reply(txn, reply, ts)
        if self._is_open(txn):
            self._refused_open = txn
        if txn.status != "rejected":  # else its first refusal says when
            txn.end = ts
        txn.status = "rejected"

    def _kept(self, text: str, ts: int) -> str:
        """``text`` as a row keeps it: whole when short or within
        MAX_ROW_TEXT (which only values longer than _TEXT_CUT count
        against), after that its start and its length."""
        size = len(text)
        if size <= _TEXT_CUT:
            return text
        if self._text + size <= MAX_ROW_TEXT:
            self._text += size
            return text
        if self._text <= MAX_ROW_TEXT:
            self._text = MAX_ROW_TEXT + 1  # said once
            self._add_anomaly(
                ts,
                "row_text_capped",
                f"past {MAX_ROW_TEXT:,} characters of arguments, replies, headers and "
                f"addresses, each longer than {_TEXT_CUT} is cut to its start",
            )
        return _cut(text)

    def _final_reply(self, txn: TransactionRecord, reply: Reply, ts: int) -> None:
        """The server's verdict on a transaction's content, as its row keeps it."""
        code, enhanced, lines = reply
        txn.data_code = code
        txn.data_enhanced = enhanced
        text = "\n".join(lines)  # as a command's reply_text
        txn.data_reply = self._kept(text, ts) if len(text) > _TEXT_CUT else text

    def _forget_unanswerable(self) -> None:
        """Forget what waits for the replies to commands the parser no
        longer expects one for (past MAX_PENDING, pending_overflow).

        The dicts are made again rather than deleted from at the front (see
        _unkept_row); that happens once per MAX_PENDING // 4 commands at
        most, as what is left is what the parser still holds.
        """
        # Commands inside decrypted TLS wait in the inner parser, after
        # those the outer one still holds.
        parsers = [self.parser] if self._inner is None else [self.parser, self._inner]
        waiting = [p.oldest_pending() for p in parsers]
        oldest = min(
            (i for i in waiting if i is not None),
            default=max(p.commands_seen for p in parsers),
        )
        self._txn_of = {i: t for i, t in self._txn_of.items() if i >= oldest}
        self._rcpt_slot = {i: n for i, n in self._rcpt_slot.items() if i >= oldest}
        self._displaced = {i: t for i, t in self._displaced.items() if i >= oldest}

    def _answered(self, index: int) -> None:
        """Forget which transaction command ``index`` belonged to, now that
        its reply is in: replies come in the order the commands went, so
        nothing looks it up again (a refused MAIL moves only the commands
        after it, still unanswered; a DATA is looked up again at its
        message's reply, and forgotten then). So a session of a million
        transactions holds only those of its commands still unanswered.
        """
        self._txn_of.pop(index, None)
        self._rcpt_slot.pop(index, None)

    def _on_mail_reply(self, index: int, reply: Reply, ts: int) -> None:
        txn = self._txn_of.get(index)
        older = self._displaced.pop(index, None)
        if txn is None:
            return
        txn.mail_from_code = reply.code
        if reply.klass == 2:
            if older is not None:
                if older.status == "incomplete":
                    older.status = "reset"  # the server replaced it
                self._end_txn(older, ts)
            return
        txn.status = "rejected"
        self._end_txn(txn, ts)
        if older is not None and self._is_open(older):
            # The server kept the transaction it had: what the client
            # pipelined behind the refused MAIL belongs to that one.
            self._rehome(index, txn, older)
            self._txn = older
        elif self._txn is None:
            # Keep the refused MAIL current so that the RCPTs sent after it
            # (refused with 503 in turn) still land in its row.
            self._txn = txn

    def _rehome(
        self, mail: int, refused: TransactionRecord, kept: TransactionRecord
    ) -> None:
        """Move the commands sent after a refused MAIL to the kept transaction."""
        later = self._commands_of(refused, mail)
        slots = {self._rcpt_slot[i] for i in later if i in self._rcpt_slot}
        slots.discard(_UNLISTED)
        for i in later:
            self._txn_of[i] = kept
            slot = self._rcpt_slot.get(i)
            if slot is None:
                continue
            refused.rcpts_total -= 1
            kept.rcpts_total += 1
            if slot == _UNLISTED:
                # Not answered yet (replies come in order, this MAIL's
                # first): its reply counts it where _txn_of now says.
                continue
            code = refused.rcpt_codes[slot]
            self._rcpt_slot[i] = len(kept.rcpt_to)
            kept.rcpt_to.append(refused.rcpt_to[slot])
            kept.rcpt_codes.append(code)
            if code is not None and code // 100 == 2:
                kept.rcpts_accepted += 1
                refused.rcpts_accepted -= 1
        if slots:
            # Renumber what stays with the refused MAIL.
            stay = [n for n in range(len(refused.rcpt_to)) if n not in slots]
            renumber = {old: new for new, old in enumerate(stay)}
            refused.rcpt_to = [refused.rcpt_to[n] for n in stay]
            refused.rcpt_codes = [refused.rcpt_codes[n] for n in stay]
            for i in self._commands_of(refused, mail):
                slot = self._rcpt_slot.get(i, _UNLISTED)
                if slot != _UNLISTED:
                    self._rcpt_slot[i] = renumber[slot]
        if self._message_txn is refused:
            self._message_txn = kept
        if self._message_open is refused:
            # BDAT chunks sent behind the refused MAIL, their message not
            # ended yet: it is the kept transaction's.
            kept.data_method, refused.data_method = refused.data_method, None
            kept.message_complete = refused.message_complete
            refused.message_complete = None
            self._message_open = kept

    def _commands_of(self, txn: TransactionRecord, mail: int) -> list[int]:
        """The commands after command ``mail`` that belong to ``txn``, in
        order.

        Commands are indexed in the order sent, so from the newest back to
        ``mail``: not the whole session, which a client refused MAIL after
        MAIL (each moving what follows it) made quadratic.
        """
        found = []
        for i, t in reversed(self._txn_of.items()):
            if i <= mail:
                break
            if t is txn:
                found.append(i)
        found.reverse()
        return found

    def _fill_reply(
        self, row: CommandRecord, reply: Reply, ts: int, kept: bool
    ) -> None:
        """``kept``: the row is one of the session's (see MAX_ROW_TEXT);
        else it waits only for this reply, and is let go after it."""
        code, enhanced, lines = reply
        row.reply_code = code
        row.reply_enhanced = enhanced
        text = "\n".join(lines)  # Reply.text, without the call
        if kept and len(text) > _TEXT_CUT:
            text = self._kept(text, ts)
        row.reply_text = text
        row.reply_ts = ts
        row.latency_s = (ts - row.ts) / NS  # _seconds, both times known

    def _on_auth_result(self, index: int, row: CommandRecord, reply: Reply) -> None:
        attempt = self._auth
        s = self.session
        if attempt is None or attempt.index != index:
            # Not the last AUTH sent (only a one-sided or damaged capture
            # answers an older one): its row still names the mechanism.
            attempt = _AuthAttempt(index, auth.mechanism_of(row.argument))
            if row.verb != "AUTH":
                # SASL data answered in a capture that began inside the
                # exchange: the AUTH was not captured, but its outcome
                # proves it was sent, and each outcome counts one attempt.
                attempt.mechanism = None
                s.auth_attempts += 1
        else:
            self._auth = None  # answered
        result = auth.outcome(reply.code, reply.enhanced)
        if result == auth.SUCCESS:
            s.auth_successes += 1
        elif result == auth.FAILURE:
            # The server's word, even on a cancelled exchange: the AUTH
            # detectors read only the reply, and must count the same.
            s.auth_failures += 1
        elif attempt.cancelled:
            # RFC 4954 4: the server refuses (501) an exchange the client
            # cancelled with "*"; nothing was judged.
            result = "cancelled"
        else:
            s.auth_other_refusals += 1
        self._show_auth(attempt, result)

    def _show_auth(self, attempt: _AuthAttempt, result: str) -> None:
        """Let the session row tell of ``attempt`` if it says the most yet.

        The row's mechanism, user and result are those of one AUTH: the
        accepted one (there is one at most, RFC 4954 4), else the last
        refused for its credentials, else the last one. A user comes only
        from the AUTH that revealed it.
        """
        rank = _AUTH_RANK.get(result, 1)
        if rank < self._auth_rank:
            return
        self._auth_rank = rank
        s = self.session
        s.auth_mechanism = attempt.mechanism
        s.auth_user = attempt.user
        s.auth_result = result

    def _on_rcpt_reply(self, index: int, reply: Reply) -> None:
        txn = self._txn_of.get(index)
        slot = self._rcpt_slot.get(index)
        if txn is None or slot is None:
            return
        if slot != _UNLISTED:
            txn.rcpt_codes[slot] = reply.code
        if reply.klass == 2:
            txn.rcpts_accepted += 1

    def _on_message_started(self, event: MessageStarted) -> None:
        txn = self._txn
        if txn is None:
            self._add_anomaly(
                event.ts, "message_without_mail", f"{event.method} with no MAIL"
            )
            return
        txn.data_method = event.method
        if txn.message_complete is None:
            txn.message_complete = True  # until part of it is found missing
        self._message_txn = txn
        self._message_open = txn
        self._message_start = event.ts

    def _on_message_ended(self, event: MessageEnded) -> None:
        txn = self._message_txn
        self._message_open = None
        if txn is None:
            return
        txn.message_bytes = event.size
        received: list[str] = []
        ts = event.ts
        # Header values are row text too (MAX_ROW_TEXT): a session of 2,000
        # messages with 64 KB subjects held 677 MB (found in review).
        kept = self._kept
        for name, value in event.headers:
            column = _HEADER_COLUMNS.get(name)
            if column is not None and getattr(txn, column) is None:
                if column == "subject":
                    txn.subject_decoded = kept(decoded_words(value), ts)
                setattr(txn, column, kept(value, ts))
            elif name == "received":
                received.append(value)
            elif name == "x-originating-ip" and txn.x_originating_ip is None:
                txn.x_originating_ip = first_address(value)
        # Each relay puts its Received header on top (RFC 5321 4.4): the
        # last one is the first hop, where the message entered, as Zeek's
        # first_received.
        if received:
            txn.first_received = kept(received[-1], ts)
            second = received[-2] if len(received) > 1 else None
            txn.second_received = kept(second, ts) if second else second
        # Part of the transaction's content never seen stays so when more
        # follows: a BDAT message cut by a gap, then a DATA the server took.
        txn.message_complete = txn.message_complete is not False and event.complete

    def _on_message_reply(self, data_index: int, reply: Reply, ts: int) -> None:
        txn = self._txn_of.get(data_index) or self._message_txn
        self._answered(data_index)
        if txn is None:
            return
        self._settle_message(txn, reply, ts)

    def _on_delivery_reply(
        self, event: ReplySeen, index: int, recipient: tuple[int, int]
    ) -> None:
        """One of an LMTP message's replies, one per accepted RCPT (RFC 2033
        4.2), in the order they were accepted: each goes to its recipient's
        place in rcpt_data_codes. After the last the transaction is settled:
        accepted when the message was delivered to anyone, its verdict the
        first refusal, else the last reply."""
        nth, count = recipient
        reply = event.reply
        if nth == 0 and event.answers == "BDAT":
            row = self._rows.get(index)
            if row is not None:  # the BDAT LAST's row shows the first reply
                self._fill_reply(row, reply, event.ts, True)
        txn = self._txn_of.get(index) or self._message_txn
        if txn is None:
            if nth == count - 1:
                self._answered(index)
            return
        if nth == 0 or self._lmtp is None:
            accepted = [
                slot
                for slot, code in enumerate(txn.rcpt_codes)
                if code is not None and code // 100 == 2
            ]
            txn.rcpt_data_codes = [None] * len(txn.rcpt_codes)
            self._lmtp = _Deliveries(accepted)
        deliveries = self._lmtp
        if nth < len(deliveries.slots):
            txn.rcpt_data_codes[deliveries.slots[nth]] = reply.code
        if reply.klass == 2:
            deliveries.delivered = deliveries.delivered or reply
        elif deliveries.refused is None:
            deliveries.refused = reply
        if nth < count - 1:
            return
        self._lmtp = None
        self._answered(index)
        self._settle_message(txn, deliveries.refused or reply, event.ts)
        delivered = deliveries.delivered
        if delivered is not None and txn.status != "accepted":
            # Refused for some recipients, delivered to others.
            txn.status = "accepted"
            txn.queue_id = queue_id(delivered.text)
            self.session.messages_accepted += 1

    def _settle_message(self, txn: TransactionRecord, reply: Reply, ts: int) -> None:
        self._final_reply(txn, reply, ts)
        txn.queue_id = queue_id(reply.text) if reply.klass == 2 else None
        txn.data_duration_s = _seconds(ts, self._message_start or None)
        txn.status = "accepted" if reply.klass == 2 else "rejected"
        if reply.klass == 2:
            self.session.messages_accepted += 1
        self._message_txn = None
        txn.end = ts  # the verdict replaces a refused DATA's or a RSET's end
        self._end_txn(txn, ts)

    def _end_txn(self, txn: TransactionRecord, ts: int) -> None:
        """``txn`` ended at ``ts``, unless its status was given earlier (a
        refused DATA, say, then RSET): ``end`` is when the status was."""
        if txn.end is None:
            txn.end = ts
        if self._refused_open is txn:
            self._refused_open = None
        if self._txn is txn:
            self._txn = None

    def _is_open(self, txn: TransactionRecord) -> bool:
        """Whether ``txn`` is still open on the server: not ended, or its
        DATA or BDAT command was refused and nothing ended it since."""
        return txn.end is None or txn is self._refused_open

    # Session -------------------------------------------------------------

    def _add_anomaly(self, ts: int, kind: str, detail: str) -> None:
        # One session must not flood the table (87,000 unreadable
        # certificates in one handshake, a gap in every segment): past a cap
        # per kind the rest is counted in the last row's detail only.
        count = self._anomaly_kinds.get(kind, 0) + 1
        self._anomaly_kinds[kind] = count
        if count > MAX_ANOMALIES_PER_KIND:
            return
        if count == MAX_ANOMALIES_PER_KIND:
            detail = f"{detail} (further {kind} not recorded)"
        self.anomalies.append(AnomalyRecord(self.session.session_id, ts, kind, detail))
        self.session.anomalies += 1

    def _finish_session(self, ts: int, reason: str) -> None:
        s = self.session
        conn = self.conn
        # The last packet, whatever closed the connection (README: duration
        # is first to last packet). The close's time is no measure of it: an
        # idle close is decided a timeout later, a reuse at the new SYN. A
        # builder fed by hand, without packets, has only the close's time.
        s.end = conn.last_ts if conn.last_ts else ts
        s.duration_s = (s.end - s.start) / NS
        s.close = reason
        s.handshake_seen = conn.handshake_seen
        s.synack_seen = conn.synack_ts is not None
        s.handshake_completed = conn.handshake_completed
        s.handshake_rtt_s = _seconds(conn.ack_ts, conn.syn_ts)
        s.client_packets = conn.packets[Direction.CLIENT]
        s.server_packets = conn.packets[Direction.SERVER]
        s.tls_client_bytes = self.parser.tls_client_bytes
        s.tls_server_bytes = self.parser.tls_server_bytes
        if self._auth is not None:
            self._show_auth(self._auth, "no_reply")
        # A reply that is no greeting (greeting_missing) is SMTP all the same.
        silent = (
            s.greeting_code is None
            and not self.commands
            and "greeting_missing" not in self._anomaly_kinds
        )
        recognised = any(a.kind == "not_smtp" for a in self.anomalies)
        if (
            silent
            and not recognised
            and s.tls == "none"
            and (s.client_bytes or s.server_bytes)
        ):
            self._add_anomaly(
                ts, "not_smtp", "no SMTP greeting or command on an SMTP port"
            )
