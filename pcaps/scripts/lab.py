"""Capture lab: tcpdump, a private Postfix instance and aiosmtpd servers.

Everything here binds to or talks to loopback addresses only (127.0.0.1 and
::1).  Every process started is recorded by PID and stopped by that PID (or,
for Postfix, with ``postfix -c DIR stop`` on the private instance), and the
orchestrator reaps all of its descendants before it exits.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

LOOPBACK_V4 = "127.0.0.1"
LOOPBACK_V6 = "::1"
SERVER_NAME = "mail.smtpscope.test"

PR_SET_CHILD_SUBREAPER = 36


def log(msg: str) -> None:
    print(f"[lab] {msg}", flush=True)


def become_subreaper() -> None:
    """Make this process adopt orphaned descendants (Postfix daemons).

    Postfix's master daemonises; when it stops, its children would otherwise
    be re-parented to PID 1, which in this sandbox does not reap them.  As a
    subreaper we adopt and reap them ourselves (see ``reap_children``).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        log("warning: prctl(PR_SET_CHILD_SUBREAPER) failed; zombies may remain")


def child_pids() -> list[int]:
    """PIDs whose parent is this process (from /proc)."""
    me = os.getpid()
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # field 4 (ppid) comes after the ")" that closes the comm field
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == me:
            out.append(int(entry))
    return out


def reap_children(timeout: float = 15.0) -> list[int]:
    """Reap adopted descendants; return PIDs still alive after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(ChildProcessError):
            while True:
                pid, _ = os.waitpid(-1, os.WNOHANG)
                if pid == 0:
                    break
        alive = child_pids()
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def port_is_free(host: str, port: int) -> bool:
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def listening(port: int, v6: bool = False) -> bool:
    """True if some socket is in LISTEN state on ``port`` (reads /proc/net)."""
    path = "/proc/net/tcp6" if v6 else "/proc/net/tcp"
    for line in Path(path).read_text().splitlines()[1:]:
        parts = line.split()
        local, state = parts[1], parts[3]
        if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
            return True
    return False


def wait_listening(port: int, v6: bool = False, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not listening(port, v6):
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listening on port {port} (v6={v6})")
        time.sleep(0.1)


# --------------------------------------------------------------------------
# tcpdump
# --------------------------------------------------------------------------

DROPS: list[int] = []  # "packets dropped by kernel" of each tcpdump run


class PacketsDropped(RuntimeError):
    """tcpdump reported kernel drops: the capture is incomplete."""


@dataclass
class Tcpdump:
    """``tcpdump -i IFACE -w FILE -s 0 FILTER`` run as a child process."""

    iface: str
    path: Path
    bpf: str
    proc: subprocess.Popen[str] | None = None
    link_line: str = ""
    stats: str = ""

    def argv(self) -> list[str]:
        # -Z root: Debian's tcpdump would otherwise drop to user "tcpdump",
        # which cannot write into the private (0700) work directory.
        # --immediate-mode: hand packets to tcpdump as they arrive, so the
        # last packets are not left in a TPACKET_V3 block when we stop it.
        return [
            "tcpdump",
            "-i",
            self.iface,
            "-w",
            str(self.path),
            "-s",
            "0",
            "-Z",
            "root",
            "--immediate-mode",
            "-B",
            "8192",
            self.bpf,
        ]

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.argv(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        log(f"tcpdump pid {self.proc.pid}: {' '.join(self.argv())}")
        assert self.proc.stderr is not None
        # tcpdump prints "listening on lo, link-type ..." once the capture
        # socket is open and the filter attached: wait for that line.
        # (with -i any it first prints "data link type LINUX_SLL2").
        seen = []
        stderr = self.proc.stderr
        while True:
            line = stderr.readline()
            seen.append(line.strip())
            if "listening on" in line:
                break
            if not line or len(seen) > 20:
                self.proc.kill()
                self.proc.wait(5)
                self.proc = None
                raise RuntimeError(f"tcpdump did not start: {seen}")
        self.link_line = " / ".join(seen)
        time.sleep(0.5)

    def stop(self) -> None:
        if self.proc is None:
            return
        time.sleep(1.0)  # let the last FIN/ACK segments arrive
        self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        self.stats = " / ".join(x for x in err.strip().splitlines() if x)
        m = re.search(r"(\d+) packets? dropped by kernel", err)
        DROPS.append(int(m.group(1)) if m else -1)
        log(f"tcpdump pid {self.proc.pid} stopped: {self.stats}")
        self.proc = None


@contextlib.contextmanager
def capture(iface: str, path: Path, bpf: str) -> Iterator[Tcpdump]:
    td = Tcpdump(iface, path, bpf)
    td.start()
    try:
        yield td
    finally:
        td.stop()


# --------------------------------------------------------------------------
# TLS material
# --------------------------------------------------------------------------


def make_cert(workdir: Path) -> tuple[Path, Path]:
    """Self-signed P-256 certificate for mail.smtpscope.test (throwaway)."""
    key = workdir / "tls" / "key.pem"
    cert = workdir / "tls" / "cert.pem"
    key.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "3650",
            "-subj",
            f"/CN={SERVER_NAME}",
            "-addext",
            f"subjectAltName=DNS:{SERVER_NAME}",
        ],
        check=True,
        capture_output=True,
    )
    key.chmod(0o644)  # read by Postfix's smtpd (runs as postfix)
    return cert, key


def client_tls_context(cert: Path, keylog: Path) -> ssl.SSLContext:
    """Client context trusting our self-signed cert, writing an NSS key log."""
    ctx = ssl.create_default_context(cafile=str(cert))
    ctx.keylog_filename = str(keylog)
    return ctx


# --------------------------------------------------------------------------
# Postfix private instance
# --------------------------------------------------------------------------

POSTFIX_USERS = ("alice", "bob", "carol")
POSTFIX_DOMAIN = "smtpscope.test"

MAIN_CF = """\
# Private capture-lab instance of Postfix: loopback only, nothing leaves the
# machine.  Generated by pcaps/scripts/lab.py.
compatibility_level = 3.6
queue_directory = {root}/spool
data_directory = {root}/data
mail_owner = postfix
setgid_group = postdrop
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
myhostname = {server_name}
mydomain = {domain}
myorigin = $myhostname
smtpd_banner = $myhostname ESMTP Postfix
biff = no

