"""The run journal of a fleet: append-only JSON lines under backups/<env>/fleet/, one file per shard."""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from d1ops.errors import LockHeld
from d1ops.support.files import unique_stamp


class Journal:
    """Append-only JSON lines, one file per (environment, shard). Lines reach the OS at once (a kill -9 loses
    none); fsync runs at most every 0.2 s and at the end (a power cut may lose the last lines: the databases'
    tracking rows stay the truth)."""

    def __init__(self, folder: Path, shard: tuple[int, int] | None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        key = f"journal-shard-{shard[0]}-of-{shard[1]}" if shard else "journal"
        self.path = folder / f"{key}.jsonl"
        self._lockfile = open(folder / f".{key}.lock", "a")  # noqa: SIM115 - held for the run's life
        try:
            fcntl.flock(self._lockfile, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lockfile.close()
            raise LockHeld(
                f"Another d1ops run of this fleet{' shard' if shard else ''} is running on this machine "
                f"(it holds {self.path.name}). Wait for it to finish."
            ) from None
        self.previous = self._read()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._lock = threading.Lock()
        self._synced = time.monotonic()

    def _read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        lines = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue  # a line cut by a crash: the databases' state says what it was doing
        return lines

    def write(self, event: dict[str, Any]) -> None:
        data = (json.dumps(event, separators=(",", ":")) + "\n").encode()
        with self._lock:
            os.write(self._fd, data)
            if time.monotonic() - self._synced > 0.2:
                os.fsync(self._fd)
                self._synced = time.monotonic()

    def finish(self) -> Path:
        """The run is over: keep the journal as history, so the next run starts afresh."""
        os.fsync(self._fd)
        run = next((e.get("run") for e in self._read() if e.get("event") == "run"), "run")
        done = self.path.with_name(f"{unique_stamp()}-{str(run).split()[-1]}-{self.path.name}")
        os.replace(self.path, done)
        self.close()
        return done

    def close(self) -> None:
        if self._fd >= 0:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
        self._lockfile.close()


class NullJournal:
    def write(self, event: dict[str, Any]) -> None:
        pass


def failed_in_last_run(folder: Path, keep: int = 20) -> dict[str, str]:
    """The databases whose latest recorded outcome (in the newest `keep` journals, finished or not) is a failure,
    with their error: a later run that applied or skipped past one clears it."""
    journals = sorted(folder.glob("*.jsonl"), key=lambda p: p.stat().st_mtime)[-keep:] if folder.is_dir() else []
    failed: dict[str, str] = {}
    for journal in journals:
        for line in journal.read_text(encoding="utf-8").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") != "done" or event.get("result") == "skipped":
                continue
            if event.get("result") == "failed":
                failed[event["name"]] = str(event.get("error") or "")
            else:
                failed.pop(event["name"], None)
    return failed
