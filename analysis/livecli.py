"""The ``live`` and ``check`` subcommands' arguments.

Part of the CLI (``analysis.cli`` registers them and shares its helpers).
What the commands do is in ``analysis.liverun``, imported only when one of
them runs: live capture, the dashboard and the metrics server weigh on the
start-up of every ``read`` otherwise.
"""

from __future__ import annotations

import argparse
import functools
import math
from typing import Any

from analysis import cli
from capture.source import once_each

PLUGIN = "SMTPSCOPE"


# Parsers ------------------------------------------------------------------


def add_live_command(
    commands: argparse._SubParsersAction[Any],
    common: argparse.ArgumentParser,
) -> None:
    live = commands.add_parser(
        "live",
        parents=[common],
        help="watch SMTP on network interfaces as it happens",
        description="Capture SMTP on one or more interfaces with a kernel BPF "
        "filter and analyse it as it happens: rows as JSON lines (-o), a "
        "dashboard on a terminal, Prometheus metrics (--metrics), the packets "
        "themselves (-w).",
        epilog="SIGINT or SIGTERM stops: sessions still open are written with "
        "close 'interrupted', files are flushed and closed, a summary goes to "
        "stderr and the exit status is 0. Capturing needs root, or "
        "CAP_NET_RAW and CAP_NET_ADMIN; without them the exit status is 1.",
    )
    live.add_argument(
        "-i",
        "--interface",
        dest="interfaces",
        action="append",
        required=True,
        metavar="IFACE",
        help="capture on IFACE; repeat for several interfaces",
    )
    _add_capture_options(live)
    live.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="append each row as a JSON line to FILE as soon as it is final "
        "('-' for stdout); the 'table' key names its table",
    )
    live.add_argument(
        "-w",
        "--write",
        metavar="PCAP",
        help="also write the captured packets to PCAP (pcapng format)",
    )
    live.add_argument(
        "-C",
        dest="file_size",
        type=_positive,
        metavar="MB",
        help="with -w: start a new file once one holds MB million bytes",
    )
    live.add_argument(
        "-G",
        dest="rotate_seconds",
        type=_seconds,
        metavar="SECONDS",
        help="with -w: start a new file every SECONDS of capture time",
    )
    live.add_argument(
        "--no-dashboard", action="store_true", help="never show the dashboard"
    )
    live.add_argument(
        "--metrics",
        type=_listen_address,
        metavar="ADDR:PORT",
        help="serve Prometheus metrics on ADDR:PORT (ADDR defaults to 127.0.0.1)",
    )
    live.add_argument(
        "--duration", type=_seconds, metavar="S", help="stop after S seconds"
    )
    live.add_argument(
        "--rules",
        type=cli.rules_file,
        metavar="FILE",
        help="detection rules (TOML) laid over the defaults, as for read",
    )
    live.add_argument(
        "--idle-timeout",
        type=_seconds,
        default=600.0,
        metavar="S",
        help="close a connection silent for S seconds (default: 600)",
    )
    cli.add_max_connections(live)
    live.set_defaults(
        command="live", run=_run_live, validate=functools.partial(_validate_live, live)
    )


def add_check_command(
    commands: argparse._SubParsersAction[Any],
    common: argparse.ArgumentParser,
) -> None:
    check = commands.add_parser(
        "check",
        parents=[common],
        plugin_name=PLUGIN,
        help="Nagios/Icinga plugin: judge SMTP traffic against thresholds",
        description="Watch interfaces for --duration seconds, or read captures, "
        "and compare the SMTP seen with the thresholds given. Prints one "
        "status line with performance data.",
        epilog="Exit status: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (the check "
        "itself failed: no packet could be read, no permission, usage error). "
        "A damaged capture is judged on what was read, at least WARNING. The "
        "refusal ratio is the share of 4xx/5xx replies to MAIL, RCPT and "
        "message content; the greeting delay is the largest seen.",
    )
    source = check.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "-i",
        "--interface",
        dest="interfaces",
        action="append",
        metavar="IFACE",
        help="watch IFACE for --duration seconds; repeat for several",
    )
    source.add_argument(
        "-r",
        "--read",
        dest="captures",
        # Several after one -r as well as -r repeated: "-r dir/*.pcap" is
        # what a shell glob gives (found in a new user's trial).
        action="extend",
        nargs="+",
        metavar="CAPTURE",
        help="read CAPTURE instead; several after -r, or -r repeated",
    )
    check.add_argument(
        "--duration",
        type=_seconds,
        metavar="S",
        help=f"with -i: watch for S seconds (default: {_CHECK_SECONDS:g})",
    )
    _add_capture_options(check)
    check.add_argument(
        "--rules",
        type=cli.rules_file,
        metavar="FILE",
        help="detection rules (TOML) laid over the defaults, as for read: "
        "--alerts-warn and --alerts-crit count the alerts they raise",
    )
    cli.add_max_connections(check)
    for name, what in (
        ("refusal", "refusal ratio (0 to 1) above which"),
        ("greeting-delay", "greeting delay in seconds above which"),
        ("tls-min", "TLS share (0 to 1) below which"),
        ("alerts", "number of alerts above which"),
        # A wrong --port, or a mail server gone quiet, judges no session: an
        # OK then unless asked (a new user's point).
        ("sessions-min", "number of sessions below which"),
    ):
        for level in ("warn", "crit"):
            check.add_argument(
                f"--{name}-{level}",
                # Alerts are counted: a fraction of one would only mislead.
                type=_THRESHOLD_TYPES.get(name, _non_negative),
                metavar="N" if name in _COUNTED else "X",
                help=f"{what} the status is "
                f"{'WARNING' if level == 'warn' else 'CRITICAL'}",
            )
    check.set_defaults(
        command="check",
        run=_run_check,
        validate=functools.partial(_validate_check, check),
    )


