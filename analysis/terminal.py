"""The rich console that the report and the dashboard print to.

Kept out of ``analysis.cli`` so that a run that prints no table (``read -q``)
does not load rich at all.
"""

from __future__ import annotations

import errno
import os
from typing import Any

from rich.console import Console


def columns_given() -> bool:
    """Whether ``COLUMNS`` gives a width rich takes: digits, not zero.

    rich reads any digits as the width, and a width of 0 has it print
    nothing at all (found in review: ``COLUMNS=0 smtpscope read ...``
    showed no report and exited 0), so 0 counts as no width here.
    """
    value = os.environ.get("COLUMNS", "")
    return value.isdigit() and int(value) > 0


class StdoutConsole(Console):
    """Standard output, where a closed pipe is the reader's choice.

    rich would exit with status 1 on a closed pipe, which the CLI uses for
    bad input; this raises ``BrokenPipeError`` for ``cli.main`` to turn into
    the status of a closed pipe instead.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self._width is not None and self._width < 1:
            # COLUMNS=0: the terminal's own width, or 80 (see columns_given).
            self._width = None

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))
