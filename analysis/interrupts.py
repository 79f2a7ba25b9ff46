"""Ctrl-C and SIGTERM held from the command's first line until it reads.

``smtpscope read`` promises that Ctrl-C (or SIGTERM) stops reading and still
writes and shows what was read, with exit status 130. What keeps that
promise catches the KeyboardInterrupt around the reading. Before it, Python
loads the modules (about 0.1 s), the arguments are checked, the spool is
made and the ``-j`` workers are forked: an interrupt there ended the run
with no table written. So the two signals are only noted from the start
(``hold``) and raised as one KeyboardInterrupt where reading begins
(``release``; ``check`` raises it where a stop came, and holds on): a
run stopped before it read anything writes its tables, empty, as one
stopped later writes what it read. Nothing in between waits
for input, so a held stop is acted on within that fraction of a second.

Once reading is over, the first stop no longer ends anything: the tables
of what was read take a few seconds to write on a large capture, and
throwing them away for a Ctrl-C would lose the whole run. ``finishing``
makes that first stop only noted and said, as Zeek and tcpdump finish
their logs and files on the first one; a second is raised as a
KeyboardInterrupt, to abandon the writing, and any after it is let go
while the run deletes what it had begun to write.

Only the main thread may set signal handlers: elsewhere ``hold`` and
``finishing`` do nothing, and the signals keep the handlers they had.
"""

from __future__ import annotations

import contextlib
import signal

# Only mypy reads these: the command imports this module before it holds
# Ctrl-C (analysis.launch), so it imports as little as it can.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType
    from typing import Any, TypeAlias

    _Handler: TypeAlias = (
        Callable[[int, FrameType | None], Any] | int | signal.Handlers | None
    )

_STOPS = (signal.SIGINT, signal.SIGTERM)


class _Held:
    """The handlers from before ``hold``, and whether a stop is waiting."""

    __slots__ = ("holding", "original", "pending")

    def __init__(self) -> None:
        # Only the stops this holds (see ``take``).
        self.original: dict[int, _Handler] = {}
        self.holding = True  # until release
        self.pending = False

    def note(self, signum: int, frame: FrameType | None) -> None:
        self.pending = True


_held: _Held | None = None  # between hold and restore


def hold() -> None:
    """From now on only note Ctrl-C and SIGTERM; again, nothing more (the
    command's entry point holds them before ``cli.main`` does)."""
    global _held
    if _held is not None:
        return
    held = _Held()
    try:
        held.original = take(held.note)
    except ValueError:  # not the main thread: the first one raised
        return
    _held = held


def take(handler: _Handler) -> dict[int, _Handler]:
    """Have ``handler`` take Ctrl-C and SIGTERM, but for a stop the command
    was started ignoring (a shell ignores SIGINT for what it starts in the
    background), which stays ignored, as Python itself leaves it. Returns
    the handlers replaced, by signal."""
    return {
        stop: signal.signal(stop, handler)
        for stop in _STOPS
        if signal.getsignal(stop) is not signal.SIG_IGN
    }


def check() -> None:
    """Raise KeyboardInterrupt if a stop came while held; hold on."""
    held = _held
    if held is not None and held.holding and held.pending:
        held.pending = False
        raise KeyboardInterrupt


def release() -> None:
    """Act on Ctrl-C and SIGTERM again, each as a KeyboardInterrupt; raise
    one now if either came while they were held."""
    held = _held
    if held is None or not held.holding:
        return
    held.holding = False
    for stop in held.original:
        signal.signal(stop, _interrupt)
    if held.pending:
        held.pending = False
        raise KeyboardInterrupt


def restore() -> None:
    """Put back the handlers from before ``hold``, stops waiting or not."""
    global _held
    held, _held = _held, None
    if held is not None:
        _put_back(held.original)


class Finishing:
    """The stops that came once reading was over (see ``finishing``)."""

    __slots__ = ("_say", "_why", "abandoned", "stopped")

    def __init__(
        self, say: Callable[[], None], stopped: bool, why: Callable[[], str]
    ) -> None:
        self._say = say
        self._why = why
        # A stop came already (while reading): the next one abandons.
        self.stopped = stopped
        self.abandoned = False

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self.abandoned:
            # The run is already leaving: another KeyboardInterrupt would
            # cut short the deletion of its temporary files, and leave them.
            return
        if self.stopped:
            self.abandoned = True
            raise KeyboardInterrupt(self._why())
        self.stopped = True
        self._say()


def finishing(
    say: Callable[[], None], stopped: bool, why: Callable[[], str]
) -> Finishing:
    """From now on the first Ctrl-C or SIGTERM only calls ``say`` (which
    tells the user the work goes on), the next raises KeyboardInterrupt
    with the text ``why`` gives then (what the stop left), and any later
    one is let go, so that the cleanup it starts runs to its end.
    ``stopped``: one came already, so the next is the second. The returned object says
    whether a stop came. ``restore`` puts back the handlers from before
    ``hold``, as after a run."""
    state = Finishing(say, stopped, why)
    with contextlib.suppress(ValueError):  # not the main thread: as they were
        take(state.handle)
    return state


def let_go() -> None:
    """From now on Ctrl-C and SIGTERM do nothing: the work is done, and
    all that is left is to say it (``restore`` puts back the handlers)."""
    with contextlib.suppress(ValueError):  # not the main thread: as they were
        take(_nothing)


def _nothing(signum: int, frame: FrameType | None) -> None:
    return


def _put_back(handlers: dict[int, _Handler]) -> None:
    for stop, handler in handlers.items():
        # None: a handler not set from Python, which cannot be set back.
        signal.signal(stop, signal.SIG_DFL if handler is None else handler)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM too: what was read is still written, and child processes
    # (tshark for --tls-keylog) are stopped by the cleanup code.
    raise KeyboardInterrupt
