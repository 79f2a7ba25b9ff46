"""What the ``live`` and ``check`` subcommands do (``analysis.livecli``
parses their arguments).

Part of the CLI, so printing and signal handling are allowed here.

``live`` runs until SIGINT, SIGTERM or ``--duration``: every way out goes
through the same stop, which reads what is left in the kernel rings, writes
the sessions still open as interrupted, flushes and closes the files and
prints a summary on stderr, then exits 0. ``check`` is a Nagios/Icinga
plugin: its exit status is the verdict (``analysis.check``).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import TextIO

from rich.live import Live

from analysis import cli, interrupts, pipeline
from analysis.check import Threshold, Thresholds, Verdict, evaluate, unknown
from analysis.dashboard import dashboard
from analysis.detect import Alert
from analysis.live import LiveAnalyzer, LoopOptions, run
from analysis.metrics import MetricsServer, exposition
from analysis.monitor import Monitor, RecentEvent
from analysis.offline import finish
from analysis.records import SessionResult
from analysis.rowfiles import json_line
from analysis.spool import Spool
from analysis.terminal import StdoutConsole
from capture.libpcap import CapturePermissionError, FilterError, LibpcapError
from capture.live import LiveSource, capture_filters
from capture.pcapwriter import InterfaceInfo, RotatingWriter

DASHBOARD_EVERY_S = 1.0
_MB = 1_000_000  # tcpdump's -C counts millions of bytes

log = logging.getLogger(__name__)


def permission_help(interface: str) -> str:
    python = os.path.realpath(sys.executable)
    return (
        f"no permission to capture on {interface}: run smtpscope as root, or "
        "grant CAP_NET_RAW and CAP_NET_ADMIN to the Python interpreter, e.g. "
        f"setcap cap_net_raw,cap_net_admin=eip {python}"
    )


# live ---------------------------------------------------------------------


@dataclass(slots=True)
class _Summary:
    """What the final lines on stderr report."""

    rows: int = 0
    interrupted: int = 0
    evicted: int = 0  # sessions closed as "evicted", over this limit:
    max_connections: int | None = None
    forgotten: int = 0  # AlertEngine.singles_forgotten, at the end
    # ReassemblyStats.handshakes_from_smtp_ports, at the end
    opened_from_smtp_ports: int = 0
    outputs: list[str] = field(default_factory=list)
    # Why an output failed (a full disk): the capture then stops as on
    # SIGTERM, so that the other output is whole, and the exit status is 1.
    failed: str | None = None


class _StopFlag:
    """Set by SIGINT or SIGTERM; the loop polls it between waits."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def __call__(self) -> bool:
        return self.signal is not None

    def handle(self, signum: int, frame: FrameType | None) -> None:
        self.signal = signum


@contextlib.contextmanager
def _signals_stop(flag: _StopFlag) -> Iterator[None]:
    previous = interrupts.take(flag.handle)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _open_source(
    interfaces: Sequence[str], ports: frozenset[int], user_filter: str | None
) -> tuple[LiveSource | None, str | None, int]:
    """The capture, or why there is none and the exit status for it: a
    filter libpcap cannot compile is the user's to fix, a usage error."""
    try:
        first, *fallback = capture_filters(ports, user_filter)
        return LiveSource(interfaces, first, fallback=fallback), None, 0
    except CapturePermissionError as exc:
        name = str(exc).partition(":")[0]
        return None, permission_help(name), cli.Exit.INPUT
    except FilterError as exc:
        message = str(exc).removeprefix("filter: ")
        return None, f"-f {user_filter!r}: {message}", cli.Exit.USAGE
    except LibpcapError as exc:
        return None, f"cannot capture: {exc}", cli.Exit.INPUT


