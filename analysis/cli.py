"""The ``smtpscope`` command: argument parsing, logging, progress, exit status.

This is the only module that prints, reads the environment's terminals or
configures logging. Each subcommand is a function taking the parsed
arguments and returning the exit status; ``main`` maps the interruptions
every subcommand shares (Ctrl-C, a closed pipe) to their own statuses.

Exit status: 0 when every input was read, 1 when an input could not be read,
was damaged or the output could not be written, 2 for a usage error, 130
after Ctrl-C and 141 when standard output was closed early (``| head``).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import enum
import errno
import functools
import gc
import logging
import os
import stat
import sys
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from analysis import downgrade, interrupts, livecli, pipeline
from analysis.alertfile import AlertFileError
from analysis.detect import Rules, RulesError, load_rules
from analysis.detect import engine as detect_engine
from analysis.escape import escape_controls, plugin_text
from analysis.focus import Picks, Resolved, resolve
from analysis.offline import finish
from analysis.parallel import (
    WorkerLost,
    connection_share,
    read_sharded,
    reading_share,
)
from analysis.records import SessionResult
from analysis.rowfiles import (
    ExportError,
    Format,
    RenamedThenStopped,
    TableFiles,
    prepare_directory,
    require_format,
)
from analysis.spool import Spool, SpoolError
from analysis.tls import decrypt
from capture.pcapfile import is_gzip
from capture.source import once_each

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

    from analysis.tables import SmtpTables, TableBuilder
    from analysis.views import ReportDigest

PROG = "smtpscope"

# Inputs smaller than this are read before a progress bar would be useful.
PROGRESS_THRESHOLD = 4 << 20


# Captures at least this large together are read with one process per CPU
# unless --jobs says otherwise.
AUTO_JOBS_MIN_BYTES = 64 << 20
AUTO_JOBS_MAX = 4


class Exit(enum.IntEnum):
    OK = 0
    INPUT = 1  # unreadable or damaged input, or output not written
    USAGE = 2  # what argparse uses for its own errors
    INTERRUPTED = 130  # 128 + SIGINT, as a shell reports it
    BROKEN_PIPE = 141  # 128 + SIGPIPE


def main(argv: Sequence[str] | None = None) -> int:
    # Ctrl-C and SIGTERM wait until the command can take them as the end of
    # its work, with what it did until then (analysis.interrupts); the
    # command's entry point has held them since its first line.
    interrupts.hold()
    try:
        return _main(argv)
    finally:
        interrupts.restore()


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    try:
        args, extras = parser.parse_known_args(argv)
        if extras:
            # argparse says so on the top-level parser, which would neither
            # show the command's usage nor answer as a monitoring plugin for
            # check (found in review: exit 2, no status line).
            command = parser.commands.get(args.command or "", parser)
            command.error(f"unrecognized arguments: {' '.join(extras)}")
        if args.command is not None:
            args.validate(args)
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else Exit.USAGE
    if args.command is None:
        parser.print_help(sys.stderr)
        return Exit.USAGE

    _configure_logging(args.verbose)
    # From here on a stop is a KeyboardInterrupt, SIGTERM as Ctrl-C, so that
    # what was read is still shown and written and child processes (tshark
    # for --tls-keylog) are stopped by the cleanup code; live capture
    # installs its own handlers. read takes the stops when it begins to read
    # (in _read_into), so that one that came before still writes the tables.
    try:
        # check takes them in run_check, where a stop still gives its status
        # line (found in review: one in the first 0.15 s or so gave none,
        # and exit status 130, which a monitoring system does not know).
        if args.command not in ("read", "check"):
            interrupts.release()
        status: int = args.run(args)
        # A stop held through a read that ended before reading (an
        # unreadable capture, say) is still one.
        interrupts.release()
        sys.stdout.flush()
    except KeyboardInterrupt as stop:
        _error(str(stop) or "interrupted")  # said where it matters
        return Exit.INTERRUPTED
    except BrokenPipeError:
        _discard_stdout()
        return Exit.BROKEN_PIPE
    return status


def build_parser() -> _Parser:
    parser = _Parser(
        prog=PROG,
        description="Passive SMTP traffic analyzer: captures in, SMTP sessions, "
        "transactions, commands and anomalies out.",
        epilog=f"Run '{PROG} COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action=_VersionAction)
    parser.set_defaults(command=None)
    commands = parser.add_subparsers(
        title="commands", metavar="COMMAND", parser_class=_Parser
    )

    # Options the commands that read traffic share (read, live, check);
    # rules reads none, so it has none of them.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log progress to stderr: -v for each capture (or interface, for "
        "live and check) and each session, -vv also the details (for "
        "captures, why the Python reader takes one rather than libpcap)",
    )
    _add_read_command(commands, common)
    livecli.add_live_command(commands, common)
    livecli.add_check_command(commands, common)
    _add_rules_command(commands)
    parser.commands = dict(commands.choices)
    return parser


def _add_rules_command(commands: argparse._SubParsersAction[Any]) -> None:
    rules = commands.add_parser(
        "rules",
        help="print the default detection rules, or check a rules file",
        description="Print the default detection rules (TOML, every key "
        "documented: copy the sections to change into a file for --rules), or "
        "with FILE check that FILE is a rules file read, live and check "
        "accept. Exit status: 0, or 2 when FILE is refused.",
    )
    rules.add_argument(
        "file",
        nargs="?",
        metavar="FILE",
        help="a rules file to check instead",
    )
    # verbose: main configures logging for every command; rules logs nothing
    # (found in review: it offered -v, which changed nothing).
    rules.set_defaults(
        command="rules", run=_run_rules, validate=lambda args: None, verbose=0
    )


def _run_rules(args: argparse.Namespace) -> int:
    from analysis.detect.rules import default_rules_text

    if args.file is None:
        sys.stdout.write(default_rules_text())
        return Exit.OK
    try:
        load_rules(args.file)
    except RulesError as exc:
        _error(str(exc))
        return Exit.USAGE
    print(f"{escape_controls(args.file)}: a valid rules file")
    return Exit.OK


class _Parser(argparse.ArgumentParser):
    """A subcommand's parser; ``plugin_name`` makes usage errors plugin-shaped.

    A monitoring plugin must answer a usage error with status 3 (UNKNOWN)
    and one status line on stdout: status 2 would read as CRITICAL.
    """

    def __init__(self, *args: Any, plugin_name: str | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.plugin_name = plugin_name
        # The top-level parser's subcommands by name (see build_parser).
        self.commands: dict[str, argparse.ArgumentParser] = {}

    def error(self, message: str) -> NoReturn:
        # argparse quotes what it names with repr, but a message of ours
        # (a --rules file that cannot be read) may carry the path as typed.
        message = escape_controls(message)
        if self.plugin_name is None:
            super().error(message)
        print(f"{self.plugin_name} UNKNOWN - usage: {plugin_text(message)}")
        self.exit(3)


def _add_read_command(
    commands: argparse._SubParsersAction[Any],
    common: argparse.ArgumentParser,
) -> None:
    read = commands.add_parser(
        "read",
        parents=[common],
        help="analyse capture files",
        description="Read pcap or pcapng captures (gzip-compressed too) and show "
        "the SMTP sessions in them; with -o, also write them as tables.",
        epilog="One file per table with -o: sessions, transactions, commands, "
        "anomalies, alerts, tls. JSON Lines and Parquet keep every value exactly; "
        "CSV is for spreadsheets and escapes control characters "
        "and formula starts. Exit status: 0 when every capture was read, 1 when "
        "one could not be read or was damaged (the sessions before the damage "
        "are still shown and written) or --session picked no session (or was "
        "given an ambiguous prefix), 2 for a usage error.",
    )
    read.add_argument(
        "captures",
        nargs="*",
        metavar="CAPTURE",
        help="capture file to read; several are read in the time order of "
        "their first packets; '-' reads standard input",
    )
    read.add_argument(
        "-r",
        "--read",
        dest="read_captures",
        # What tcpdump, tshark and Zeek users type first (a new user's
        # point), and what check takes: the same as naming CAPTURE.
        action="extend",
        nargs="+",
        default=[],
        metavar="CAPTURE",
        help="read CAPTURE too, as tcpdump -r does; several after -r, or -r repeated",
    )
    read.add_argument(
        "-o",
        "--output",
        metavar="DIR",
        help="write the tables into DIR (created if missing), replacing files "
        "of the same names",
    )
    read.add_argument(
        "--format",
        choices=[f.value for f in Format],
        help="file format for -o (default: jsonl)",
    )
    add_ports(read)
    read.add_argument(
        "-j",
        "--jobs",
        type=_job_count,
        default=None,
        metavar="N",
        help="analyse with N processes, each taking a share of the "
        "connections; 0 means one per CPU. Default: one per CPU, at most "
        f"{AUTO_JOBS_MAX}, when the captures add up to "
        f"{AUTO_JOBS_MIN_BYTES >> 20} MiB or more and none is "
        "gzip-compressed, else 1. "
        "Standard input, named pipes and --tls-keylog always use one",
    )
    add_max_connections(read)
    read.add_argument(
        "--rules",
        type=rules_file,
        metavar="FILE",
        help="detection rules (TOML) laid over the defaults; "
        f"'{PROG} rules' prints them with every key",
    )
    read.add_argument(
        "--tls-keylog",
        type=_keylog_file,
        metavar="KEYLOG",
        help="decrypt the TLS sessions whose keys are in KEYLOG (NSS key log "
        "format, as written by SSLKEYLOGFILE) with tshark, and parse the SMTP "
        "inside them; needs tshark installed",
    )
    read.add_argument(
        "--limit",
        type=_row_limit,
        default=20,
        metavar="N",
        help="show at most N alerts and N sessions (default: 20; 0 shows all)",
    )
    read.add_argument(
        "--session",
        dest="sessions",
        action="extend",
        type=_session_list,
        default=[],
        metavar="ID",
        help="show session ID in detail (its dialogue, anomalies and alerts) "
        "in place of the session table; a unique prefix of an id will do; "
        "repeat the option or give a comma list",
    )
    read.add_argument(
        "--no-summary",
        action="store_true",
        help="do not show the summary panel above the session table",
    )
    read.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="show nothing on stdout and no progress bar; errors still go to "
        "stderr. With -o the files are still written; without it the run only "
        "checks the captures (see the exit status)",
    )
    read.set_defaults(
        command="read", run=_run_read, validate=functools.partial(_validate_read, read)
    )


def _jobs(asked: int | None, paths: list[str]) -> int:
    """How many processes to read ``paths`` with; see the --jobs help."""
    cpus = os.cpu_count() or 1
    if any(_piped(path) for path in paths):
        # Every process reads every capture, and what one reads from a
        # pipe the others never see (found in review: a hang).
        return 1
    if asked is not None:
        return asked or cpus
    if any(is_gzip(path) for path in paths):
        # Every process would inflate every capture whole, which takes
        # longer than the rest of the reading: on the 1 GB benchmark
        # capture gzipped, -j 2 took 7.6 s where one process took 4.3.
        return 1
    total = 0
    for path in paths:
        with contextlib.suppress(OSError):
            total += os.stat(path).st_size if path != "-" else 0
    # Below this, forking and the extra reads of each capture cost more
    # than a second process gains. Above AUTO_JOBS_MAX, every process
    # reading the whole capture again costs more than its share saves.
    return min(cpus, AUTO_JOBS_MAX) if total >= AUTO_JOBS_MIN_BYTES else 1


def _jobs_not_used(
    asked: int | None, readers: int, paths: list[str], keylog: str | None
) -> str | None:
    """Why an explicit ``-j N`` of more than one reads with one process, or
    None: asked for, several processes left unused deserve a word."""
    wanted = (asked or os.cpu_count() or 1) if asked is not None else 1
    if wanted <= 1 or readers > 1:
        return None
    if keylog is not None:
        reason = "--tls-keylog decrypts whole captures with tshark"
    else:
        piped = next(path for path in paths if _piped(path))
        name = "standard input" if piped == "-" else piped
        reason = f"{name} can be read only once"
    return f"note: reading with one process, not {wanted}: {reason}"


def _readers(jobs: int, args: argparse.Namespace) -> int:
    """How many of the ``jobs`` processes read the captures: decryption
    runs tshark over whole captures, so with a key log one does it all."""
    return 1 if args.tls_keylog is not None else jobs


def _piped(path: str) -> bool:
    """Whether ``path`` can be read only once: standard input, a named
    pipe, a socket, a character device."""
    if path == "-":
        return True
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False  # reading it will say what is wrong
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)


def add_ports(parser: argparse.ArgumentParser) -> None:
    """The --port and --tls-port options, which read, live and check share."""
    default_ports = ", ".join(str(p) for p in sorted(pipeline.DEFAULT_PORTS))
    tls_ports = ", ".join(str(p) for p in sorted(pipeline.IMPLICIT_TLS_PORTS))
    parser.add_argument(
        "--port",
        dest="ports",
        action="extend",
        type=_port_list,
        default=[],
        metavar="N",
        help=f"also treat TCP port N as SMTP, besides {default_ports}; "
        "repeat the option or give a comma list (--port 2526,10025)",
    )
    parser.add_argument(
        "--tls-port",
        dest="tls_ports",
        action="extend",
        type=_port_list,
        default=[],
        metavar="N",
        help="also treat TCP port N as SMTP spoken inside TLS from the first "
        f"byte (implicit TLS), as {tls_ports} is; repeat the option or give "
        "a comma list. A port also given to --port is implicit TLS",
    )


def port_sets(args: argparse.Namespace) -> tuple[frozenset[int], frozenset[int]]:
    """The ports watched as SMTP and, among them, those that speak TLS from
    the first byte, from --port and --tls-port."""
    implicit_tls = pipeline.IMPLICIT_TLS_PORTS | frozenset(args.tls_ports)
    # An implicit-TLS port is an SMTP port too: naming it once is enough.
    watched = pipeline.DEFAULT_PORTS | frozenset(args.ports) | implicit_tls
    return watched, implicit_tls


def add_max_connections(parser: argparse.ArgumentParser) -> None:
    """The --max-connections option, which read and live share."""
    parser.add_argument(
        "--max-connections",
        type=_connection_limit,
        default=pipeline.DEFAULT_MAX_CONNECTIONS,
        metavar="N",
        help="keep at most N connections open at once (default: "
        f"{pipeline.DEFAULT_MAX_CONNECTIONS:,}; 0: no limit); past it "
        "connections that showed nothing yet (handshakes never completed, "
        "stray packets), then those silent longest, are closed with close "
        "'evicted' and a warning",
    )


def _connection_limit(text: str) -> int | None:
    if not text.isdecimal():
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of connections")
    return int(text) or None


def _job_count(text: str) -> int:
    try:
        jobs = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of jobs: {text!r}") from None
    if not 0 <= jobs <= 256:
        raise argparse.ArgumentTypeError(f"jobs must be 0 to 256, not {jobs}")
    return jobs


def _validate_read(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Usage errors argparse cannot see by itself; exits 2 like its own."""
    args.captures = [*args.captures, *args.read_captures]
    if not args.captures:
        parser.error("the following arguments are required: CAPTURE (or -r CAPTURE)")
    if args.format is not None and args.output is None:
        parser.error("--format only applies to files written with -o DIR")
    if args.captures.count("-") > 1:
        parser.error("standard input ('-') can be read only once")
    if "-" in args.captures and sys.stdin.isatty():
        parser.error("'-' reads a capture from standard input, which is a terminal")
    if args.tls_keylog is not None and "-" in args.captures:
        parser.error("--tls-keylog needs capture files, not standard input")
    if args.sessions and args.quiet:
        parser.error("--session shows sessions on stdout, which -q leaves empty")


