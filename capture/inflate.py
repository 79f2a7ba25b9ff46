"""A gzip-compressed capture inflated by a process of its own, into a pipe.

libpcap reads classic pcap from any stdio stream but knows no gzip. Here a
child Python process decompresses the file (``capture.pcapfile.Inflated``,
the decoder the Python reader uses) into a pipe, whose other end libpcap
reads and filters in a thread of this process
(``capture.libpcap.FilteredPipe``). A thread would not do for inflating:
it needs the GIL back after every piece zlib inflates, and while this
process decodes in Python it waits up to a switch interval (5 ms) for it,
which made inflating a gigabyte three times slower.

The child reads the file through a descriptor it shares with this process,
so the shared file offset says how far it has read, for a progress bar.
Run as ``python -m capture.inflate FD NAME``: the capture on descriptor
FD, what it inflates to on standard output, damage (named NAME) on
standard error and in the exit status.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

from capture.libpcap import widen_pipe
from capture.pcapfile import CaptureError, Inflated

_DAMAGED = 3  # the child's exit status when the gzip data is bad
_MALLOC_KEEP = 64 << 20
# Where the capture package lies, for a child started outside a checkout's
# or an installation's usual path.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class InflatePump:
    """Inflates ``path`` into a pipe; libpcap takes ``read_fd`` over.

    Opening the file raises OSError. ``join`` waits for the child and says
    what damage stopped it early, if any. A reader that closes its end
    early stops the child at its next write.
    """

    def __init__(self, path: str) -> None:
        self._file = open(path, "rb")  # noqa: SIM115 (closed in join)
        self.read_fd, write_fd = os.pipe()
        # The inflater runs ahead of libpcap by as much as the pipe holds.
        widen_pipe(write_fd)
        fd = self._file.fileno()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, (_ROOT, env.get("PYTHONPATH")))
        )
        # glibc maps every allocation of a MiB or more afresh, and gives
        # freed heap back at once: each chunk read and inflated then cost
        # hundreds of page faults, a third of the child's time (1.3 of 4.5 s
        # on 1 GB). With these it keeps reusing the same heap.
        env.setdefault("MALLOC_MMAP_THRESHOLD_", str(_MALLOC_KEEP))
        env.setdefault("MALLOC_TRIM_THRESHOLD_", str(_MALLOC_KEEP))
        try:
            self._child = subprocess.Popen(
                [sys.executable, "-m", "capture.inflate", str(fd), path],
                stdin=subprocess.DEVNULL,
                stdout=write_fd,
                stderr=subprocess.PIPE,
                pass_fds=(fd,),
                env=env,
            )
        except OSError:
            os.close(self.read_fd)
            self._file.close()
            raise
        finally:
            os.close(write_fd)  # the child's now: its end is the only one

    @property
    def raw_bytes(self) -> int:
        """Compressed bytes the child has read so far, for a progress bar."""
        with contextlib.suppress(OSError, ValueError):
            return os.lseek(self._file.fileno(), 0, os.SEEK_CUR)
        return 0

    def join(self) -> str | None:
        """Wait for the child; what stopped it before the end, if anything:
        damage, or the child's own failure (killed, out of memory), after
        which what libpcap read may lack the rest of the capture."""
        _, errors = self._child.communicate()
        self._file.close()
        status = self._child.returncode
        if status == 0:
            return None
        said = errors.decode(errors="replace").strip()
        if status == _DAMAGED:
            return said or "damaged"
        last = said.splitlines()[-1] if said else f"exit status {status}"
        return f"inflating stopped: {last}"

    def stop(self) -> None:
        """End the child now: its reader is gone or going, and whatever it
        would say of the rest of the file, the Python reader says again."""
        if self._child.poll() is None:
            self._child.terminate()
        self.join()


def _pump(fd: int, name: str) -> int:
    """Inflate the capture on ``fd`` to standard output; the exit status."""
    # Ctrl-C is for the parent, which ends this process by closing the pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with os.fdopen(fd, "rb", buffering=0) as stream:
        source = Inflated(stream, name)
        try:
            while chunk := source.read():
                view = memoryview(chunk)
                while view:
                    view = view[os.write(1, view) :]
        except CaptureError as exc:
            print(exc, file=sys.stderr)
            return _DAMAGED
        except OSError:
            return 0  # the reader closed its end: it stopped early
    return 0


if __name__ == "__main__":
    sys.exit(_pump(int(sys.argv[1]), sys.argv[2]))