def run_live(args: argparse.Namespace) -> int:
    ports, implicit_tls = cli.port_sets(args)
    summary = _Summary(max_connections=args.max_connections)
    with contextlib.ExitStack() as stack:
        # Step 1: every output that can fail, before capture starts.
        out: TextIO | None = None
        if args.output == "-":
            out = sys.stdout
        elif args.output:
            try:
                out = stack.enter_context(open(args.output, "a", encoding="utf-8"))
            except OSError as exc:
                cli._error(cli._os_error_message(exc, args.output, "write"))
                return cli.Exit.INPUT
            summary.outputs.append(f"rows appended to {args.output}")
        metrics = None
        if args.metrics is not None:
            try:
                metrics = MetricsServer(*args.metrics)
            except OSError as exc:
                host, port = args.metrics
                where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
                cli._error(f"cannot serve metrics on {where}: {exc.strerror}")
                return cli.Exit.INPUT
            stack.callback(metrics.close)
            metrics.start()
            host, port = metrics.address
            shown = f"[{host}]" if ":" in host else host
            print(
                f"{cli.PROG}: metrics on http://{shown}:{port}/metrics",
                file=sys.stderr,
                flush=True,
            )

        # Step 2: the capture itself.
        source, problem, status = _open_source(args.interfaces, ports, args.filter)
        if source is None:
            cli._error(problem or "cannot capture")
            return status
        stack.enter_context(source)
        pcap = None
        if args.write:
            try:
                pcap = RotatingWriter(
                    args.write,
                    [
                        InterfaceInfo(c.interface, c.linktype, source.snaplen)
                        for c in source.captures
                    ],
                    max_bytes=None
                    if args.file_size is None
                    else int(args.file_size * _MB),
                    every_s=args.rotate_seconds,
                )
            except OSError as exc:
                cli._error(cli._os_error_message(exc, args.write, "write"))
                return cli.Exit.INPUT
            stack.enter_context(pcap)

        # Step 3: the loop, and what it reports to.
        monitor = Monitor(time.time_ns())

        def on_row(table: str, record: object) -> None:
            nonlocal out
            summary.rows += 1
            if isinstance(record, Alert):
                _count_alert(monitor, record)
            if out is not None:
                try:
                    out.write(json_line(table, record))
                    out.flush()
                except BrokenPipeError:
                    raise  # the reader's choice: exit 141 in silence (cli)
                except OSError as exc:
                    where = "standard output" if args.output == "-" else args.output
                    summary.failed = cli._os_error_message(exc, where, "write")
                    _let_go(out)
                    out = None

        def on_session(result: SessionResult) -> None:
            monitor.add(result, time.time_ns())
            summary.interrupted += result.session.close == "interrupted"
            summary.evicted += result.session.close == "evicted"

        analyzer = LiveAnalyzer(
            ports,
            on_row,
            idle_timeout_s=args.idle_timeout,
            max_connections=args.max_connections,
            hooks=[on_session],
            rules=args.rules,
            implicit_tls_ports=implicit_tls,
        )
        show = not args.no_dashboard and args.output != "-" and sys.stdout.isatty()
        view = _Views(source, analyzer, monitor, metrics, show)
        names = ", ".join(args.interfaces)
        print(f"{cli.PROG}: listening on {names}", file=sys.stderr, flush=True)
        flag = _StopFlag()

        def stopped() -> bool:
            if pcap is not None and pcap.error is not None and summary.failed is None:
                failed = pcap.error  # the file a rotation could not open, say
                summary.failed = cli._os_error_message(
                    failed, failed.filename or args.write, "write"
                )
            return flag() or summary.failed is not None

        with _signals_stop(flag), view:
            run(
                source,
                analyzer,
                stopped,
                options=LoopOptions(duration_s=args.duration),
                pcap=pcap,
                on_tick=view.tick,
            )
            view.tick(force=True)
        stopped()  # the last flush may be the one that failed
        summary.forgotten = analyzer.alerts.singles_forgotten
        opened = analyzer.reassembler.stats.handshakes_from_smtp_ports
        summary.opened_from_smtp_ports = opened
        if pcap is not None:
            summary.outputs.append(
                f"{pcap.packets:,} packets written to "
                + ", ".join(str(p) for p in pcap.files)
            )
    _print_summary(monitor, summary, flag)
    if summary.failed is not None:
        return cli.Exit.INPUT
    return cli.Exit.OK


def _let_go(out: TextIO) -> None:
    """Close a row output that failed, or stop standard output's writes:
    its buffer would fail again on the way out, with a traceback."""
    if out is sys.stdout:
        cli._discard_stdout()
        return
    with contextlib.suppress(OSError):
        out.close()  # closed even where the flush in it fails