def _run_read(args: argparse.Namespace) -> int:
    ports, implicit_tls = port_sets(args)

    # Step 1: everything that can fail before a long read, checked first.
    fmt = Format(args.format or Format.JSONL)
    if args.output == "-":
        # Several tables cannot share standard output (live -o - streams
        # one JSON line per row); a directory named "-" is a surprise.
        _error("read -o takes a directory, not '-'; write ./- for one named so")
        return Exit.USAGE
    if args.output is not None:
        try:
            require_format(fmt)
            prepare_directory(args.output)
        except ExportError as exc:
            _error(str(exc))
            return Exit.INPUT
    if args.tls_keylog is not None and not decrypt.tshark_available():
        _error(
            "--tls-keylog needs tshark, which is not installed; " + decrypt.INSTALL_HINT
        )
        return Exit.INPUT
    readable = _readable_captures(args.captures)
    failed = len(readable) < len(args.captures)
    if not readable:
        return Exit.INPUT
    readable = _once_each(readable)

    # Step 2: read, keeping every session decoded before any trouble. The
    # sessions wait in a spool on disk, so memory follows open connections;
    # their rows are encoded for the files there, while reading (in the
    # workers, under -j). DataFrames, and pandas, only for Parquet: the
    # report is made from a digest of the sessions (views.ReportDigest).
    report = not args.quiet
    frames = args.output is not None and fmt is Format.PARQUET
    streamed = args.output is not None and not frames
    spool = Spool(
        args.output,
        rules=args.rules,
        rows=fmt if streamed else None,
        results=frames or report,
    )
    _freeze_once()
    with spool:
        jobs = _jobs(args.jobs, readable)
        readers = _readers(jobs, args)
        unused = _jobs_not_used(args.jobs, readers, readable, args.tls_keylog)
        if unused is not None:
            _error(unused)
        ending = _Finishing(args.output, report)
        spooled = _read_into(
            spool, args, readable, (ports, implicit_tls), readers, ending
        )
        stats = spool.stats
        if not spooled:
            # Sessions are missing from the spool: writing the tables
            # would replace the previous files with incomplete ones.
            for message in stats.errors:
                _error(message)
            return Exit.INTERRUPTED if stats.interrupted else Exit.INPUT

        # Step 3: files first, so that a closed stdout cannot lose them. A first
        # stop from here on is only said, a second one ends the run with
        # what it left in its text (see _Finishing).
        _trim_heap()
        # Under -j N the other processes are done by now: one helps again.
        end = _finish(spool, args, fmt, streamed, frames, report, jobs > 1, ending)
        if not end.written:
            failed = ending.failed = True
    tables = end.tables
    apart = args.output is not None and not streamed  # Parquet, from DataFrames
    if apart and tables is not None and not _write(tables, args.output, fmt, ending):
        failed = ending.failed = True
    # Nothing read at all, and only errors to say why (a file that is no
    # capture): a report of zeros would only hide them, as tcpdump shows
    # none either.
    unread = bool(stats.errors) and not stats.packets and not end.sessions
    if report and not unread:
        _show(end, stats, args)
    if end.resolved is not None:
        _say_unpicked(end.resolved, stats.interrupted)
        failed = failed or end.resolved.refused

    # Through libpcap's filter, packets counts only those on the SMTP ports:
    # none passed says the same as no TCP packet among all of them.
    read_some = stats.packets or stats.filtered
    hint = no_session_hint(stats, ports) if not end.sessions else None
    if hint is not None:
        _error(hint)
    elif not (end.sessions or read_some or stats.errors or stats.interrupted):
        # Said even beside the summary's zeros, as with --no-summary it is
        # all there is to see.
        _error("the captures hold no packets")
    for message in stats.errors:
        _error(message)
    if stats.evicted:
        _error(evicted_warning(stats.evicted, args.max_connections, readers))
    if end.forgotten:
        _error(forgotten_warning(end.forgotten))
    if stats.rewinds:
        _error(_rewinds_note(stats.rewinds, len(readable)))
    if stats.clock_outliers:
        _error(clock_outliers_note(stats.clock_outliers))
    if stats.snap_cut:
        _error(snap_cut_warning(stats.snap_cut, stats.snap_cut_bytes))
    if stats.header_cut:
        _error(HEADER_CUT_WARNING)
    if args.tls_keylog is not None and stats.tls_decrypted < stats.tls_completed:
        _error(_undecrypted_note(stats, args.tls_keylog))
    if spool.repeated:
        have = "session has" if spool.repeated == 1 else "sessions have"
        _error(
            f"warning: {spool.repeated:,} {have} the session_id of another: "
            "the same connection, from the same first packet, was read twice "
            "(a capture given twice, or captures that overlap); all their "
            "rows are kept"
        )
    if spool.unjudged:
        _error(unjudged_warning(spool.unjudged))
    if stats.interrupted:
        if args.output is not None and ending.failed:
            _error("interrupted: the tables were not written")
        elif args.output is not None:
            _error("interrupted: the tables hold what was read until then")
        elif report:
            # A new user's point: no tables were asked for, and the report
            # gave no sign of being partial.
            _error("interrupted: the report shows what was read until then")
        else:
            _error("interrupted")
        return Exit.INTERRUPTED
    if ending.noted:
        # Complete as a run not stopped, but stopped all the same: a script
        # running several reads stops at this one, as it would at any.
        _error(ending.done())
        return Exit.INTERRUPTED
    return Exit.INPUT if failed or stats.errors else Exit.OK


def _say_unpicked(resolved: Resolved, interrupted: bool) -> None:
    """Say which ids --session asked for picked no session, and why.

    Stopped part way, the reading may not have come to the session (found
    in review: a Ctrl-C a second into a large capture said no such session).
    """
    where = "in what was read before the stop" if interrupted else ""
    for asked in resolved.unknown:
        _error(
            f"--session {asked}: no session has this id, or one beginning so"
            + (f", {where}" if where else "")
        )
    for prefix in resolved.ambiguous:
        named = ", ".join(prefix.candidates)
        if prefix.sessions > len(prefix.candidates):
            named += ", ..."
        _error(
            f"--session {prefix.prefix}: ambiguous, the ids of "
            f"{prefix.sessions:,} sessions begin so ({named}); give more of it"
        )


def _rewinds_note(rewinds: list[str], captures: int) -> str:
    """What to say of captures that begin before those read before them end.

    Captures are read in time order, so these overlap the earlier ones:
    recordings of other taps, copies. Their connections are their own.
    """
    names = ", ".join(os.path.basename(path) for path in rewinds[:3])
    if len(rewinds) > 3:
        names += ", ..."
    many = len(rewinds) > 1
    return (
        f"note: {len(rewinds)} of the {captures} captures ({names}) "
        f"{'overlap' if many else 'overlaps'} in time the ones read before "
        f"{'them' if many else 'it'}, so {'each' if many else 'it'} was read as "
        "another recording, with connections of its own"
    )


