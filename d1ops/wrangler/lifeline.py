"""Child processes die with d1ops, even when d1ops is killed with SIGKILL.

wrangler runs in its own session, so a timeout or Ctrl-C can kill all of it (bin/wrangler.js starts a second
node, cli.js, which starts workerd). But then, when d1ops is SIGKILLed, nothing in the CI job's process group
reaches it (seen: `wrangler d1 export` at full CPU for minutes), and a parent-death signal on the direct child
alone would leave cli.js and workerd running. So on Linux the direct child is a tiny supervisor shell: it gets
SIGTERM when d1ops dies (prctl PR_SET_PDEATHSIG, kept across exec) and then kills its whole process group,
wrangler included. Elsewhere wrangler is started directly, as before (still killed on timeout and Ctrl-C).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
