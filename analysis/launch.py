"""The ``smtpscope`` command: ``analysis.cli.main`` behind a quiet Ctrl-C.

``main`` turns a Ctrl-C into "interrupted" and exit status 130 once it has
taken over. Before that, while Python loads the modules (a few dozen
milliseconds), a Ctrl-C would end the command with a traceback; this
module imports almost nothing, so the window before ``run`` is as short as
the interpreter's own start.
"""

from __future__ import annotations

import sys

INTERRUPTED = 130  # as analysis.cli.Exit.INTERRUPTED, without importing it


def run() -> int:
    try:
        from analysis.cli import main

        return main()
    except KeyboardInterrupt:  # before main took over: nothing was read yet
        sys.stderr.write("smtpscope: interrupted\n")
        return INTERRUPTED
