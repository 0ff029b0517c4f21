"""Nothing d1ops starts outlives it, and nothing keeps it alive after it is done: a Ctrl-C the moment a process
is being started still stops it, a timeout is a daemon timer, and each call's end is said as it was."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import sh

from d1ops.errors import OutcomeUnknown
from d1ops.wrangler.runner import Runner
from tests.conftest import Proj


def sleeper(tmp_path: Path) -> Path:
    """A stand-in for wrangler that runs for a minute, in a child of its own (as node runs workerd)."""
    path = tmp_path / "slow-wrangler"
    path.write_text("#!/bin/sh\nsleep 60 &\nwait\n", encoding="utf-8")
    path.chmod(0o755)
    return path


def runner(tmp_path: Path, **kwargs: Any) -> Runner:
    made = Runner(tmp_path, tmp_path / "wrangler.toml", binary=str(sleeper(tmp_path)), **kwargs)
    made._version_checked = True  # the stand-in has no version to read
    return made


def group_gone(pgid: int, limit: float = 10.0) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def lingering_threads(before: set[threading.Thread]) -> list[str]:
    """Threads that would keep d1ops from exiting (not daemon), started since `before`."""
    time.sleep(0.2)
    return [t.name for t in threading.enumerate() if t.is_alive() and not t.daemon and t not in before]


def test_ctrl_c_while_a_process_is_being_started_stops_it_and_keeps_no_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race CI hit: Ctrl-C after the process exists but before d1ops holds its handle. The process went on
    (nobody could kill it) and sh's non-daemon timeout timer kept d1ops alive at exit for the whole timeout."""
    real = sh.Command
    started: list[int] = []

    class CtrlCAtSpawn:
        def __init__(self, path: str) -> None:
            self.command = real(path)

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            cmd = self.command(*args, **kwargs)
            started.append(cmd.pid)
            signal.raise_signal(signal.SIGINT)  # Ctrl-C now: the process runs, run() has no handle on it yet
            return cmd

    monkeypatch.setattr(sh, "Command", CtrlCAtSpawn)
    before = set(threading.enumerate())

    with pytest.raises(KeyboardInterrupt):
        runner(tmp_path).run(["d1", "execute", "DB", "--local"])

    assert started and group_gone(started[0]), "the process started as Ctrl-C came outlived the interrupt"
    assert lingering_threads(before) == []


def test_a_call_past_its_timeout_is_killed_and_said_so_without_a_lingering_timer(tmp_path: Path) -> None:
    made = runner(tmp_path, timeout=1.0)
    before = set(threading.enumerate())

    with pytest.raises(OutcomeUnknown, match="wrangler did not finish within 1 s and was stopped"):
        made.run(["d1", "execute", "DB", "--local"])

    assert lingering_threads(before) == []
    leftovers = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _runs(p, str(tmp_path))]
    assert leftovers == []


def _runs(proc: Path, needle: str) -> bool:
    try:
        return needle in (proc / "cmdline").read_bytes().decode("utf-8", "replace")
    except OSError:
        return False


def test_a_wrangler_timeout_that_is_not_a_number_is_a_usage_error(proj: Proj) -> None:
    for value in ("abc", "0", "-5", "nan"):
        result = proj.run("status", "dev", env={"D1OPS_WRANGLER_TIMEOUT": value})
        assert result.exit_code == 2, result.output
        assert f"D1OPS_WRANGLER_TIMEOUT='{value}' is not a number of seconds: set it to a positive number" in (
            result.stderr
        )


def test_verbose_says_how_each_call_ended_also_when_another_error_is_being_handled(proj: Proj) -> None:
    """The gate refuses production (staging has nothing yet): the release that follows runs while that refusal is
    handled, and succeeds. It used to be labelled "killed, timed out or not started"."""
    result = proj.run("-v", "migrate", "production")

    assert result.exit_code == 1
    endings = re.findall(r"  # \d+\.\d\d s, (.*)$", result.stderr, re.MULTILINE)
    assert endings[-1] == "exit 0", result.stderr  # the release of the lock
    assert set(endings) <= {"exit 0", "exit 1"}, result.stderr  # exit 1: the state read of a never-tracked database
