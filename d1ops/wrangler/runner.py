"""The one seam to the outside world: every `wrangler` process d1ops starts is started here.

Each call builds an argv list (never a shell string), runs with a timeout and no stdin (wrangler never waits
on a prompt), and turns any failure into `WranglerError(argv, exit_code, message)` with secrets redacted.
`Wrangler.processes` counts the processes started: the cost model of every command (~1 s each).
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import sh

from d1ops.errors import ContentionError, OutcomeUnknown, UsageError, WranglerError, WranglerNotFound
from d1ops.project.about import TESTED_WRANGLER
from d1ops.project.config import Environment
from d1ops.support import progress
from d1ops.wrangler.lifeline import (
    SIGNALLED,
    Watchdog,
    interrupts_held,
    kill_group,
    supervised,
    timeout_from_environment,
)
from d1ops.wrangler.locate import INSTALL_HINT, find_wrangler, version_from_package
from d1ops.wrangler.output import (
    NEWER_LOCAL_STATE_NOTE,
    UNREACHABLE,
    Statement,
    api_base_url,
    error_text,
    explain_local_failure,
    explain_remote_failure,
    parse_json,
    parse_statements,
    redact,
)

__all__ = ["Statement", "Wrangler", "find_wrangler", "redact"]

PINNED_MAJOR = 4
BUSY_RETRIES = 4
QUIET_ENV = {
    "WRANGLER_SEND_METRICS": "false",
    "WRANGLER_SEND_ERROR_REPORTS": "false",
    "WRANGLER_HIDE_BANNER": "true",
    "CLOUDFLARE_CF_FETCH_ENABLED": "false",
    "NO_COLOR": "1",
    "FORCE_COLOR": "0",
}


_TRANSIENT_LOCAL = ("SQLITE_BUSY", "database is locked", "The Workers runtime failed to start", "false == true")


def _is_transient_local_failure(args: list[str], detail: str) -> bool:
    """A local call that failed before changing anything, and may work when tried again."""
    if NEWER_LOCAL_STATE_NOTE in detail:  # workerd failed to start for good: trying again changes nothing
        return False
    if "SQLITE_BUSY" in detail or "database is locked" in detail:
        return True
    return "--local" in args and any(marker in detail for marker in _TRANSIENT_LOCAL)


def _kill_group(cmd: sh.RunningCommand | None) -> None:
    kill_group(cmd.pid if cmd is not None else None)


class _TimedOut(Exception):
    """The call's watchdog killed it."""


def _wait(cmd: sh.RunningCommand, watchdog: Watchdog) -> None:
    """Until the call ends; killed by its watchdog, it timed out."""
    try:
        cmd.wait()
    except sh.ErrorReturnCode:
        if watchdog.fired:
            raise _TimedOut from None
        raise


def _shown(argv: list[str], env: dict[str, str], *, cut: int = 160) -> list[str]:
    """The argv as errors show it: `wrangler …`, secrets out, huge arguments cut (-v: whole, to rerun it)."""
    shown = [redact(a, env) for a in ["wrangler", *argv[1:]]]
    return [a if len(a) <= cut else a[: cut - 10] + f"…({len(a)} chars)" for a in shown]


def _timeout_message(limit: float, remote: bool, env: dict[str, str]) -> str:
    message = f"wrangler did not finish within {limit:g} s and was stopped."
    if remote:
        return message + (
            f" No answer from the Cloudflare API at {api_base_url(env)}: check the network "
            "(and CLOUDFLARE_API_BASE_URL if set), or raise D1OPS_WRANGLER_TIMEOUT for a large import/export."
        )
    return message + " Raise D1OPS_WRANGLER_TIMEOUT if the database is large."


def _decode(data: bytes | str) -> str:
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else data


class _Counter:
    def __init__(self) -> None:
        self.value = 0
        self._lock = threading.Lock()

    def add(self) -> None:
        with self._lock:
            self.value += 1