class _Views:
    """Dashboard and metrics page, brought up to date on the loop's ticks."""

    def __init__(
        self,
        source: LiveSource,
        analyzer: LiveAnalyzer,
        monitor: Monitor,
        metrics: MetricsServer | None,
        show: bool,
    ) -> None:
        self._source = source
        self._analyzer = analyzer
        self._monitor = monitor
        self._metrics = metrics
        self._live: Live | None = None
        if show:
            console = StdoutConsole(highlight=False, emoji=False)
            self._live = Live(console=console, auto_refresh=False)
        self._next_draw = 0.0

    def __enter__(self) -> _Views:
        if self._live is not None:
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.stop()

    def tick(self, force: bool = False) -> None:
        m = self._monitor
        counts = self._source.counts()
        m.active_sessions = self._analyzer.active_sessions
        # libpcap's own count of received packets differs by platform (on
        # Linux loopback it counts each packet twice): the packets handed
        # over are what "captured" means here.
        m.capture.received = self._analyzer.packets
        m.capture.dropped = sum(c.dropped + c.interface_dropped for c in counts)
        if self._metrics is not None:
            self._metrics.publish(exposition(m, counts))
        now = time.monotonic()
        if self._live is not None and (force or now >= self._next_draw):
            self._next_draw = now + DASHBOARD_EVERY_S
            self._live.update(dashboard(m, counts, time.time_ns()), refresh=True)


def _print_summary(monitor: Monitor, summary: _Summary, flag: _StopFlag) -> None:
    m = monitor
    why = "duration reached"
    if summary.failed is not None:
        why = f"stopped: {summary.failed}"
    elif flag.signal is not None:
        why = f"stopped by {signal.Signals(flag.signal).name}"
    lines = [
        f"{why}: {m.capture.received:,} packets captured, "
        f"{m.capture.dropped:,} dropped",
        f"{m.sessions:,} {'session' if m.sessions == 1 else 'sessions'} "
        f"({summary.interrupted:,} interrupted), "
        f"{m.transactions:,} transactions, {m.messages_accepted:,} messages "
        f"accepted, {summary.rows:,} rows",
        *summary.outputs,
    ]
    if summary.evicted:
        lines.append(
            cli.evicted_warning(summary.evicted, summary.max_connections, jobs=1)
        )
    if summary.opened_from_smtp_ports:
        # As read's summary shows them: they explain packets without sessions.
        lines.append(
            f"{summary.opened_from_smtp_ports:,} connections opened from an "
            "SMTP port, not sessions"
        )
    if summary.forgotten:
        lines.append(cli.forgotten_warning(summary.forgotten))
    for line in lines:
        print(f"{cli.PROG}: {line}", file=sys.stderr)


# check --------------------------------------------------------------------


def _thresholds(args: argparse.Namespace) -> Thresholds:
    return Thresholds(
        refusal_ratio=Threshold(args.refusal_warn, args.refusal_crit),
        greeting_delay=Threshold(args.greeting_delay_warn, args.greeting_delay_crit),
        tls_share=Threshold(args.tls_min_warn, args.tls_min_crit, minimum=True),
        alerts=Threshold(args.alerts_warn, args.alerts_crit),
        sessions=Threshold(
            args.sessions_min_warn, args.sessions_min_crit, minimum=True
        ),
    )


def run_check(args: argparse.Namespace) -> int:
    ports, implicit_tls = cli.port_sets(args)
    monitor = Monitor(time.time_ns())
    try:
        interrupts.release()  # a stop held since the start raises here
        if args.captures:
            verdict = _check_captures(args, ports, implicit_tls, monitor)
        else:
            verdict = _check_live(args, ports, implicit_tls, monitor)
    except KeyboardInterrupt:
        # A stop outside the reading, which judges what it read (before it:
        # a spool being made, libpcap opening; after it: the detectors'
        # judgement). A monitoring system must still get its status line.
        verdict = unknown("stopped before a verdict")
    except Exception as exc:
        # A fault of smtpscope's own, not of the input: the monitoring system
        # must see UNKNOWN, not the WARNING that Python's exit status 1 means
        # to it (found in review: a crash read as a warning, with no line).
        log.debug("check failed", exc_info=True)
        verdict = unknown(f"internal error: {type(exc).__name__}: {exc}")
    # The verdict is made: a stop now would only lose its line, and turn the
    # status into 130, which a monitoring system does not know.
    interrupts.let_go()
    print(verdict.line)
    return int(verdict.status)


def _count_alert(monitor: Monitor, alert: Alert) -> None:
    """Count an alert once: live writes it when crossed and when over."""
    if alert.alert_id not in monitor.alert_ids:
        monitor.alert_ids.add(alert.alert_id)
        monitor.add_alert(_alert_event(alert))


def _alert_event(alert: Alert) -> RecentEvent:
    """An alert as the dashboard and the check count and list it."""
    first = alert.session_ids[0] if alert.session_ids else ""
    return RecentEvent(
        alert.first_seen, first, alert.client_ip or "", alert.kind, alert.summary
    )


