"""The rich console that the report and the dashboard print to.

Kept out of ``analysis.cli`` so that a run that prints no table (``read -q``)
does not load rich at all.
"""

from __future__ import annotations

import errno
import os

from rich.console import Console


class StdoutConsole(Console):
    """Standard output, where a closed pipe is the reader's choice.

    rich would exit with status 1 on a closed pipe, which the CLI uses for
    bad input; this raises ``BrokenPipeError`` for ``cli.main`` to turn into
    the status of a closed pipe instead.
    """

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))
