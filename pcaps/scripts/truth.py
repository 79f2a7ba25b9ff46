"""Ground truth for the lab captures, read back with tshark.

For every TCP stream of a capture this takes the client's and the server's
byte streams from ``tshark -z follow,tcp,raw`` (and ``follow,tls,raw`` with the
key log for the encrypted part), pairs each client command line with its reply
(SMTP replies come back in command order, pipelined or not), and builds the
per-session record written to pcaps/expected.json.  The orchestrator then
checks that record against what its client was scripted to do.

Passwords are never written out: AUTH initial responses and continuation lines
are summarised (user name decoded, password only judged right or wrong from
the server's reply).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
import subprocess
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

LINKTYPES = {1: "EN10MB", 113: "LINUX_SLL", 276: "LINUX_SLL2", 0: "NULL"}
HEADER_NAMES = ("Date", "From", "To", "Cc", "Subject", "Message-ID")
QUEUED_RE = re.compile(r"queued as ([0-9A-Za-z]+)")


def link_type(pcap: Path) -> tuple[int, str]:
    hdr = pcap.read_bytes()[:24]
    magic = hdr[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        (net,) = struct.unpack("<I", hdr[20:24])
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        (net,) = struct.unpack(">I", hdr[20:24])
    else:
        raise ValueError(f"{pcap}: not a classic pcap file")
    return net, LINKTYPES.get(net, f"DLT_{net}")


def _tshark(pcap: Path, args: list[str], keylog: Path | None) -> str:
    argv = ["tshark", "-r", str(pcap)]
    if keylog is not None:
        argv += ["-o", f"tls.keylog_file:{keylog}"]
    argv += args
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


@dataclass
class StreamInfo:
    stream: int
    client_ip: str = ""
    client_port: int = 0
    server_ip: str = ""
    server_port: int = 0
    syn: bool = False
    synack: bool = False
    fin_client: bool = False
    fin_server: bool = False
    rst: bool = False
    first_fin: str = ""
    frames: int = 0


def stream_infos(pcap: Path) -> list[StreamInfo]:
    out = _tshark(
        pcap,
        [
            "-T",
            "fields",
            "-E",
            "separator=|",
            "-e",
            "tcp.stream",
            "-e",
            "ip.src",
            "-e",
            "ipv6.src",
            "-e",
            "tcp.srcport",
            "-e",
            "ip.dst",
            "-e",
            "ipv6.dst",
            "-e",
            "tcp.dstport",
            "-e",
            "tcp.flags.syn",
            "-e",
            "tcp.flags.ack",
            "-e",
            "tcp.flags.fin",
            "-e",
            "tcp.flags.reset",
        ],
        None,
    )
    infos: dict[int, StreamInfo] = {}
    for line in out.splitlines():
        f = line.split("|")
        if not f[0]:
            continue
        st = infos.setdefault(int(f[0]), StreamInfo(int(f[0])))
        st.frames += 1
        src, sport = f[1] or f[2], int(f[3])
        dst, dport = f[4] or f[5], int(f[6])
        syn, ack, fin, rst = (x in ("1", "True") for x in f[7:11])
        if syn and not ack:
            st.syn = True
            st.client_ip, st.client_port = src, sport
            st.server_ip, st.server_port = dst, dport
        elif syn and ack:
            st.synack = True
        from_client = (src, sport) == (st.client_ip, st.client_port)
        if fin:
            side = "client" if from_client else "server"
            if side == "client":
                st.fin_client = True
            else:
                st.fin_server = True
            st.first_fin = st.first_fin or side
        if rst:
            st.rst = True
    return [infos[k] for k in sorted(infos)]


def follow(
    pcap: Path, proto: str, st: StreamInfo, keylog: Path | None
) -> tuple[bytes, bytes]:
    """(client->server bytes, server->client bytes) of one stream.

    tshark calls the endpoint whose data it saw first "Node 0": for the
    decrypted (tls) view of an implicit-TLS session that is the server."""
    out = _tshark(pcap, ["-q", "-z", f"follow,{proto},raw,{st.stream}"], keylog)
    c, s = bytearray(), bytearray()
    started = False
    swap = False
    for line in out.splitlines():
        if line.startswith("Node 0:"):
            node0 = line.split(":", 1)[1].strip()
            swap = (
                node0 == f"{st.server_ip}:{st.server_port}"
                or node0 == f"[{st.server_ip}]:{st.server_port}"
            )
            continue
        if line.startswith("Node 1:"):
            started = True
            continue
        if not started or not line.strip():
            continue
        if line.startswith("====="):
            break
        if line.startswith("\t"):
            s += binascii.unhexlify(line.strip())
        else:
            c += binascii.unhexlify(line.strip())
    return (bytes(s), bytes(c)) if swap else (bytes(c), bytes(s))


# --------------------------------------------------------------------------
# byte-stream SMTP pairing
# --------------------------------------------------------------------------


def _lines(data: bytes) -> tuple[list[bytes], bytes]:
    parts = data.split(b"\n")
    return [p + b"\n" for p in parts[:-1]], parts[-1]


def parse_replies(data: bytes) -> tuple[list[list[bytes]], bytes]:
    replies: list[list[bytes]] = []
    cur: list[bytes] = []
    lines, rest = _lines(data)
    for line in lines:
        cur.append(line)
        if len(line) < 4 or line[3:4] != b"-":
            replies.append(cur)
            cur = []
    return replies, b"".join(cur) + rest


def _text(line: bytes) -> str:
    return line.rstrip(b"\r\n").decode("utf-8", "replace")


def _ending(line: bytes) -> str:
    return "CRLF" if line.endswith(b"\r\n") else "LF"


class Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def line(self) -> bytes | None:
        i = self.data.find(b"\n", self.pos)
        if i < 0:
            return None
        line = self.data[self.pos : i + 1]
        self.pos = i + 1
        return line

    def take(self, n: int) -> bytes:
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def rest(self) -> bytes:
        return self.data[self.pos :]


def _b64(s: str) -> bytes:
    try:
        return base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        return b""


def _headers(msg: bytes) -> dict[str, str]:
    h = BytesHeaderParser().parsebytes(msg)
    return {n: str(h[n]) for n in HEADER_NAMES if h[n] is not None}


def pair_session(
    client: bytes,
    server: bytes,
    tls_client: bytes | None = None,
    tls_server: bytes | None = None,
) -> dict[str, Any]:
    """Pair commands with replies.  For STARTTLS, pass the decrypted streams
    as tls_client/tls_server: they take over after the 220 to STARTTLS."""
    replies, server_rest = parse_replies(server)
    ri = 0
    greeting = replies[0] if replies else []
    ri = 1
    rd = Reader(client)
    commands: list[dict[str, Any]] = []
    endings: set[str] = set()
    tls_started = False

    def next_reply() -> list[bytes]:
        nonlocal ri
        if ri >= len(replies):
            return []
        r = replies[ri]
        ri += 1
        return r

    while True:
        line = rd.line()
        if line is None:
            break
        endings.add(_ending(line))
        text = _text(line)
        verb_raw, _, arg = text.partition(" ")
        verb = verb_raw.upper()
        cmd: dict[str, Any] = {
            "verb": verb,
            "verb_raw": verb_raw,
            "arg": arg,
            "line_ending": _ending(line),
        }
        rep = next_reply()
        cmd["code"] = int(rep[0][:3]) if rep else None
        cmd["reply"] = [_text(x) for x in rep]
        if verb == "DATA" and cmd["code"] == 354:
            body = bytearray()
            while True:
                dl = rd.line()
                if dl is None:
                    break
                if dl.rstrip(b"\r\n") == b".":
                    cmd["data_terminator"] = _ending(dl)
                    break
                body += dl[1:] if dl.startswith(b".") else dl
            cmd["message"] = bytes(body)
            fin = next_reply()
            cmd["final_code"] = int(fin[0][:3]) if fin else None
            cmd["final_reply"] = [_text(x) for x in fin]
        elif verb == "BDAT":
            # the reply we took belongs after the chunk; order is the same
            size = int(arg.split()[0])
            cmd["chunk_size"] = size
            cmd["last"] = arg.upper().split()[1:] == ["LAST"]
            cmd["chunk"] = rd.take(size)
        elif verb == "AUTH":
            mech, _, initial = arg.partition(" ")
            cmd["arg"] = mech
            cmd["mechanism"] = mech.upper()
            cmd["initial_response"] = bool(initial)
            responses = [initial] if initial else []
            codes = [cmd["code"]]
            challenges: list[str] = []
            while rep and cmd["code"] == 334:
                challenges.append(_text(rep[0])[4:])
                cl = rd.line()
                if cl is None:
                    break
                responses.append(_text(cl))
                rep = next_reply()
                cmd["code"] = int(rep[0][:3]) if rep else None
                cmd["reply"] = [_text(x) for x in rep]
                codes.append(cmd["code"])
            cmd["reply_codes"] = codes
            cmd["challenges"] = challenges
            cmd["_responses"] = responses  # removed before writing out
        elif verb == "STARTTLS" and cmd["code"] == 220 and tls_client is not None:
            tls_started = True
            assert tls_server is not None
            replies2, server_rest = parse_replies(tls_server)
            replies, ri = replies2, 0
            rd = Reader(tls_client)
        commands.append(cmd)

    leftover_client = rd.rest()
    extra_replies = replies[ri:]
    return {
        "greeting": [_text(x) for x in greeting],
        "commands": commands,
        "line_endings": sorted(endings),
        "tls_started": tls_started,
        "unpaired_client_bytes": len(leftover_client),
        "unpaired_replies": [[_text(x) for x in r] for r in extra_replies],
        "partial_reply_bytes": len(server_rest),
    }


def _addr(arg: str, prefix: str) -> tuple[str, str]:
    m = re.match(rf"\s*{prefix}\s*:\s*<([^>]*)>\s*(.*)$", arg, re.IGNORECASE)
    if not m:
        return arg, ""
    return m.group(1), m.group(2)


def summarise(paired: dict[str, Any]) -> dict[str, Any]:
    """Derive helo, auth and transactions from the paired command list."""
    helos: list[dict[str, Any]] = []
    auths: list[dict[str, Any]] = []
    txs: list[dict[str, Any]] = []
    cur: dict[str, Any] | None = None
    bdat: bytearray | None = None

    def close(end: str) -> None:
        nonlocal cur, bdat
        if cur is not None:
            cur["rcpt_accepted"] = [
                r["addr"] for r in cur["rcpt_to"] if r["code"] == 250
            ]
            cur["end"] = end
            txs.append(cur)
        cur, bdat = None, None

    def finish_message(
        tx: dict[str, Any], msg: bytes, code: int, reply: list[str]
    ) -> None:
        tx["final_code"] = code
        tx["final_reply"] = reply[0] if reply else ""
        m = QUEUED_RE.search(tx["final_reply"])
        tx["queue_id"] = m.group(1) if m else None
        tx["message_size"] = len(msg)
        tx["message_sha256"] = hashlib.sha256(msg).hexdigest()
        tx["headers"] = _headers(msg)

    after_starttls = False
    for cmd in paired["commands"]:
        verb, code = cmd["verb"], cmd["code"]
        if verb in ("EHLO", "HELO"):
            close("helo")
            helos.append(
                {"verb": verb, "name": cmd["arg"], "after_starttls": after_starttls}
            )
        elif verb == "STARTTLS":
            after_starttls = after_starttls or code == 220
        elif verb in ("RSET", "QUIT"):
            close(verb.lower())
        elif verb == "MAIL":
            close("mail")
            if code == 250:
                addr, params = _addr(cmd["arg"], "FROM")
                cur = {
                    "mail_from": addr,
                    "mail_params": params,
                    "mail_code": code,
                    "rcpt_to": [],
                }
        elif verb == "RCPT" and cur is not None:
            addr, params = _addr(cmd["arg"], "TO")
            cur["rcpt_to"].append(
                {
                    "addr": addr,
                    "params": params,
                    "code": code,
                    "reply": cmd["reply"][0] if cmd["reply"] else "",
                }
            )
        elif verb == "DATA" and cur is not None:
            cur["data_mode"] = "DATA"
            cur["data_code"] = code
            if code == 354:
                finish_message(
                    cur, cmd["message"], cmd["final_code"], cmd["final_reply"]
                )
                close("data")
            else:
                cur["data_reply"] = cmd["reply"][0] if cmd["reply"] else ""
        elif verb == "BDAT" and cur is not None:
            cur["data_mode"] = "BDAT"
            cur.setdefault("bdat_chunks", []).append(
                {
                    "size": cmd["chunk_size"],
                    "last": cmd["last"],
                    "code": code,
                    "reply": cmd["reply"][0] if cmd["reply"] else "",
                }
            )
            bdat = (bdat or bytearray()) + cmd["chunk"]
            if cmd["last"]:
                finish_message(cur, bytes(bdat), code, cmd["reply"])
                close("bdat_last")
        elif verb == "AUTH":
            responses = cmd["_responses"]
            user = None
            if cmd["mechanism"] == "PLAIN" and responses:
                parts = _b64(responses[0]).split(b"\0")
                if len(parts) == 3:
                    user = parts[1].decode()
            elif cmd["mechanism"] == "LOGIN" and responses:
                user = _b64(responses[0]).decode() or None
            cancelled = "*" in responses
            result = (
                "cancelled" if cancelled else "success" if code == 235 else "failure"
            )
            auths.append(
                {
                    "mechanism": cmd["mechanism"],
                    "initial_response": cmd["initial_response"],
                    "user": user,
                    "result": result,
                    "code": code,
                    "reply_codes": cmd["reply_codes"],
                    "challenges": cmd["challenges"],
                    "challenges_decoded": [
                        _b64(c).decode("utf-8", "replace") for c in cmd["challenges"]
                    ],
                    "client_lines": [
                        "*" if r == "*" else "<base64 credential>"
                        for r in responses[1 if cmd["initial_response"] else 0 :]
                    ],
                    "password": (
                        None if cancelled else "correct" if code == 235 else "wrong"
                    ),
                }
            )
    close("connection_end")
    ehlo_keywords: list[str] = []
    for cmd in paired["commands"]:
        if cmd["verb"] == "EHLO" and cmd["code"] == 250:
            ehlo_keywords = [r[4:] for r in cmd["reply"][1:]]
    return {
        "helo": helos,
        "auth": auths,
        "transactions": txs,
        "ehlo_keywords_last": ehlo_keywords,
    }


def public_commands(paired: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for cmd in paired["commands"]:
        c = {
            k: v for k, v in cmd.items() if k not in ("message", "chunk", "_responses")
        }
        if cmd["verb"] == "EHLO" and len(cmd["reply"]) > 2:
            c["reply"] = cmd["reply"]
        out.append(c)
    return out


def sessions(pcap: Path, keylog: Path | None = None) -> list[dict[str, Any]]:
    result = []
    for st in stream_infos(pcap):
        c, s = follow(pcap, "tcp", st, None)
        tls = "none"
        if c[:1] == b"\x16":  # TLS handshake record first: implicit TLS
            tls = "implicit"
            c, s = follow(pcap, "tls", st, keylog)
            paired = pair_session(c, s)
        elif re.search(rb"(?im)^starttls\r?\n", c):
            tc, ts = follow(pcap, "tls", st, keylog) if keylog else (b"", b"")
            paired = pair_session(c, s, tc, ts)
            if paired["tls_started"]:
                tls = "starttls"
        else:
            paired = pair_session(c, s)
        summ = summarise(paired)
        result.append(
            {
                "tcp_stream": st.stream,
                "client_ip": st.client_ip,
                "client_port": st.client_port,
                "server_ip": st.server_ip,
                "server_port": st.server_port,
                "ip_version": 6 if ":" in st.server_ip else 4,
                "tcp": {
                    "handshake": st.syn and st.synack,
                    "fin_client": st.fin_client,
                    "fin_server": st.fin_server,
                    "first_fin": st.first_fin,
                    "rst": st.rst,
                    "frames": st.frames,
                },
                "tls": tls,
                "greeting": paired["greeting"],
                "line_endings": paired["line_endings"],
                "helo": summ["helo"],
                "ehlo_keywords": summ["ehlo_keywords_last"],
                "auth": summ["auth"],
                "commands": public_commands(paired),
                "transactions": summ["transactions"],
                "unpaired_client_bytes": paired["unpaired_client_bytes"],
                "unpaired_replies": paired["unpaired_replies"],
                "partial_reply_bytes": paired["partial_reply_bytes"],
            }
        )
    return result


def dialog(session: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Compact (VERB, code[, final_code]) list used to check a session."""
    out: list[tuple[Any, ...]] = []
    for c in session["commands"]:
        if c["verb"] == "DATA" and "final_code" in c:
            out.append(("DATA", c["code"], c["final_code"]))
        else:
            out.append((c["verb"], c["code"]))
    return out