# Listen on loopback only (the master.cf services name 127.0.0.1 / [::1]).
inet_interfaces = 127.0.0.1, [::1]
inet_protocols = all
mynetworks = 127.0.0.0/8 [::1]/128

# Never deliver anywhere but here: no relayhost, no DNS, and every non-local
# transport is "discard".
relayhost =
relay_domains =
default_transport = discard:outbound delivery disabled in capture lab
relay_transport = discard:relay disabled in capture lab
smtp_dns_support_level = disabled
lmtp_dns_support_level = disabled
smtpd_peername_lookup = no

# Local domain {domain}: alice, bob and carol exist and are delivered to
# maildirs under {root}/mail by virtual(8); other local parts get
# "550 5.1.1 ... User unknown in local recipient table".
mydestination = {domain}
local_recipient_maps = {rcpt_map}
virtual_mailbox_maps = {mbox_map}
local_transport = virtual
virtual_mailbox_base = {root}/mail
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
alias_maps =
alias_database =

# No permit_mynetworks: relaying to a foreign domain is refused even from
# loopback ("554 5.7.1 ... Relay access denied").
smtpd_relay_restrictions = reject_unauth_destination
smtpd_recipient_restrictions =

# TLS is off on port 25; master.cf turns it on for 587 (STARTTLS) and 465
# (wrapper mode).
smtpd_tls_security_level = none
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
smtpd_tls_loglevel = 1
"""

MASTER_CF = """\
# Private capture-lab master.cf (chroot off everywhere).
127.0.0.1:25 inet n - n - - smtpd
[::1]:25     inet n - n - - smtpd
127.0.0.1:587 inet n - n - - smtpd
  -o syslog_name=postfix/submission
  -o smtpd_tls_security_level=may
127.0.0.1:465 inet n - n - - smtpd
  -o syslog_name=postfix/smtps
  -o smtpd_tls_wrappermode=yes
  -o smtpd_tls_security_level=encrypt
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

POSTFIX_PORTS = ((25, False), (25, True), (587, False), (465, False))


