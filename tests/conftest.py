"""Settings every test starts from, whatever shell started the suite."""

from __future__ import annotations

import signal


def pytest_configure() -> None:
    # A shell starts a background job with Ctrl-C ignored, and smtpscope
    # keeps a stop it was started ignoring ignored, as it should. The tests
    # that press Ctrl-C, here or in a command they start, would then see
    # nothing happen: give the suite Python's own handler, which commands
    # started from it get back at their start.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