def _check_captures(
    args: argparse.Namespace,
    ports: frozenset[int],
    implicit_tls: frozenset[int],
    monitor: Monitor,
) -> Verdict:
    """Read the captures as ``read`` does, sessions parked on disk until the
    detectors see them all in order: memory stays flat however long the
    captures are."""
    with Spool(rules=args.rules, results=False) as spool:
        stats = spool.stats
        try:
            for result in pipeline.analyze(
                args.captures,
                ports,
                stats=stats,
                max_connections=args.max_connections,
                implicit_tls_ports=implicit_tls,
            ):
                monitor.add(result, time.time_ns())
                spool.add(result)
            # All is read: a first stop from here on only says that the
            # judgement goes on, as read finishes its tables; a second ends
            # the check, UNKNOWN (see run_check).
            interrupts.finishing(_judging, stats.interrupted, lambda: "")
            # Counted as they come, not kept: a flood of distinct clients
            # makes an alert apiece.
            done = finish(
                spool,
                keep_alerts=False,
                on_alert=lambda alert: monitor.add_alert(_alert_event(alert)),
            )
        except OSError as exc:  # SpoolError too: the disk is full
            return unknown(cli._os_error_message(exc))
    # Warnings on stderr, as read gives them: the status line is the verdict.
    if stats.evicted:
        cli._error(cli.evicted_warning(stats.evicted, args.max_connections, jobs=1))
    if done.forgotten:
        cli._error(cli.forgotten_warning(done.forgotten))
    # As read says it: a server on another port made an OK of no sessions
    # with no word why (found in a new user's trial).
    hint = cli.no_session_hint(stats, ports) if not monitor.sessions else None
    if hint is not None:
        cli._error(hint)
    # The captures read, in part at least, and apart from them those that
    # could not be opened or held no capture (found in review: "sessions on
    # a.pcap, missing.pcap", as if the missing one had been read). A name
    # given twice is said once: a capture is read once.
    named = dict.fromkeys(args.captures)
    read = [path for path in named if path not in stats.unread]
    if stats.errors and not stats.packets:
        return unknown(stats.errors[0])  # no packet to judge
    monitor.capture.received = stats.packets
    names = ", ".join(os.path.basename(path) for path in read)
    if stats.unread:
        lost = [path for path in named if path in stats.unread]
        names += f" (not read: {', '.join(os.path.basename(p) for p in lost)})"
    # Stopped part way (Ctrl-C, or SIGTERM: what a scheduler's timeout
    # sends), the figures are of part of the captures: said as damage is.
    unread = ["stopped before the end"] if stats.interrupted else []
    # What the snap length cut off went unseen too: an OK would hide it,
    # and stderr, where read says so, is what a monitor drops (found in a
    # new user's trial: OK on a capture whose every SMTP packet was cut).
    if stats.header_cut:
        unread.append("TCP headers on the SMTP ports cut by the snap length")
    elif stats.snap_cut:
        unread.append(
            f"{stats.snap_cut:,} packets on the SMTP ports cut short by the snap length"
        )
    return evaluate(monitor, _thresholds(args), names, unread + stats.errors)


def _judging() -> None:
    cli._say_now(
        "interrupted: judging everything read; a second Ctrl-C gives no verdict"
    )


def _check_live(
    args: argparse.Namespace,
    ports: frozenset[int],
    implicit_tls: frozenset[int],
    monitor: Monitor,
) -> Verdict:
    source, problem, _ = _open_source(args.interfaces, ports, args.filter)
    if source is None:
        return unknown(problem or "cannot capture")

    evicted = 0

    def add(result: SessionResult) -> None:
        nonlocal evicted
        monitor.add(result, time.time_ns())
        evicted += result.session.close == "evicted"

    def discard(table: str, record: object) -> None:
        # A check keeps totals only: alerts are counted, rows dropped.
        if isinstance(record, Alert):
            _count_alert(monitor, record)

    analyzer = LiveAnalyzer(
        ports,
        discard,
        hooks=[add],
        rules=args.rules,
        max_connections=args.max_connections,
        implicit_tls_ports=implicit_tls,
    )
    flag = _StopFlag()
    with source, _signals_stop(flag):
        run(source, analyzer, flag, options=LoopOptions(duration_s=args.duration))
        counts = source.counts()
    monitor.capture.received = analyzer.packets
    monitor.capture.dropped = sum(c.dropped + c.interface_dropped for c in counts)
    if evicted:  # on stderr, as live says it
        cli._error(cli.evicted_warning(evicted, args.max_connections, jobs=1))
    if flag.signal is not None:
        return unknown(f"stopped by {signal.Signals(flag.signal).name}")
    return evaluate(monitor, _thresholds(args), ", ".join(args.interfaces))
