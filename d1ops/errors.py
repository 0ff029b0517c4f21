"""Every error d1ops raises on purpose. Each message says what happened and what to do next."""

from __future__ import annotations

import os
import traceback
from collections.abc import Sequence

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_PENDING = 3
EXIT_INTERRUPTED = 130


class D1OpsError(Exception):
    """Base of all d1ops errors; `exit_code` is what the CLI exits with."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(D1OpsError):
    """environments.yaml or the wrangler config is missing, malformed or inconsistent (exit 2)."""

    exit_code = EXIT_USAGE


class UsageError(D1OpsError):
    """A command was called with arguments that cannot work (exit 2)."""

    exit_code = EXIT_USAGE


class WranglerNotFound(D1OpsError):
    """No wrangler binary could be found."""


class WranglerError(D1OpsError):
    """A wrangler process failed, timed out, or printed something d1ops could not read."""

    def __init__(self, argv: Sequence[str], exit_code: int | None, message: str) -> None:
        self.argv = list(argv)
        self.wrangler_exit_code = exit_code
        self.detail = message
        shown = " ".join(self.argv)
        super().__init__(f"{message}\n  command: {shown}")


class OutcomeUnknown(WranglerError):
    """A wrangler call that may have reached D1 did not finish (timed out, killed, connection lost): whether it
    changed the database is unknown until the state is read back. Never retried."""


class ContentionError(WranglerError):
    """The local database stayed locked by another process (SQLITE_BUSY) after retries."""


class MigrationFailed(D1OpsError):
    """A migration's SQL failed; nothing of it was recorded."""


class LockHeld(D1OpsError):
    """Another d1ops run holds the environment's lock."""


class GateRefused(D1OpsError):
    """A promotion gate, a checksum check or a confirmation refused the run."""


class BackupFailed(D1OpsError):
    """A backup could not be taken or did not verify; the database was not touched."""


class RestoreFailed(D1OpsError):
    """A restore could not be done; says what state the database is in."""


class Interrupted(D1OpsError):
    """d1ops was interrupted (Ctrl-C: exit 130; SIGTERM: 143); the message says what was read back."""

    exit_code = EXIT_INTERRUPTED


def unexpected_stop(exc: BaseException) -> tuple[int, str, type[D1OpsError]]:
    """How an unexpected exception stopped a run: its exit code, the words for it, the error to raise. Only
    Ctrl-C (130) and a signal turned into SystemExit (SIGTERM: 143) are interruptions; anything else is a bug
    in d1ops, said as one (exit 1), never as an interruption."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "d1ops was interrupted (SIGINT (Ctrl-C))", Interrupted
    if isinstance(exc, SystemExit):
        code = exc.code if isinstance(exc.code, int) else EXIT_INTERRUPTED
        name = "SIGTERM" if code == 143 else f"signal {code - 128}" if 128 < code < 160 else f"exit {code}"
        return code, f"d1ops was interrupted ({name})", Interrupted
    if not isinstance(exc, Exception):  # GeneratorExit and the like: the run was stopped from outside
        return EXIT_INTERRUPTED, f"d1ops was stopped ({type(exc).__name__})", Interrupted
    return EXIT_FAILED, f"d1ops stopped on an internal error ({type(exc).__name__}: {exc})", D1OpsError


def where_raised(exc: BaseException) -> str:
    """Where a bug raised: the innermost frame of d1ops's own code."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f"{os.sep}d1ops{os.sep}" in f.filename]
    if not frames:
        return type(exc).__name__
    frame = frames[-1]
    where = frame.filename[frame.filename.rfind(f"{os.sep}d1ops{os.sep}") + 1 :]
    return f"{type(exc).__name__} at {where}:{frame.lineno}"
