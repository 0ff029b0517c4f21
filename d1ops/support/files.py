"""Private files and the times in their names.

Backups, reports and manifests hold user data (emails, key hashes): folders are 0700, files 0600, and every
file is written to a hidden temporary name and renamed into place, so a crash never leaves half a file where a
whole one was expected.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def utc_now() -> str:
    """Now, for humans and JSON: 2026-11-25T18:30:00Z."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def utc_stamp(moment: datetime | None = None) -> str:
    """Now, for file names, to the millisecond: 20261125T183000123Z (sorts in time order)."""
    moment = moment or datetime.now(UTC)
    return moment.strftime("%Y%m%dT%H%M%S") + f"{moment.microsecond // 1000:03d}Z"


def unique_stamp() -> str:
    """A file-name stamp that two runs in the same millisecond still do not share: 48 random bits (six hex digits,
    24 bits, met a collision in 1,000 names in one millisecond about once in 30 runs)."""
    return f"{utc_stamp()}-{uuid.uuid4().hex[:12]}"


def private_parents(path: Path) -> None:
    """Create the folders up to `path`, each missing one 0700 (`mkdir(parents=True)` gives the missing parents the
    default mode, 0755: backups/ and backups/<env>/ were world-readable)."""
    missing = []
    folder = path
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:  # made meanwhile (another run, a thread)
            continue
        os.chmod(folder, 0o700)


def make_private_dir(path: Path, *, exist_ok: bool = False) -> None:
    private_parents(path.parent)
    path.mkdir(mode=0o700, exist_ok=exist_ok)
    os.chmod(path, 0o700)


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` (0600) through a temporary name: `path` is either old or new, never half."""
    private_parents(path.parent)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_private_json(path: Path, data: Any) -> None:
    write_private(path, json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, not ours
    return True


_WORK_DIR = re.compile(r"^d1ops-[a-z]+-(\d+)-")


@contextmanager
def work_dir(kind: str) -> Iterator[Path]:
    """A temporary folder for one step (`d1ops-<kind>-<pid>-…` in the system's temp folder), removed after it.
    A SIGKILLed d1ops removes nothing (a rehearsal's copy of the data: tens of MB), so the folders of dead d1ops
    processes are removed first, as dead `.partial` backup folders are."""
    clean_dead_work_dirs()
    with tempfile.TemporaryDirectory(prefix=f"d1ops-{kind}-{os.getpid()}-", ignore_cleanup_errors=True) as tmp:
        yield Path(tmp)


def clean_dead_work_dirs(folder: Path | None = None) -> list[Path]:
    """Remove this user's d1ops work folders whose process (the pid in the name) is gone."""
    removed: list[Path] = []
    root = folder or Path(tempfile.gettempdir())
    try:
        entries = list(root.iterdir())
    except OSError:
        return removed
    for path in entries:
        match = _WORK_DIR.match(path.name)
        try:
            if not match or pid_alive(int(match.group(1))) or path.stat().st_uid != os.getuid():
                continue
        except OSError:
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed
