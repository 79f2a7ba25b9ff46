"""The ``smtpscope`` command: ``analysis.cli.main`` behind a quiet Ctrl-C.

Its first step holds Ctrl-C and SIGTERM (``analysis.interrupts``), before
Python loads the modules (about 0.1 s): one that comes meanwhile, or while
``main`` checks the arguments and starts, ends the reading as soon as it
begins, and the tables are still written. This module imports almost
nothing, so what is left uncovered is the interpreter's own start (with
``site`` and the entry point's imports: ``re`` in the script pip writes,
``logging`` in the package, for its NullHandler) and the import of these
two small modules: a Ctrl-C there ends the command as it ends any Python
program, killed by the signal or with a traceback, and writes no tables.
On this project's machine that is the first 20 ms or so, about 10 of them
Python's own start; ``typing``, which the package and ``interrupts`` once
imported there, now comes after the hold (found in review: 4 ms more).
"""

from __future__ import annotations

import sys

from analysis import interrupts

INTERRUPTED = 130  # as analysis.cli.Exit.INTERRUPTED, without importing it


def run() -> int:
    interrupts.hold()
    try:
        from analysis.cli import main

        return main()
    except KeyboardInterrupt:  # only where stops cannot be held (a thread)
        sys.stderr.write("smtpscope: interrupted\n")
        return INTERRUPTED
