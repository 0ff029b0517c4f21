"""Child processes die with d1ops, even when d1ops is killed with SIGKILL.

wrangler runs in its own session, so a timeout or Ctrl-C can kill all of it (bin/wrangler.js starts a second
node, cli.js, which starts workerd). But then, when d1ops is SIGKILLed, nothing in the CI job's process group
reaches it (seen: `wrangler d1 export` at full CPU for minutes), and a parent-death signal on the direct child
alone would leave cli.js and workerd running. So on Linux the direct child is a tiny supervisor shell: it gets
SIGTERM when d1ops dies (prctl PR_SET_PDEATHSIG, kept across exec) and then kills its whole process group,
wrangler included. Elsewhere wrangler is started directly, as before (still killed on timeout and Ctrl-C).

Nothing here may keep d1ops alive after it is done: the timeout is a daemon timer of d1ops's own (sh's `_timeout`
is a non-daemon timer that only a witnessed exit cancels: after a Ctrl-C it kept d1ops waiting at exit for the
whole timeout, its output printed, its pipes open), and Ctrl-C or SIGTERM arriving while a process is being started
is held until d1ops has the process's handle (before it, nobody could kill it). At exit, whatever is still
running is killed (processes started from daemon threads included).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import math
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from d1ops.errors import UsageError

SUPERVISOR = 'trap "kill -KILL 0" TERM HUP; "$@" & wait $!'
SIGNALLED = range(129, 160)  # the supervisor's exit code when wrangler died of signal N: 128 + N
_PR_SET_PDEATHSIG = 1
_LIBC: Any = None
if sys.platform.startswith("linux"):
    try:
        _LIBC = ctypes.CDLL(None, use_errno=True)
    except OSError:  # pragma: no cover - no libc to call
        _LIBC = None


def supervised(argv: list[str]) -> tuple[list[str], Callable[[], None] | None]:
    """The argv to start and the preexec function that ties it to this process (argv as is if unsupported)."""
    if _LIBC is None or not Path("/bin/sh").exists():
        return argv, None
    parent = os.getpid()

    def die_with_parent() -> None:  # runs in the child, between fork and exec
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # d1ops died before the prctl: nobody will send the signal
            os._exit(137)

    return ["/bin/sh", "-c", SUPERVISOR, "d1ops-wrangler", *argv], die_with_parent


DEFAULT_TIMEOUT = 300.0
TIMEOUT_VAR = "D1OPS_WRANGLER_TIMEOUT"
_HELD = (signal.SIGINT, signal.SIGTERM)
_running: set[int] = set()  # process groups of the calls under way
_running_lock = threading.Lock()


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM while a process is being started (main thread only: the only one Python raises
    KeyboardInterrupt in); they are delivered, as if sent then, when the block ends."""
    handlers = {sig: signal.getsignal(sig) for sig in _HELD}
    if threading.current_thread() is not threading.main_thread() or None in handlers.values():
        yield
        return
    caught: list[int] = []
    for sig in _HELD:
        signal.signal(sig, lambda signum, _frame: caught.append(signum))
    try:
        yield
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        for signum in caught:
            signal.raise_signal(signum)


def kill_group(pgid: int | None) -> None:
    """SIGKILL a call's whole process group (its own session: wrangler, its node, workerd)."""
    if pgid is None:
        return
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, OSError):
        pass


class Watchdog:
    """The timeout of one call: a daemon timer that kills the call's process group. Tracks the group as running
    until `done()`, so d1ops's exit kills it if it is still there."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.fired = False
        self.pgid: int | None = None
        self._timer: threading.Timer | None = None

    def start(self, pgid: int) -> None:
        self.pgid = pgid
        with _running_lock:
            _running.add(pgid)

        def fire() -> None:
            self.fired = True
            kill_group(pgid)

        self._timer = threading.Timer(self.limit, fire)
        self._timer.daemon = True
        self._timer.start()

    def done(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        with _running_lock:
            _running.discard(self.pgid or -1)


@atexit.register
def _kill_the_rest() -> None:
    """d1ops is exiting: no call it started outlives it (a call from a daemon thread still under way)."""
    with _running_lock:
        groups = list(_running)
        _running.clear()
    for pgid in groups:
        kill_group(pgid)


def timeout_from_environment() -> float:
    """D1OPS_WRANGLER_TIMEOUT: seconds, a positive number (default 300)."""
    text = os.environ.get(TIMEOUT_VAR, "").strip()
    if not text:
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise UsageError(
            f"{TIMEOUT_VAR}={text!r} is not a number of seconds: set it to a positive number (e.g. 900), or unset "
            f"it for the default of {DEFAULT_TIMEOUT:g} s."
        )
    return value
