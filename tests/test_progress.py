"""The progress line (a pseudo-terminal shows it, a pipe does not), colour only on a terminal and never with
NO_COLOR, -q prints nothing but errors, -v prints every wrangler call with its duration and exit code."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytest

from d1ops.support import progress
from tests.conftest import WRANGLER, Proj


def run_d1ops(proj: Proj, *args: str, tty: bool, extra_env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """d1ops in a child process: stderr on a pseudo-terminal (tty) or a pipe; stdout always piped."""
    env = {**os.environ, "D1OPS_WRANGLER": str(WRANGLER), "TERM": "xterm", **(extra_env or {})}
    env.pop("NO_COLOR", None) if "NO_COLOR" not in (extra_env or {}) else None
    argv = [sys.executable, "-m", "d1ops", "--config", str(proj.config), *args]
    if not tty:
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        return proc.returncode, proc.stdout, proc.stderr
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    proc2 = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL)
    os.close(slave)
    seen = b""
    while True:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        elif proc2.poll() is not None:
            break
    os.close(master)
    out = proc2.stdout.read().decode() if proc2.stdout else ""
    return proc2.wait(), out, seen.decode("utf-8", "replace")


def test_backup_shows_its_progress_line_on_a_terminal_and_not_in_a_pipe(proj: Proj) -> None:
    code, out, err = run_d1ops(proj, "backup", "--env", "dev", tty=True)
    assert code == 0, err
    assert "\r\x1b[2K" in err  # redrawn in place
    assert re.search(r"Backing up dev: wrangler d1 export  \d+\.\d s", err)
    assert "\x1b[2m" in err  # dim: colour on a terminal
    assert err.rstrip("\n").endswith("\r\x1b[2K")  # erased at the end: nothing left on the screen
    assert "Backup:" in out and "\x1b" not in out  # stdout is a pipe: no escape codes

    code, out, err = run_d1ops(proj, "backup", "--env", "dev", tty=False)
    assert code == 0, err
    assert "\x1b" not in out + err and "\r" not in err and "Backing up" not in err
    assert "Backup:" in out


def test_no_color_keeps_the_line_without_colour_and_json_has_no_line(proj: Proj) -> None:
    code, out, err = run_d1ops(proj, "status", "--all", tty=True, extra_env={"NO_COLOR": "1"})
    assert code == 0, err
    assert "\r\x1b[2K" in err and "\x1b[2m" not in err and "\x1b[3" not in err
    code, out, err = run_d1ops(proj, "status", "--all", "--json", tty=True)
    assert code == 0 and "\x1b" not in err and out.startswith("{")


def test_quiet_prints_nothing_but_errors(proj: Proj) -> None:
    assert proj.run("-q", "migrate", "staging").output == ""
    result = proj.run("status", "staging", "--check", "-q")
    assert (result.exit_code, result.output) == (0, "")
    result = proj.run("migrate", "nowhere", "--quiet")
    assert result.exit_code == 2 and result.output.startswith("Error: ")


def test_verbose_prints_each_wrangler_call_token_free(proj: Proj) -> None:
    token = "s3cret-t0ken-value-1234567890"
    result = proj.run("-v", "status", "--all", env={"CLOUDFLARE_API_TOKEN": token})
    assert result.exit_code == 0
    calls = [line for line in result.stderr.splitlines() if line.startswith("$ wrangler d1 execute DB --local")]
    # one per environment (a never-tracked database costs a second read: its first one fails, exit 1)
    assert len(calls) >= 3, result.stderr
    assert {"--env staging" in c for c in calls} == {True, False} and any("--env production" in c for c in calls)
    assert sorted(set(re.findall(r"  # \d+\.\d\d s, exit (\d)\n", result.stderr))) == ["0", "1"]
    assert token not in result.output
    failed = proj.run("execute", "dev", "--command", "SELECT * FROM no_such_table", "--verbose")
    assert failed.exit_code == 1
    assert "1" in re.findall(r"  # \d+\.\d\d s, exit (\d)\n", failed.stderr)


# -- the line itself (no process) --------------------------------------------------------------------------------
@pytest.fixture
def clean() -> None:
    progress.reset()
    yield
    progress.reset()


def test_line_names_the_step_the_wrangler_call_and_the_time(clean: None, monkeypatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    now = time.monotonic()
    assert progress.render(now) is None
    progress.step("Backing up production")
    assert progress.render(now + 0.1) is None  # quick steps draw nothing
    started = progress.wrangler_started(["wrangler", "d1", "export", "DB", "--remote"])
    assert progress.render(started + 2.5).startswith("Backing up production: wrangler d1 export  2.")
    progress.wrangler_finished(["wrangler", "d1", "export"], started, "exit 0")
    assert progress.render(started + 3).startswith("Backing up production  3.")
    progress.finish()
    assert progress.render() is None


def test_a_count_going_up_keeps_its_steps_time_so_the_line_shows(clean: None, monkeypatch) -> None:
    """A fleet relabels its step for every database done (many times a second): the line still appears."""
    monkeypatch.setenv("NO_COLOR", "1")
    started = time.monotonic()
    progress.step("tenants: 1/1000 databases, 0 failed, 0/s", since=started)
    progress.step("tenants: 600/1000 databases, 1 failed, 100/s", since=started)
    progress.step("Verifying 20261202T051000000Z-migrate-tenant-0601 (quick)")  # a backup's own step, in a worker
    assert progress.render(started + 1).startswith("tenants: 600/1000 databases, 1 failed, 100/s  1.")
    progress.finish()
    progress.step("Backing up production")  # the next command's steps are its own again
    assert progress.render(time.monotonic() + 1).startswith("Backing up production  1.")


def test_calls_side_by_side_show_as_one_line(clean: None, monkeypatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    results: list[float] = []
    release = threading.Event()

    def call() -> None:  # a wrangler call running in a pool thread, as status --all runs three
        results.append(progress.wrangler_started(["wrangler", "d1", "execute"]))
        release.wait(10)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    while len(results) < 3:
        time.sleep(0.01)
    assert progress.render(max(results) + 1).startswith("wrangler d1 execute (+2 more)  1.")
    release.set()
    for t in threads:
        t.join()
    progress.finish()
    assert progress.render(max(results) + 1) is None


def test_colour_only_on_a_terminal_and_never_with_no_color(monkeypatch, tmp_path: Path) -> None:
    class Tty:
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert progress.colour(Tty())  # type: ignore[arg-type]
    with (tmp_path / "f").open("w") as piped:
        assert not progress.colour(piped)
    monkeypatch.setenv("NO_COLOR", "1")
    assert not progress.colour(Tty())  # type: ignore[arg-type]
    monkeypatch.setenv("NO_COLOR", "")  # empty: not set (no-color.org)
    assert progress.colour(Tty())  # type: ignore[arg-type]