def _tail(path: Path, size: int = 65536) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(max(0, path.stat().st_size - size))
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _version_from_process(runner: Runner) -> str:
    out = runner.run(["--version"], timeout=60)
    match = re.search(r"(\d+\.\d+\.\d+)", out)
    if not match:
        raise WranglerError(["wrangler", "--version"], 0, f"unexpected version output: {out.strip()[:200]}")
    return match.group(1)


class Runner:
    """Starts wrangler processes for one project. Thread-safe; counts the processes it starts."""

    def __init__(
        self,
        root: Path,
        wrangler_config: Path,
        *,
        binary: str | None = None,
        timeout: float | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.root = root
        self.wrangler_config = wrangler_config
        self._binary = binary
        self.timeout = timeout or timeout_from_environment()
        self.extra_env = dict(extra_env or {})
        self._counter = _Counter()
        self._version: str | None = None
        self._remote_failure: WranglerError | None = None
        self._version_checked = False

    @property
    def processes(self) -> int:
        """How many wrangler processes this project (and its scratch siblings) started so far."""
        return self._counter.value

    # -- the seam -------------------------------------------------------------------------------------------
    @property
    def binary(self) -> str:
        if self._binary is None:
            self._binary = find_wrangler(self.root)
        return self._binary

    def environ(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(QUIET_ENV)
        env.update(self.extra_env)
        return env

    def run(self, args: list[str], *, timeout: float | None = None, out_file: Path | None = None) -> str:
        """Start `wrangler ARGS` and return its stdout; the only place a process is started.

        With `out_file`, stdout goes to that file instead of memory (huge outputs) and "" is returned.
        """
        if not self._version_checked and args != ["--version"]:
            self._version_checked = True
            self.check_version()  # read from wrangler's package.json: no process, unless it is elsewhere
        argv = [self.binary, *args]
        env = self.environ()
        remote = _is_remote(args)
        if remote and self._remote_failure is not None:
            # The API refused the token or could not be reached: every further remote call of this run would
            # fail the same way (after up to a timeout each), so none is started.
            raise WranglerError(
                _shown(argv, env),
                None,
                f"{self._remote_failure.detail}\n(not attempted: an earlier remote call of this run failed so)",
            )
        self._counter.add()
        limit = timeout or self.timeout
        options: dict[str, Any] = {"_out": str(out_file)} if out_file else {}
        launch, preexec = supervised(argv)
        options.update({"_preexec_fn": preexec} if preexec is not None else {})
        cmd: sh.RunningCommand | None = None
        watchdog, status = Watchdog(limit), "not started"
        started = progress.wrangler_started(_shown(argv, env, cut=100_000))  # the progress line and -v (progress.py)
        try:
            # Its own process group: a timeout or Ctrl-C kills all of it (node, node, workerd); SIGKILL of d1ops
            # too, through the supervisor (lifeline.py). Nothing goes on changing a database after d1ops stopped.
            with interrupts_held():  # a Ctrl-C before `cmd` is ours would leave the process to nobody
                cmd = sh.Command(launch[0])(
                    *launch[1:],
                    _cwd=str(self.root),
                    _env=env,
                    _in="",
                    _new_session=True,
                    _bg=True,
                    _bg_exc=False,
                    _return_cmd=True,
                    _tty_out=False,
                    _decode_errors="replace",
                    **options,
                )
                watchdog.start(cmd.pid)
            status = "interrupted"
            _wait(cmd, watchdog)
            status = "exit 0"
        except sh.SignalException as exc:  # killed (OOM killer, an operator): it may have done anything
            status = f"killed by signal {-exc.exit_code}"
            raise OutcomeUnknown(
                _shown(argv, env), None, f"wrangler was killed by signal {-exc.exit_code} before it finished"
            ) from None
        except sh.ErrorReturnCode as exc:
            status = f"exit {exc.exit_code}"
            if preexec is not None and exc.exit_code in SIGNALLED:  # the supervisor's child died of a signal
                status = f"killed by signal {exc.exit_code - 128}"
                raise OutcomeUnknown(
                    _shown(argv, env), None, f"wrangler was killed by signal {exc.exit_code - 128} before it finished"
                ) from None
            out = _tail(out_file) if out_file else exc.stdout.decode("utf-8", "replace")
            err = exc.stderr.decode("utf-8", "replace")
            message = redact(error_text(out, err), env)
            if "SQLITE_BUSY" in err and "SQLITE_BUSY" not in message:
                message += " (workerd: database is locked: SQLITE_BUSY)"
            local = explain_local_failure(err) if not remote else None
            if local:
                message += f"\n{local}"
            explained = explain_remote_failure(message, env) if remote else None
            error = WranglerError(_shown(argv, env), exc.exit_code, explained or message)
            if explained:
                self._remote_failure = error
            raise error from None
        except _TimedOut:
            status = f"timed out after {limit:g} s"
            error = OutcomeUnknown(_shown(argv, env), None, _timeout_message(limit, remote, env))
            if remote:
                self._remote_failure = error
            raise error from None
        except (sh.CommandNotFound, FileNotFoundError) as exc:
            _kill_group(cmd)
            raise WranglerNotFound(
                f"wrangler could not be started ({exc}). Install it in the Worker's project: `{INSTALL_HINT}`."
            ) from None
        except OSError as exc:  # E2BIG, EMFILE, ENOMEM…: the OS refused to start it, said as itself
            _kill_group(cmd)
            raise WranglerError(
                _shown(argv, env),
                None,
                f"the operating system could not start wrangler: {exc.strerror or exc} "
                f"({errno.errorcode.get(exc.errno or 0, exc.errno)})",
            ) from None
        except BaseException:  # KeyboardInterrupt, SystemExit: stop wrangler with us
            _kill_group(cmd)
            raise
        finally:
            watchdog.done()
            progress.wrangler_finished(_shown(argv, env, cut=100_000), started, status)
        return "" if out_file else _decode(cmd.stdout)

    def version(self) -> str:
        """The wrangler version, read from its package.json when possible (no process), else `--version`."""
        if self._version is None:
            self._version = version_from_package(self.binary) or _version_from_process(self)
        return self._version

    def check_version(self) -> str:
        version = self.version()
        if int(version.split(".")[0]) < PINNED_MAJOR:
            raise UsageError(
                f"wrangler {version} is older than the supported major {PINNED_MAJOR}. "
                f"Install a tested one in the Worker's project: `{INSTALL_HINT}@{TESTED_WRANGLER[1]}` "
                f"(d1ops is tested with {TESTED_WRANGLER[0]} to {TESTED_WRANGLER[1]})."
            )
        return version


class Wrangler(Runner):
    """The D1 commands d1ops uses, each one wrangler process (retried only where nothing was done)."""

    def sibling(self, root: Path, wrangler_config: Path) -> Wrangler:
        """The same wrangler for another (scratch) project, counted in the same total."""
        other = Wrangler(root, wrangler_config, binary=self.binary, timeout=self.timeout, extra_env=self.extra_env)
        other._counter = self._counter
        other._version = self._version
        other._version_checked = self._version_checked
        return other

    def target_args(self, env: Environment) -> list[str]:
        return ["--remote" if env.is_remote else "--local", *self.env_args(env)]

    def env_args(self, env: Environment) -> list[str]:
        """--env/--config only: remote-only commands (`d1 info`, `d1 time-travel`) reject --remote/--local."""
        args = ["--env", env.wrangler_env] if env.wrangler_env else []
        return [*args, "--config", str(self.wrangler_config)]

    def execute(
        self,
        env: Environment,
        *,
        command: str | None = None,
        file: Path | None = None,
        discard_results: bool = False,
    ) -> list[Statement]:
        """`d1 execute DB --json` with --command or --file; retried while the local database is busy.

        `discard_results` sends wrangler's output (one JSON element per statement) to a temporary file
        instead of memory: for dumps of a million rows. Then [] is returned.
        """
        if (command is None) == (file is None):
            raise UsageError("execute needs exactly one of --command or --file.")
        args = ["d1", "execute", env.binding.binding, *self.target_args(env), "--json", "--yes"]
        args += ["--command", command] if command is not None else ["--file", str(file)]
        try:
            if discard_results:
                with tempfile.TemporaryDirectory(prefix="d1ops-out-") as tmp:
                    self.run_retrying_busy(args, out_file=Path(tmp) / "out.json")
                return []
            return parse_statements(self.run_retrying_busy(args), args)
        except OutcomeUnknown:
            raise
        except WranglerError as exc:
            if file is not None and env.is_remote and UNREACHABLE.search(exc.detail):
                # The import may have reached D1 before the connection went: its outcome is unknown.
                raise OutcomeUnknown(exc.argv, exc.wrangler_exit_code, exc.detail) from None
            raise

    def forget_remote_failure(self) -> None:
        """Let remote calls be tried again (reading back the state after a lost connection)."""
        self._remote_failure = None

    def run_retrying_busy(self, args: list[str], *, out_file: Path | None = None) -> str:
        """`run`, tried again while a local database is busy (SQLITE_BUSY means nothing was done).

        Two wrangler processes on one project contend for its local state: one fails with SQLITE_BUSY,
        while running a statement or even while its workerd starts ("The Workers runtime failed to start").
        Under load, miniflare's D1 object also fails now and then reading its change counter before a
        statement (`assert(changes !== undefined)`, printed as "false == true"); it runs every call in one
        transaction, so such a call changed nothing and is tried again too (seen ~1 in 300 calls in the suite).
        """
        for attempt in range(BUSY_RETRIES + 1):
            try:
                return self.run(args, out_file=out_file)
            except WranglerError as exc:
                if not _is_transient_local_failure(args, exc.detail):
                    raise
                if attempt == BUSY_RETRIES:
                    raise ContentionError(
                        exc.argv,
                        exc.wrangler_exit_code,
                        f"{exc.detail}\nThe database stayed locked by another process after "
                        f"{BUSY_RETRIES + 1} tries. Wait for the other wrangler/d1ops run to finish and retry.",
                    ) from None
                time.sleep(0.3 * 2**attempt)
        raise AssertionError("unreachable")

    def export(
        self,
        env: Environment,
        output: Path,
        *,
        tables: tuple[str, ...] = (),
        no_data: bool = False,
        no_schema: bool = False,
    ) -> None:
        args = ["d1", "export", env.binding.binding, *self.target_args(env), "--output", str(output)]
        for table in tables:
            args += ["--table", table]
        if no_data:
            args.append("--no-data")
        if no_schema:
            args.append("--no-schema")
        self.run_retrying_busy(args)

    def create(self, name: str, *, location: str | None = None) -> str:
        args = ["d1", "create", name, "--config", str(self.wrangler_config)]
        if location:
            args += ["--location", location]
        return self.run(args)

    def info(self, env: Environment) -> dict[str, Any]:
        args = ["d1", "info", env.binding.binding, *self.env_args(env), "--json"]
        return parse_json(self.run(args), args)

    def list_databases(self) -> list[dict[str, Any]]:
        args = ["d1", "list", "--json", "--config", str(self.wrangler_config)]
        data = parse_json(self.run(args), args)
        return data if isinstance(data, list) else []

    def time_travel_info(self, env: Environment, *, timestamp: str | None = None) -> dict[str, Any]:
        args = ["d1", "time-travel", "info", env.binding.binding, *self.env_args(env), "--json"]
        if timestamp:
            args += ["--timestamp", timestamp]
        return parse_json(self.run(args), args)

    def time_travel_restore(
        self, env: Environment, *, bookmark: str | None = None, timestamp: str | None = None
    ) -> dict[str, Any]:
        args = ["d1", "time-travel", "restore", env.binding.binding, *self.env_args(env), "--json"]
        if bookmark:
            args += ["--bookmark", bookmark]
        elif timestamp:
            args += ["--timestamp", timestamp]
        else:
            raise UsageError("time-travel restore needs a bookmark or a timestamp.")
        return parse_json(self.run(args), args)


def _is_remote(args: list[str]) -> bool:
    """Does this wrangler call talk to the Cloudflare API? (Every `d1` command not run with --local.)"""
    return args[:1] == ["d1"] and "--local" not in args
