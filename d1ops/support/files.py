"""Private files and the times in their names.

Backups, reports and manifests hold user data (emails, key hashes): folders are 0700, files 0600, and every
file is written to a hidden temporary name and renamed into place, so a crash never leaves half a file where a
whole one was expected.
"""

from __future__ import annotations

import json
import os
import uuid
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
    """A file-name stamp that two runs in the same millisecond still do not share."""
    return f"{utc_stamp()}-{uuid.uuid4().hex[:6]}"


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