def clock_outliers_note(outliers: int) -> str:
    """What to say of packets stamped well ahead of the packets after them.

    A damaged timestamp, or a clock that stepped forward and back: each was
    read at its connection's time rather than taken for a jump in time,
    which closes every open connection as idle (Reassembler._hold_ahead).
    """
    one = outliers == 1
    packets = "1 packet was" if one else f"{outliers:,} packets were"
    return (
        f"note: {packets} stamped well ahead of the packets after "
        f"{'it' if one else 'them'} (a damaged timestamp, or a clock that "
        f"stepped forward and back), so {'it was' if one else 'they were'} "
        "not taken for a jump in time that closes the open connections as idle"
    )


# Said without a count: under -j each process counts what it decoded, its
# share or not (RunStats.header_cut).
HEADER_CUT_WARNING = (
    "warning: the capture's snap length cut packets on the SMTP ports inside "
    "their TCP headers, so they were dropped whole and their connections are "
    "missing from the tables; capture whole packets (tcpdump -s 0) to see them"
)


def snap_cut_warning(segments: int, missing: int) -> str:
    """What to say of packets on the SMTP ports that the capture cut short.

    tcpdump and dumpcap cut every packet to their snap length (-s); one too
    small leaves commands, replies and messages out of the capture, which the
    tables then show as gaps and the anomalies that follow from them, rather
    than as what the traffic did (a new user's point: nothing said why).
    """
    packets = "1 packet" if segments == 1 else f"{segments:,} packets"
    was = "was" if segments == 1 else "were"
    return (
        f"warning: {packets} on the SMTP ports {was} cut short by the "
        f"capture's snap length ({missing:,} bytes of payload not captured): "
        "what they held is missing from the tables, shown as tcp_gap "
        "anomalies, and the rows around the gaps are incomplete; capture "
        "whole packets (tcpdump -s 0) to see it"
    )


def _undecrypted_note(stats: pipeline.RunStats, keylog: str) -> str:
    """What to say of TLS sessions the key log did not decrypt.

    tshark decrypts what it has keys for and says nothing of the rest; a key
    log from another run, or written after the capture, decrypts nothing.
    Nor does one of this run where no application data followed the
    handshakes: a capture cut short after them was blamed on the key log
    (found in review). Another run is suggested only where none of the
    sessions not decrypted has its client random in the key log.
    """
    missing = stats.tls_completed - stats.tls_decrypted
    name = escape_controls(keylog)
    if stats.tls_keyed:
        keyed = stats.tls_keyed
        handshakes = "its handshake" if keyed == 1 else "their handshakes"
        if keyed == missing:
            held = f"{name} holds {'its' if keyed == 1 else 'their'} secrets, but"
        else:
            held = f"{name} holds no secrets for {missing - keyed:,}, and for {keyed:,}"
        if stats.tls_decrypted:
            were = "was" if missing == 1 else "were"
            head = (
                f"note: {missing:,} of {stats.tls_completed:,} TLS sessions "
                f"{were} not decrypted"
            )
        elif missing == 1:
            head = "warning: the TLS session was not decrypted"
        else:
            head = f"warning: none of the {missing:,} TLS sessions was decrypted"
        return (
            f"{head}: {held} no application data followed {handshakes} "
            "(a capture cut short?)"
        )
    if not stats.tls_decrypted:
        sessions = (
            "the TLS session, so it was not"
            if missing == 1
            else f"any of the {missing:,} TLS sessions, so none was"
        )
        if not decrypt.is_keylog(keylog):
            # Another file given by mistake: no line of the format at all.
            return (
                f"warning: {name} is not a key log (no CLIENT_RANDOM or "
                f"*_TRAFFIC_SECRET lines in the NSS format): it holds no secrets "
                f"for {sessions} decrypted"
            )
        return (
            f"warning: {name} holds no secrets for {sessions} decrypted "
            "(a key log written by another run of the client or server?)"
        )
    were, them = ("was", "it") if missing == 1 else ("were", "them")
    return (
        f"note: {missing:,} of {stats.tls_completed:,} TLS sessions {were} not "
        f"decrypted: {name} holds no secrets for {them}"
    )


def no_session_hint(stats: pipeline.RunStats, ports: frozenset[int]) -> str | None:
    """Why packets were read and no session came of them, or None when none
    were read, the run had errors of its own to say, or it was stopped before
    the end (read and check -r): what was not read may hold the sessions, and
    --port would not help."""
    if not (stats.packets or stats.filtered) or stats.errors or stats.interrupted:
        return None
    if stats.header_cut:
        return None  # the snap length, not a port: its warning says so
    watched = ", ".join(str(p) for p in sorted(ports))
    if not stats.smtp_packets:
        return (
            f"no TCP connection on the SMTP ports ({watched}); if the "
            "server listens on another port, add it with --port N "
            "(--tls-port N where TLS starts at the first byte)"
        )
    # A flood of ACKs or RSTs, or the tail of connections that ended before
    # the capture: none is a session (see pipeline). Nor is a connection
    # opened from an SMTP port (Reassembler).
    outbound = stats.handshakes_from_smtp_ports
    opened = (
        f"; {outbound:,} connections were opened from an SMTP port "
        "(what SYNs spoofed with a server's address bring back), "
        "which are no SMTP sessions"
        if outbound
        else ""
    )
    count = stats.smtp_packets
    packets = "1 TCP packet" if count == 1 else f"{count:,} TCP packets"
    return (
        f"{packets} on the SMTP ports ({watched}), but no connection began "
        f"or sent a byte there{opened}"
    )


def evicted_warning(evicted: int, limit: int | None, jobs: int) -> str:
    """What to say when connections were evicted: how many, and why.

    ``jobs`` is how many processes read: each held its share of ``limit``
    (``parallel.connection_share``), and it is that share a process went
    past, not ``limit``.
    """
    were = "connection was" if evicted == 1 else "connections were"
    if jobs <= 1:
        why = f"more than {limit or 0:,} were open at once"
    else:
        share = connection_share(limit, jobs) or 0
        why = (
            f"more than {share:,} were open at once in a process (with -j "
            f"{jobs} each holds its share of {limit or 0:,}, so which "
            "connections were evicted can differ from a run with -j 1)"
        )
    return (
        f"warning: {evicted:,} {were} closed early (close 'evicted'): {why}; "
        "one that went on is a new session from there, begun mid-stream; "
        "--max-connections raises the limit"
    )


def unjudged_warning(unjudged: int) -> str:
    """What to say when the check for STARTTLS stripping left sessions out
    (see ``downgrade.Ledger``)."""
    were = "session was" if unjudged == 1 else "sessions were"
    return (
        f"warning: {unjudged:,} {were} left out of the check for STARTTLS "
        "stripping (possible_downgrade), past what one process keeps for it "
        f"({downgrade.MOST_SUSPECT_BYTES >> 20} MiB of sessions whose "
        "clear-text EHLO reply lacked STARTTLS, about 12 bytes each, and "
        f"{downgrade.MOST_SERVERS:,} servers that offered it): a downgrade "
        "among them may have gone unreported"
    )


def forgotten_warning(forgotten: int) -> str:
    """What to say when the detectors let keys go early (see
    ``AlertEngine.singles_forgotten``)."""
    were = (
        "client (or other key) was"
        if forgotten == 1
        else "clients (or other keys) were"
    )
    return (
        f"warning: {forgotten:,} {were} let go by the detectors before "
        "their rule's window ended, under a flood of distinct ones (more "
        f"than {detect_engine.MAX_SINGLE:,} seen once by one detector, or "
        f"{detect_engine.MAX_TRACKERS:,} counted by one rule): a client that "
        "came back to its rule's threshold after that may have gone "
        "unreported, and an alert let go ended early"
    )


def _freeze_once() -> None:
    """Leave what exists now (modules, classes, the parsed rules) out of
    every later garbage collection, and collect far less often.

    Reading allocates many short-lived objects, so the collector runs
    often, and its full passes walked these long-lived ones each time: about
    2 % of a run's instructions on the 100 MB benchmark capture. Frozen
    objects are never freed, hence once per process, before the first read.

    What reading allocates holds no reference cycles (27 cyclic objects
    were left to collect after the whole 1 GB benchmark capture), so
    collecting finds nothing; yet every connection held open adds objects
    that each full pass walks again. A SYN flood of 100,000 connections
    took 13.3 s with the default thresholds and 10.2 s with these; the
    benchmark capture, which holds few connections at once, is unchanged.
    """
    global _frozen
    if not _frozen:
        _frozen = True
        gc.freeze()
        gc.set_threshold(100_000, 50, 100)


_frozen = False


def _trim_heap() -> None:
    """Give the pages the reading freed back to the system, where the C
    library can (glibc's ``malloc_trim``; elsewhere nothing happens).

    What reading held (the packet buffers, the connections remembered
    after their close) is freed by now, but the C heap keeps most of its
    pages, and the replay that comes next grows the detectors' windows in
    fresh ones: on the 1 GB benchmark capture the peak went from 35.4 to
    34.5 MiB, and 1.1 MiB of heap was given back in about a millisecond.
    """
    if sys.platform != "linux":
        return
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):  # a C library without it (musl)
        return
    trim.argtypes = [ctypes.c_size_t]
    trim(0)


def _read_into(
    spool: Spool,
    args: argparse.Namespace,
    readable: list[str],
    watched: tuple[frozenset[int], frozenset[int]],
    jobs: int,
    ending: _Finishing,
) -> bool:
    """Analyse ``readable`` into ``spool``; trouble ends up in its stats.

    ``watched`` holds the SMTP ports and, among them, the implicit-TLS ones
    (``port_sets``). ``ending`` is called as soon as the reading is over,
    however it ended. False when the spool could not be written or a worker
    process died: then it lacks sessions that were read, and its tables
    must not be written.
    """
    stats = spool.stats
    ports, implicit_tls = watched
    # A stop held since the start ends the run before anything is read or
    # any worker started: the tables are still written, empty. Held on,
    # stops are taken where reading begins (with -j, once the workers run).
    try:
        interrupts.check()
    except KeyboardInterrupt:
        stats.interrupted = True
        ending(True)
        return True
    show_progress = not args.quiet and sys.stderr.isatty()
    if jobs > 1 and "-" not in readable:
        # Every share reads every capture, at about the same pace: the
        # progress of this process's own share stands for all of them.
        try:
            with _ProgressBar(show_progress) as progress:
                read_sharded(
                    readable,
                    ports,
                    jobs,
                    spool,
                    progress=progress,
                    max_connections=args.max_connections,
                    started=interrupts.release,
                    ended=ending,
                    implicit_tls_ports=implicit_tls,
                )
        except SpoolError as exc:
            stats.errors.append(_os_error_message(exc, action="write"))
            return False
        except WorkerLost as exc:
            stats.errors.append(f"{exc}; no tables were written")
            return False
        except OSError as exc:
            # Raised before the shares were taken over (a fork that failed,
            # say): the spool holds none of them.
            stats.errors.append(_os_error_message(exc))
            return False
        return True
    results = None
    current, before = None, 0  # the session being spooled, the count before it
    with _ProgressBar(show_progress) as progress:
        try:
            interrupts.release()  # a stop from now on ends the reading
            results = pipeline.analyze(
                readable,
                ports,
                stats=stats,
                progress=progress,
                tls_keylog=args.tls_keylog,
                max_connections=args.max_connections,
                implicit_tls_ports=implicit_tls,
            )
            for result in results:
                current, before = result, len(spool)
                spool.add(result)
                current = None
            # At once: a stop from here on no longer cuts the reading. One
            # that did was taken inside analyze, which closed the sessions.
            ending(stats.interrupted)
        except SpoolError as exc:
            stats.errors.append(_os_error_message(exc, action="write"))
            return False
        except OSError as exc:
            stats.errors.append(_os_error_message(exc))
        except decrypt.DecryptError as exc:
            stats.errors.append(str(exc))
        except KeyboardInterrupt:
            stats.interrupted = True
            try:
                _spool_after_stop(spool, results, current, before)
            except SpoolError as exc:
                stats.errors.append(_os_error_message(exc, action="write"))
                return False
        ending(stats.interrupted)  # if an error or a stop ended the reading
    return True


class _Finishing:
    """The end of a ``read`` once its reading is over, stops included.

    Called when the reading ends, it has the first Ctrl-C or SIGTERM from
    then on only said (``analysis.interrupts.finishing``): writing the
    tables replays every session, seconds on a large capture, and a stop
    there would otherwise throw away all that was read. A second stop, or
    the first after one that cut the reading short, abandons them.
    """

    def __init__(self, output: str | None, report: bool) -> None:
        self._output = output
        self._report = report
        self._state: interrupts.Finishing | None = None
        # Whether a stop came once the reading was over, and was only said.
        self.noted = False
        self.written = False  # the files of the tables are in place
        self.failed = False  # they could not be written (said already)

    def __call__(self, stopped: bool) -> None:
        """The reading is over; ``stopped``: a stop cut it short."""
        if self._state is None:
            self._state = interrupts.finishing(self._say, stopped, self.abandoned)

    def _say(self) -> None:
        self.noted = True
        if self._output is not None:
            what = (
                "writing the tables of everything read; a second Ctrl-C abandons them"
            )
        elif self._report:
            what = (
                "finishing the report of everything read; a second Ctrl-C abandons it"
            )
        else:
            what = "finishing the run; a second Ctrl-C abandons it"
        _say_now(f"interrupted: {what}")

    def done(self) -> str:
        """The last word of a run stopped once its reading was over."""
        if self._output is not None and self.failed:
            return "interrupted after reading: the tables were not written"
        if self._output is not None:
            return "interrupted after reading: the tables hold everything read"
        if self._report:
            return "interrupted after reading: the report shows everything read"
        return "interrupted after reading"

    def abandoned(self) -> str:
        """What a second stop left."""
        if self._output is None:
            return "interrupted again: the rest of the run was abandoned"
        if self.written:
            return "interrupted again, once the tables were written"
        return (
            "interrupted again: the tables were abandoned, "
            f"none in {self._output} was replaced"
        )


def _say_now(message: str) -> None:
    """``_error`` from a signal handler, which may have come while this
    process was writing to stderr: the buffered stream refuses to be
    entered twice, so the message then goes past it."""
    try:
        _error(message)
    except RuntimeError:  # "reentrant call"
        with contextlib.suppress(OSError):
            text = f"{PROG}: {escape_controls(message)}\n"
            os.write(2, text.encode(errors="replace"))


def _spool_after_stop(
    spool: Spool,
    results: Generator[SessionResult, None, None] | None,
    current: SessionResult | None,
    before: int,
) -> None:
    """Spool what a stop that came while a session was spooled would lose:
    that session, which ``Spool.add`` leaves out whole when stopped in it,
    and the sessions still open, closed as interrupted as a stop during the
    reading closes them (found in review: a run stopped in a long add kept
    1 of 12 sessions). A second stop ends this with what is in."""
    try:
        if current is not None and len(spool) == before:
            spool.add(current)
        if results is not None:
            for result in pipeline.after_stop(results):
                spool.add(result)
    except KeyboardInterrupt:
        pass


@dataclass(slots=True)
class _Ending:
    """What the replay at the end of a run gave."""

    written: bool  # the table files, when streamed
    sessions: int
    tables: SmtpTables | None = None  # every table as DataFrames (Parquet)
    digest: ReportDigest | None = None  # the report's, without DataFrames
    forgotten: int = 0  # offline.Finished.forgotten
    resolved: Resolved | None = None  # the ids --session asked for
    picks: Picks | None = None  # the sessions they chose


def _finish(
    spool: Spool,
    args: argparse.Namespace,
    fmt: Format,
    streamed: bool,
    frames: bool,
    report: bool,
    helper: bool,
    ending: _Finishing,
) -> _Ending:
    """Replay the spool into the files, DataFrames and report wanted;
    ``helper``: with a forked helper for some detectors (``finish``).
    A KeyboardInterrupt (a second stop: see ``_Finishing``) leaves the
    files of the tables unwritten, and says so."""
    try:
        if streamed:
            with TableFiles(args.output, fmt) as files:
                try:
                    end = _replay(spool, args, frames, report, helper, files)
                except KeyboardInterrupt:
                    raise KeyboardInterrupt(ending.abandoned()) from None
                try:
                    files.commit()
                except KeyboardInterrupt:
                    # Held back while the files were renamed: all were.
                    ending.written = files.committed
                    raise KeyboardInterrupt(ending.abandoned()) from None
                ending.written = True
        else:
            try:
                end = _replay(spool, args, frames, report, helper)
            except KeyboardInterrupt:
                raise KeyboardInterrupt(ending.abandoned()) from None
    except (ExportError, OSError) as exc:
        if isinstance(exc, AlertFileError):
            # Its own message names it and where; the tables are left
            # unwritten as on any failure before they are committed.
            _error(f"{exc}; none in {args.output} was replaced")
        elif isinstance(exc, ExportError):
            _error(str(exc))
        elif streamed and exc.filename is None:
            # A table's own file (under its temporary name): say where the
            # room is missing, as for the alerts' scratch file (found in
            # review: "cannot write: No space left on device" alone).
            _error(
                _os_error_message(exc, f"the tables in {args.output}", "write")
                + f"; none in {args.output} was replaced"
            )
        else:
            _error(_os_error_message(exc, action="write"))
        if not frames and not report:
            return _Ending(False, len(spool))
        # The report is still shown, from a replay of its own, unless the
        # spool itself cannot be read back (its last sessions could not be
        # written: found in review, a traceback): what failed is said.
        try:
            end = _replay(spool, args, frames, report, helper)
        except OSError:
            return _Ending(False, len(spool))
        end.written = False
    return end


def _replay(
    spool: Spool,
    args: argparse.Namespace,
    frames: bool,
    report: bool,
    helper: bool,
    files: TableFiles | None = None,
) -> _Ending:
    # The report needs DataFrames of only the sessions it shows, unless
    # every table is built anyway.
    builder = _new_builder(spool, args) if frames else None
    digest = _new_digest(args) if report and not frames else None
    # --session: the ids are matched against the index before the replay,
    # which then keeps only the sessions chosen.
    resolved = resolve(args.sessions, spool.session_ids()) if args.sessions else None
    picks = Picks(resolved.chosen) if resolved is not None else None
    # Only the DataFrames need every alert at hand; the files and the
    # digest take each as it comes (see finish).
    done = finish(
        spool,
        files=files,
        builder=builder,
        digest=digest,
        helper=helper,
        keep_alerts=builder is not None,
        picks=picks,
    )
    tables = builder.build(done.alerts) if builder is not None else None
    return _Ending(True, done.sessions, tables, digest, done.forgotten, resolved, picks)


def _show(end: _Ending, stats: pipeline.RunStats, args: argparse.Namespace) -> None:
    """The report on standard output."""
    from analysis.terminal import StdoutConsole, columns_given

    console = StdoutConsole(highlight=False, emoji=False)
    summary = not args.no_summary
    # A file or a pipe has no width to fit: rich would assume 80 columns and
    # the report would leave some out. There, every column is shown, unless
    # COLUMNS says otherwise.
    if not console.is_terminal and not columns_given():
        console.width = _UNLIMITED
    table = end.picks is None  # --session shows its sessions in its place
    if end.tables is not None:
        limit = args.limit or None
        print_report(console, end.tables, limit=limit, summary=summary, sessions=table)
    elif end.digest is not None:
        width = console.width
        shown = end.digest.report(stats, summary=summary, width=width, sessions=table)
        console.print(shown)
    if end.picks is not None:
        _show_picks(console, end.picks)


def _show_picks(console: Console, picks: Picks) -> None:
    """The sessions --session chose, in table order, a blank line apart."""
    from analysis.sessionview import session_view

    for result in picks.sessions:
        alerts = picks.alerts_of(result.session.session_id)
        console.print(session_view(result, alerts))
        console.print()


# The console width for a file or pipe: wider than any table, so that none
# is cut; rich pads nothing to it (the report's tables and panel fit their
# content).
_UNLIMITED = 1_000


def print_report(console: Console, tables: SmtpTables, **options: Any) -> None:
    """``analysis.views.print_report``, imported only when a report is shown.

    The views need pandas; a quiet run that only writes files does not.
    """
    from analysis import views

    views.print_report(console, tables, **options)


def _new_builder(spool: Spool, args: argparse.Namespace) -> TableBuilder:
    from analysis.tables import TableBuilder

    return TableBuilder(spool.stats, rules=args.rules)


def _new_digest(args: argparse.Namespace) -> ReportDigest:
    from analysis.views import ReportDigest

    return ReportDigest(limit=args.limit or None, table=not args.sessions)


def _write(tables: SmtpTables, directory: str, fmt: Format, ending: _Finishing) -> bool:
    from analysis.export import write_tables

    try:
        write_tables(tables.frames(), directory, fmt)
        ending.written = True
    except KeyboardInterrupt as stop:
        # Held back while the files were renamed: all were.
        ending.written = isinstance(stop, RenamedThenStopped)
        raise KeyboardInterrupt(ending.abandoned()) from None
    except ExportError as exc:
        _error(str(exc))
        return False
    except OSError as exc:
        _error(_os_error_message(exc, action="write"))
        return False
    return True


def _once_each(paths: list[str]) -> list[str]:
    """``paths`` with every file after its first mention left out, warned of.

    Read twice, a capture's sessions would all come twice, under the same
    session ids (a shell glob that also matches a file named beside it).
    (Standard input twice is a usage error already.)
    """
    once, repeats = once_each(paths)
    for path, first in repeats:
        _error(f"warning: {path}: the same file as {first}, read once")
    return once


def _readable_captures(paths: list[str]) -> list[str]:
    """The ``paths`` that can be read, the others reported on stderr.

    A filter typed unquoted after the captures (``read a.pcap tcp port 25``)
    comes as several names that are no files: from a word that reads as a
    filter, those up to the next file are said as one (found in a new
    user's trial: one message a word, the hint repeated).
    """
    readable: list[str] = []
    at = 0
    while at < len(paths):
        path = paths[at]
        end = at + 1
        if _missing(path) and _looks_like_filter(path):
            while end < len(paths) and _missing(paths[end]):
                end += 1
        if _check_readable(" ".join(paths[at:end])):
            readable.append(path)
        at = end
    return readable


def _missing(path: str) -> bool:
    return path != "-" and not os.path.lexists(path)