def _add_capture_options(parser: argparse.ArgumentParser) -> None:
    cli.add_ports(parser)
    parser.add_argument(
        "-f",
        "--filter",
        metavar="BPF",
        help="capture only packets that also match this BPF expression",
    )


def _once_each_interface(args: argparse.Namespace) -> None:
    # Named twice, an interface would be opened twice and each packet on it
    # counted twice, as a capture named twice would be (see once_each).
    if args.interfaces:
        args.interfaces = list(dict.fromkeys(args.interfaces))


def _validate_live(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    _once_each_interface(args)
    if (args.file_size or args.rotate_seconds) and not args.write:
        parser.error("-C and -G rotate the files written with -w PCAP")


def _validate_check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.filter and args.captures:
        parser.error("-f filters live capture (-i); it does not apply to -r")
    _once_each_interface(args)
    if args.captures:
        # Named twice (or through a link), a capture would count twice.
        args.captures, _ = once_each(args.captures)
    if args.captures and args.duration is not None:
        parser.error("--duration is how long -i watches; it does not apply to -r")
    if args.duration is None:
        args.duration = _CHECK_SECONDS
    for name in ("refusal", "tls_min"):
        for level in ("warn", "crit"):
            value = getattr(args, f"{name}_{level}")
            if value is not None and value > 1:
                option = f"--{name.replace('_', '-')}-{level}"
                parser.error(f"{option} {value:g}: a share, from 0 to 1")
    for name, minimum in (
        ("refusal", False),
        ("greeting_delay", False),
        ("tls_min", True),
        ("alerts", False),
        ("sessions_min", True),
    ):
        warn, crit = getattr(args, f"{name}_warn"), getattr(args, f"{name}_crit")
        if warn is None or crit is None:
            continue
        if (warn < crit) if minimum else (warn > crit):
            option = f"--{name.replace('_', '-')}"
            side = "below" if minimum else "above"
            parser.error(
                f"{option}-warn {warn:g} is {side} {option}-crit {crit:g}: "
                "WARNING would come after CRITICAL"
            )


_CHECK_SECONDS = 60.0  # how long check -i watches unless told


# Ten years: longer times are typos, and in nanoseconds they overflow the
# timestamps they are added to.
_SECONDS_MAX = 10 * 365 * 86400


def _seconds(text: str) -> float:
    value = _positive(text)
    if value > _SECONDS_MAX:
        raise argparse.ArgumentTypeError(f"{text!r} is more than ten years of seconds")
    return value


def _positive(text: str) -> float:
    value = _non_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return value


# Monitoring systems read performance data as doubles, which hold whole
# numbers exactly up to 2**53: past it the threshold they show would not be
# the one judged (and no check ever counts that many alerts).
_ALERTS_MAX = 2**53


def _count(text: str, things: str = "alerts") -> float:
    if not text.isdecimal():
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of {things}")
    # The length first: int() refuses more than 4,300 digits.
    digits = text.lstrip("0")
    if len(digits) > len(str(_ALERTS_MAX)) or int(digits or "0") > _ALERTS_MAX:
        raise argparse.ArgumentTypeError(
            f"{text!r} is more than {_ALERTS_MAX:,} (2**53) {things}"
        )
    return float(text)


def _delay(text: str) -> float:
    """A greeting delay threshold: zero warns of any delay."""
    value = _non_negative(text)
    if value > _SECONDS_MAX:
        raise argparse.ArgumentTypeError(f"{text!r} is more than ten years of seconds")
    return value


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0:  # NaN too
        raise argparse.ArgumentTypeError(f"{text!r} is not a non-negative number")
    if value == math.inf:  # "inf", or digits past the largest double
        raise argparse.ArgumentTypeError(f"{text!r} is too large")
    return value + 0.0  # -0 as 0


# The thresholds not given as shares (checked in _validate_check).
_THRESHOLD_TYPES = {
    "alerts": _count,
    "sessions-min": functools.partial(_count, things="sessions"),
    "greeting-delay": _delay,
}
# The thresholds that count things, given as whole numbers.
_COUNTED = frozenset({"alerts", "sessions-min"})


def _listen_address(text: str) -> tuple[str, int]:
    host, colon, port = text.rpartition(":")
    if not colon:
        host, port = "", text
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdecimal() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not ADDR:PORT")
    return host, int(port)


def _run_live(args: argparse.Namespace) -> int:
    from analysis import liverun

    return liverun.run_live(args)


def _run_check(args: argparse.Namespace) -> int:
    from analysis import liverun

    return liverun.run_check(args)
