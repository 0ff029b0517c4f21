"""A stand-in for wrangler that pauses at one call, so a test can interrupt or kill d1ops at an exact step.

`shim(tmp_path)` writes an executable that runs the real wrangler for every call, except the first one whose
arguments contain $SHIM_MATCH: for it, with SHIM_WHEN=before it writes its pid to $SHIM_MARK and waits without
running anything; with SHIM_WHEN=after it runs the real call first (the database is changed), then writes the
mark and waits. The waiting is a `sleep` in the shim's own process group: a test can check that it died with
d1ops. No timing: the test waits for the mark, then acts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import WRANGLER

SCRIPT = """#!/bin/sh
case "$*" in
  *"$SHIM_MATCH"*)
    if [ ! -e "$SHIM_MARK.done" ]; then
      : > "$SHIM_MARK.done"
      if [ "$SHIM_WHEN" = after ]; then "$SHIM_REAL" "$@"; fi
      sleep 600 &
      echo $! > "$SHIM_MARK.tmp" && mv "$SHIM_MARK.tmp" "$SHIM_MARK"
      wait
      exit 1
    fi
    ;;
esac
exec "$SHIM_REAL" "$@"
"""


def shim(folder: Path) -> Path:
    path = folder / "wrangler-shim"
    path.write_text(SCRIPT, encoding="utf-8")
    path.chmod(0o755)
    return path


def shim_env(folder: Path, match: str, when: str) -> tuple[dict[str, str], Path]:
    """The environment for a d1ops subprocess whose wrangler pauses at the call matching `match`."""
    mark = folder / f"paused-{when}"
    env = {
        **os.environ,
        "D1OPS_WRANGLER": str(shim(folder)),
        "SHIM_REAL": str(WRANGLER),  # the counting wrapper (conftest.py)
        "SHIM_MATCH": match,
        "SHIM_WHEN": when,
        "SHIM_MARK": str(mark),
    }
    return env, mark


TAG = "D1OPS_TEST_TAG"  # in the environment of d1ops and so of everything it starts: its descendants carry it


def start_d1ops(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "d1ops", *args],
        env={**env, TAG: f"{os.getpid()}-{time.monotonic_ns()}"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(mark: Path, process: subprocess.Popen[str], limit: float = 120.0) -> int:
    """Wait until `mark` exists (the shim or a pause point wrote it); returns the pid written in it."""
    deadline = time.monotonic() + limit
    while not mark.exists():
        if process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(f"d1ops ended (exit {process.returncode}) before the pause:\n{out}\n{err}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"no pause at {mark.name} within {limit} s")
        time.sleep(0.05)
    text = mark.read_text().strip()
    return int(text) if text.isdigit() else 0


def gone(pid: int, limit: float = 30.0) -> bool:
    """Whether process `pid` has ended (waiting up to `limit` s for a parent-death signal to land)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:  # a zombie whose parent is gone is reaped by init; /proc says so meanwhile
            if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
                return True
        except OSError:
            return True
        time.sleep(0.05)
    return False


def kill(process: subprocess.Popen[str], sig: int = signal.SIGKILL) -> tuple[int, str, str]:
    process.send_signal(sig)
    out, err = process.communicate(timeout=180)
    return process.returncode, out, err


def interrupt_and_wait(process: subprocess.Popen[str], sig: int, *, exit_within: float = 120.0) -> tuple[str, str]:
    """Send `sig`, wait for d1ops to exit (its read-back takes a wrangler call or two), then for its pipes: they
    must close within seconds of its exit, and nothing it started may be left (every descendant carries its TAG,
    even one reparented to init)."""
    tag = _tag_of(process.pid)
    process.send_signal(sig)
    try:
        process.wait(timeout=exit_within)
    except subprocess.TimeoutExpired:
        left = survivors(tag)
        process.kill()
        raise AssertionError(
            f"d1ops did not exit within {exit_within:g} s of the signal; its processes: {left}"
        ) from None
    out, err = process.communicate(timeout=10)  # the pipes: closed once no process holds them
    deadline = time.monotonic() + 10
    while survivors(tag) and time.monotonic() < deadline:  # SIGKILLed ones vanish as their parents reap them
        time.sleep(0.1)
    assert survivors(tag) == [], f"processes d1ops started outlived it: {survivors(tag)}"
    return out, err


def _tag_of(pid: int) -> str:
    for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
        if item.startswith(TAG.encode() + b"="):
            return item.split(b"=", 1)[1].decode()
    raise AssertionError(f"pid {pid} has no {TAG}")


def survivors(tag: str) -> list[str]:
    """Live processes (zombies aside) whose environment holds this d1ops's TAG: it and its descendants."""
    found = []
    needle = f"{TAG}={tag}".encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if needle not in (proc / "environ").read_bytes().split(b"\0"):
                continue
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")[:120]
        except OSError:
            continue
        if state != "Z":
            found.append(f"{proc.name} {command}")
    return found
