"""Decoding in a sacrificial process: a media file that aborts or hangs a decoder costs one entry, not the run.

A native crash in a video library (decord's ``std::bad_alloc`` on a hostile header, a segfault in a codec) cannot
be caught by ``try``: it kills the process it happens in, and a DataLoader worker's death stops training.
:class:`DecoderProcess` runs each decode in a child forked from the loading process (a DataLoader worker, or the
training process itself with ``num_workers=0``): the child, which holds a copy of the dataset since the fork,
receives the name of one of its methods and the arguments, decodes and resizes, and sends the resized frames back.
When it dies (a signal, an exit) or runs over ``timeout`` seconds, the call raises :class:`SampleError`
``crashed`` naming the file and the signal, a new child is forked for the next call, and the dataset skips and
counts the entry like any bad one. The child lives as long as its parent: the kernel kills it when the parent
dies (``PR_SET_PDEATHSIG``), and the parent kills it when it closes (processes forked later hold copies of the
pipe, so its closing is no signal to the child).

The cost is one copy of the resized frames through a socket per video (measured in ``benchmarks/RESULTS.md``, "Streaming
at scale"); ``--data.isolate_decoder false`` decodes in the loading process itself.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from multiprocessing import Pipe
from multiprocessing.connection import Connection

from datamodules.errors import SampleError

DECODE_TIMEOUT_S = 300.0
"""Seconds one decode may take before its child is killed and the entry reported ``crashed`` (an hour of 4K video
sampled at 1 fps decodes in tens of seconds)."""


def _die_with_parent() -> None:
    """Ask Linux to kill this process when its parent dies (a no-op elsewhere)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _serve(conn: Connection, parent: int, target) -> None:
    """The child: run ``(method, args, kwargs)`` calls on ``target`` until the pipe closes; a SampleError travels
    back as its three fields, any other exception as its traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the training process's to handle
    if "torch" in sys.modules:  # one thread, as in a DataLoader worker: a forked child that entered the parent's
        sys.modules["torch"].set_num_threads(1)  # OpenMP pool (the resize's) would wait on it forever
    _die_with_parent()
    if os.getppid() != parent:  # the parent died before the request above took effect
        return
    while True:
        try:
            method, args, kwargs = conn.recv()
        except (EOFError, OSError):
            return
        try:
            reply = ("ok", getattr(target, method)(*args, **kwargs))
        except SampleError as err:
            reply = ("sample_error", (err.reason, err.field, err.detail))
        except Exception:  # a bug, not a bad file: re-raised in the parent with the child's traceback
            reply = ("error", traceback.format_exc())
        conn.send(reply)


class DecoderProcess:
    """Calls methods of ``target`` in a forked child; a crash or a hang of the child is the entry's ``crashed``.

    Args:
        target: the object whose methods run in the child (the dataset: the child has it from the fork, so only a
            method's name and its arguments cross the pipe).
        timeout: seconds one call may take (:data:`DECODE_TIMEOUT_S`; > 0, checked by the dataset that reads the
            flag).

    One instance belongs to one process: used from another (a DataLoader worker forked after it was made), it
    starts a child of its own. It is never pickled with its child (a dataset sent to spawned workers makes a new
    one).
    """

    def __init__(self, target, timeout: float = DECODE_TIMEOUT_S):
        self.target, self.timeout = target, timeout
        self._owner = self._pid = None
        self._conn: Connection | None = None
        self.restarts = 0  # children lost to a crash or a hang in this process

    def _start(self) -> None:
        parent, child = Pipe()
        me = os.getpid()
        pid = os.fork()
        if pid == 0:  # the child: serve, then leave without running the parent's exit handlers
            code = 0
            try:
                parent.close()
                _serve(child, me, self.target)
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        child.close()  # the child holds the only copy of its end: its death closes the pipe
        self._owner, self._pid, self._conn = me, pid, parent

    def _stop(self) -> str:
        """End the current child (killed, if it still runs); how it ended (a signal's name or an exit code)."""
        pid, self._pid = self._pid, None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if pid is None:
            return "not started"
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            try:
                return signal.Signals(os.WTERMSIG(status)).name
            except ValueError:
                return f"signal {os.WTERMSIG(status)}"
        return f"exit code {os.WEXITSTATUS(status)}"

    def close(self) -> None:
        """End the child."""
        if self._owner == os.getpid() and self._pid is not None:
            self._stop()

    def __call__(self, method: str, *args, what: str = "the media file", **kwargs):
        """``target.method(*args, **kwargs)`` in the child; :class:`SampleError` ``crashed`` when the child dies or
        hangs. ``what`` names the file in that error."""
        if self._owner != os.getpid() or self._pid is None:
            self._start()
        try:
            self._conn.send((method, args, kwargs))
            if not self._conn.poll(self.timeout):
                self.restarts += 1
                self._stop()
                raise SampleError("crashed", "video", f"decoding {what} ran over {self.timeout:g} s and was stopped "
                                                      "(--data.decode_timeout)")
            kind, payload = self._conn.recv()
        except (EOFError, OSError, BrokenPipeError):
            self.restarts += 1
            how = self._stop()
            raise SampleError("crashed", "video", f"decoding {what} killed its decoder process ({how}; a native "
                                                  "crash in the media library)") from None
        if kind == "ok":
            return payload
        if kind == "sample_error":
            raise SampleError(*payload)
        raise RuntimeError(f"decoding {what} raised in the decoder process:\n{payload}")

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