def _check_readable(path: str) -> bool:
    """Report on stderr and return False if ``path`` cannot be read.

    Checked without opening it: opening and closing a named pipe would take
    the data from its writer, or end it.
    """
    if path == "-":
        return True
    try:
        _require_readable(path)
    except OSError as exc:
        message = _os_error_message(exc, path)
        if isinstance(exc, FileNotFoundError) and _looks_like_filter(path):
            # tcpdump and tshark take a filter after the file (a new user's
            # point): read takes none, and says how to get one.
            message += (
                "; read takes no packet filter: filter with tcpdump first, "
                "tcpdump -r CAPTURE -w - 'FILTER' | smtpscope read -"
            )
        _error(message)
        return False
    return True


# Words a BPF expression (pcap-filter(7)) starts with or joins with.
_FILTER_WORDS = frozenset(
    [
        "host",
        "net",
        "port",
        "portrange",
        "src",
        "dst",
        "ether",
        "ip",
        "ip6",
        "tcp",
        "udp",
        "icmp",
        "icmp6",
        "arp",
        "vlan",
        "proto",
        "less",
        "greater",
        "not",
        "and",
        "or",
    ]
)


def _looks_like_filter(name: str) -> bool:
    """Whether a capture name that is no file reads as a BPF expression."""
    words = name.replace("(", " ").replace("!", " not ").split()
    return any(word.lower() in _FILTER_WORDS for word in words[:2])


def _require_readable(path: str) -> os.stat_result:
    """``path``'s status, or the OSError that says why it cannot be read."""
    status = os.stat(path)
    if stat.S_ISDIR(status.st_mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    if not os.access(path, os.R_OK):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
    return status


class _ProgressBar:
    """A progress hook that shows a bar on stderr once the input is large.

    The pipeline reports bytes read over all captures and their total size,
    or None for standard input; the bar appears when either passes
    ``PROGRESS_THRESHOLD``, so small captures finish without flicker.
    """

    def __init__(self, enabled: bool) -> None:
        self._enabled = enabled
        self._task: TaskID | None = None
        self._progress: Progress | None = None
        if not enabled:
            return  # quiet and piped runs skip importing rich
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        )

    def __enter__(self) -> pipeline.ProgressHook | None:
        return self if self._enabled else None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._task is not None and self._progress is not None:
            self._progress.stop()

    def __call__(self, path: str, done: int, total: int | None) -> None:
        # The description is markup to rich, and file names are the user's.
        progress = self._progress
        if progress is None:
            return
        description = _markup_escape(escape_controls(os.path.basename(path)))
        if self._task is None:
            if max(done, total or 0) < PROGRESS_THRESHOLD:
                return
            progress.start()
            self._task = progress.add_task(description, total=total)
        progress.update(
            self._task, completed=done, total=total, description=description
        )


def _port_list(text: str) -> list[int]:
    ports = []
    for part in text.split(","):
        part = part.strip()
        # ASCII digits only: str.isdecimal and int take those of every script
        # (Arabic-Indic, full-width), which no port number is written in.
        if not (part.isascii() and part.isdecimal()) or not 1 <= int(part) <= 65535:
            raise argparse.ArgumentTypeError(f"{part!r} is not a TCP port (1-65535)")
        ports.append(int(part))
    return ports


def rules_file(path: str) -> Rules:
    try:
        return load_rules(path)
    except RulesError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _keylog_file(path: str) -> str:
    """A key log that can be read, checked as --rules is: a usage error
    before anything is read. Its contents are tshark's to judge.

    Only a file: the key log is read twice, here for its size and label,
    then by tshark, and a named pipe's writer hands its lines over once
    (found in review: the second read waited for ever; piped into
    /dev/stdin, nothing was decrypted, with a misleading warning).
    """
    try:
        status = _require_readable(path)
    except OSError as exc:
        raise argparse.ArgumentTypeError(_os_error_message(exc, path)) from None
    if not stat.S_ISREG(status.st_mode):
        raise argparse.ArgumentTypeError(
            f"{path}: not a regular file (it is read twice, the second time by "
            "tshark; save the key log to a file first)"
        )
    return path


def _session_list(text: str) -> list[str]:
    """Session ids or prefixes of them, comma-separated."""
    ids = [part.strip() for part in text.split(",")]
    for part in ids:
        # Session ids are "S" and base 32: a space or a control character
        # is a mistake (a pasted line), and an empty one would match all.
        if not part or not part.isascii() or not part.isalnum():
            raise argparse.ArgumentTypeError(
                f"{escape_controls(repr(part))} is not a session id or a prefix of one"
            )
    return ids


def _row_limit(text: str) -> int:
    if not text.isdecimal():
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of rows")
    return int(text)


def _configure_logging(verbosity: int) -> None:
    # Without -v only errors are logged: trouble with the input is reported
    # once, at the end, from RunStats.errors, and would otherwise show twice.
    level = {0: logging.ERROR, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    handler = _StderrHandler()
    handler.setFormatter(_EscapingFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # pyshark's event loop logs its own tracebacks when tshark is stopped
    # (Ctrl-C during --tls-keylog); they are noise, never the user's fault.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever ``sys.stderr`` is when a record arrives.

    While the progress bar is shown, rich puts a proxy in ``sys.stderr`` that
    prints above the bar; a stream bound once would garble the bar.
    """

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


class _EscapingFormatter(logging.Formatter):
    """Log messages may quote the wire; they reach the terminal escaped.

    Under ``-j N`` a line logged while a process reads its share begins
    with the share's number (``[2/2] ``): every process logs the captures
    it reads, and the same line twice would look like one capture read
    twice. With one process the lines are as they were.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        share = reading_share()
        if share is not None:
            line = f"[{share[0]}/{share[1]}] {line}"
        return escape_controls(line)


def _os_error_message(
    exc: OSError, path: str | None = None, action: str = "read"
) -> str:
    name = path if path is not None else exc.filename
    reason = exc.strerror or str(exc)
    if name is None:
        return f"cannot {action}: {reason}"
    return f"cannot {action} {os.fsdecode(name)}: {reason}"


def _error(message: str) -> None:
    print(f"{PROG}: {escape_controls(message)}", file=sys.stderr)


def _discard_stdout() -> None:
    # Python flushes stdout again at exit, which would raise a second
    # BrokenPipeError; pointing the descriptor at /dev/null prevents that.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


class _VersionAction(argparse.Action):
    """argparse's "version" action, looking the version up only when asked."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(
            option_strings,
            dest=argparse.SUPPRESS,
            default=argparse.SUPPRESS,
            nargs=0,
            help="show the program's version number and exit",
        )

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        print(f"{PROG} {_version()}")  # to stdout, as argparse's own does
        parser.exit()


def _version() -> str:
    import importlib.metadata  # only for --version

    try:
        return importlib.metadata.version("smtpscope")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def _markup_escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