@dataclass
class Postfix:
    root: Path
    cert: Path
    key: Path
    master_pid: int | None = None

    @property
    def etc(self) -> Path:
        return self.root / "etc"

    def postfix(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["postfix", "-c", str(self.etc), *args],
            capture_output=True,
            text=True,
        )

    def write_config(self) -> None:
        for sub in ("etc", "spool", "data", "mail"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        shutil.chown(self.root / "data", "postfix")
        os.chown(self.root / "mail", 65534, 65534)
        rcpt = ", ".join(f"{u}@{POSTFIX_DOMAIN}=ok" for u in POSTFIX_USERS)
        mbox = ", ".join(f"{u}@{POSTFIX_DOMAIN}={u}/" for u in POSTFIX_USERS)
        (self.etc / "main.cf").write_text(
            MAIN_CF.format(
                root=self.root,
                server_name=SERVER_NAME,
                domain=POSTFIX_DOMAIN,
                rcpt_map=f"inline:{{ {rcpt} }}",
                mbox_map=f"inline:{{ {mbox} }}",
                cert=self.cert,
                key=self.key,
            )
        )
        (self.etc / "master.cf").write_text(MASTER_CF)
        dyn = Path("/etc/postfix/dynamicmaps.cf")
        if dyn.exists():
            shutil.copy(dyn, self.etc / "dynamicmaps.cf")

    def version(self) -> str:
        return subprocess.run(
            ["postconf", "-c", str(self.etc), "-h", "mail_version"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

    def start(self) -> None:
        for port, v6 in POSTFIX_PORTS:
            host = LOOPBACK_V6 if v6 else LOOPBACK_V4
            if not port_is_free(host, port):
                raise RuntimeError(f"[{host}]:{port} is busy; cannot start Postfix")
        self.write_config()
        chk = self.postfix("check")
        if chk.returncode != 0:
            raise RuntimeError(f"postfix check failed: {chk.stderr}{self.maillog()}")
        res = self.postfix("start")
        if res.returncode != 0:
            raise RuntimeError(f"postfix start failed: {res.stderr}{self.maillog()}")
        for port, v6 in POSTFIX_PORTS:
            wait_listening(port, v6)
        pidfile = self.root / "spool" / "pid" / "master.pid"
        self.master_pid = int(pidfile.read_text().split()[0])
        log(
            f"postfix {self.version()} master pid {self.master_pid} (config {self.etc})"
        )

    def stop(self) -> None:
        if self.master_pid is None:
            return
        res = self.postfix("stop")
        log(f"postfix -c {self.etc} stop -> rc {res.returncode}")
        deadline = time.monotonic() + 15
        while Path(f"/proc/{self.master_pid}").exists():
            if time.monotonic() > deadline:
                log(f"postfix master {self.master_pid} still alive; SIGTERM by PID")
                os.kill(self.master_pid, signal.SIGTERM)
                deadline = time.monotonic() + 15
            # the master was adopted by us (subreaper): reap it if it is ours
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.master_pid, os.WNOHANG)
            time.sleep(0.1)
        self.master_pid = None

    def maillog(self) -> str:
        p = self.root / "maillog"
        return p.read_text() if p.exists() else ""

    def maildir_count(self, user: str) -> int:
        new = self.root / "mail" / user / "new"
        return len(list(new.iterdir())) if new.exists() else 0

    def maildir_messages(self, user: str) -> list[bytes]:
        new = self.root / "mail" / user / "new"
        if not new.exists():
            return []
        return [p.read_bytes() for p in sorted(new.iterdir())]

    def wait_delivered(self, counts: dict[str, int], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            got = {u: self.maildir_count(u) for u in counts}
            if got == counts:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"delivery mismatch: want {counts}, got {got}")
            time.sleep(0.2)


# --------------------------------------------------------------------------
# aiosmtpd servers (in-process threads, loopback only)
# --------------------------------------------------------------------------


class RecordingHandler:
    """Accepts every message and keeps the envelopes for checking."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []
        self.lock = threading.Lock()

    async def handle_DATA(
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        with self.lock:
            self.envelopes.append(envelope)
        return "250 2.0.0 Message accepted for delivery"


class Refuse454SMTP(SMTP):
    """aiosmtpd that advertises STARTTLS but answers it with 454."""

    async def smtp_STARTTLS(self, arg: str) -> None:
        await self.push("454 4.7.0 TLS not available due to temporary reason")


class Refuse454Controller(Controller):
    def factory(self) -> SMTP:
        return Refuse454SMTP(self.handler, **self.SMTP_kwargs)


@dataclass
class Authenticator:
    """Accepts only the throwaway test credentials in ``users``."""

    users: dict[str, str]
    attempts: list[tuple[str, str, bool]] = field(default_factory=list)

    def __call__(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: Any,
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user = auth_data.login.decode()
        ok = self.users.get(user) == auth_data.password.decode()
        self.attempts.append((mechanism, user, ok))
        return AuthResult(success=ok, handled=False)


@contextlib.contextmanager
def aiosmtpd_server(
    host: str,
    port: int,
    handler: RecordingHandler,
    *,
    controller_cls: type[Controller] = Controller,
    **kwargs: Any,
) -> Iterator[Controller]:
    if host not in (LOOPBACK_V4, LOOPBACK_V6):
        raise ValueError("aiosmtpd servers bind to loopback only")
    if not port_is_free(host, port):
        raise RuntimeError(f"[{host}]:{port} is busy")
    ctrl = controller_cls(
        handler, hostname=host, port=port, server_hostname=SERVER_NAME, **kwargs
    )
    ctrl.start()
    log(f"aiosmtpd on [{host}]:{port} (thread in pid {os.getpid()})")
    try:
        yield ctrl
    finally:
        ctrl.stop()
        log(f"aiosmtpd on [{host}]:{port} stopped")


def tool_versions() -> dict[str, str]:
    import aiosmtpd

    def first_line(argv: list[str]) -> str:
        p = subprocess.run(argv, capture_output=True, text=True)
        out = (p.stdout + p.stderr).strip().splitlines()
        return out[0] if out else "?"

    return {
        "python": sys.version.split()[0],
        "aiosmtpd": aiosmtpd.__version__,
        "openssl": ssl.OPENSSL_VERSION,
        "postfix": subprocess.run(
            ["postconf", "-d", "-h", "mail_version"], capture_output=True, text=True
        ).stdout.strip(),
        "swaks": first_line(["swaks", "--version"]),
        "tcpdump": first_line(["tcpdump", "--version"]),
        "tshark": first_line(["tshark", "--version"]),
    }
