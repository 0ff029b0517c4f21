"""A live app never makes a backup fail: row counts come from the dump itself (a consistent snapshot), not from
a count read by another wrangler process at another time.

The "app" is a bounded loop of `wrangler d1 execute` inserts on the same local database (127.0.0.1 only), one
about every 100 ms plus wrangler's own start-up, running before, during and after the d1ops command.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from d1ops.backups.dumpfile import SQL_DUMP, load_dump
from tests.conftest import WRANGLER, Proj
from tests.test_backup import REQUIRED_DEV


class Writer:
    """Inserts ticks(n) = 1, 2, … until stopped (at most `limit`); remembers which inserts wrangler confirmed."""

    def __init__(self, root: Path, limit: int = 60) -> None:
        self.root, self.limit = root, limit
        self.done: list[int] = []
        self.failed = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        env = {**os.environ, "WRANGLER_SEND_METRICS": "false", "CI": "true"}
        for n in range(1, self.limit + 1):
            if self.stop.wait(0.1):
                return
            args = [str(WRANGLER), "d1", "execute", "DB", "--local", "--json", "--command"]
            proc = subprocess.run(
                [*args, f"INSERT INTO ticks (n) VALUES ({n})"],
                cwd=self.root,
                env=env,
                capture_output=True,
                stdin=subprocess.DEVNULL,
                timeout=120,
            )
            if proc.returncode == 0:
                self.done.append(n)
            else:
                self.failed += 1

    def wait_for(self, count: int) -> None:
        while len(self.done) < count and self.thread.is_alive():
            self.stop.wait(0.2)


@contextmanager
def writing(proj: Proj) -> Iterator[Writer]:
    proj.query("SELECT 1")  # the database exists
    writer = Writer(proj.root)
    writer.thread.start()
    try:
        writer.wait_for(2)  # the app is live before the command starts
        yield writer
    finally:
        writer.stop.set()
        writer.thread.join(timeout=180)


def create_ticks(proj: Proj) -> None:
    """The app's table, made by a migration (a table made by hand is drift, which migrate refuses)."""
    proj.write("migrations/0003_ticks.sql", "CREATE TABLE ticks (n INTEGER PRIMARY KEY);\n")
    proj.write("migrations/down/0003_ticks.sql", "DROP TABLE ticks;\n")
    assert proj.run("migrate", "dev").exit_code == 0


def dump_ticks(folder: Path, tmp: Path) -> list[int]:
    db = tmp / "dump.sqlite"
    load_dump(folder / SQL_DUMP, db)
    conn = sqlite3.connect(db)
    try:
        return [r[0] for r in conn.execute("SELECT n FROM ticks ORDER BY n")]
    finally:
        conn.close()


def restored_ticks(proj: Proj, folder: Path) -> list[int]:
    restore = proj.run("restore", str(folder), "--env", "staging", "--from-other-env", "--json")
    assert restore.exit_code == 0, restore.output
    return [r[0] for r in proj.query("SELECT n FROM ticks ORDER BY n", "staging")]


def test_backup_of_a_database_written_throughout_verifies(proj: Proj, tmp_path: Path) -> None:
    create_ticks(proj)
    with writing(proj) as writer:
        before = list(writer.done)
        result = proj.run("backup", "--json")
        during = len(writer.done) - len(before)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["verified"] is True and summary["verify_level"] == "quick"
    folder = Path(summary["path"])
    in_dump = dump_ticks(folder, tmp_path)
    assert set(before) <= set(in_dump)  # every row written before the export started is in the dump
    assert summary["tables"]["ticks"] == len(in_dump)
    assert during >= 1 or writer.failed, "the writer did not run during the backup"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["live_rows"] is None and "not recorded" in manifest["live_rows_note"]
    assert restored_ticks(proj, folder) == in_dump


def test_migrate_with_required_backup_applies_while_the_app_writes(proj: Proj, tmp_path: Path) -> None:
    create_ticks(proj)
    proj.config.write_text(REQUIRED_DEV)
    proj.write("migrations/0004_tags.sql", "CREATE TABLE tags (id INTEGER PRIMARY KEY, name TEXT);\n")
    with writing(proj) as writer:
        before = list(writer.done)
        result = proj.run("migrate", "dev", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [m["result"] for m in report["migrations"]] == ["applied"]
    assert report["backup"]["verified"] is True
    assert report["wrangler_processes"] == 3  # lock + state + schema, the export, the apply
    assert "tags" in proj.tables()
    folder = Path(report["backup"]["path"])
    in_dump = dump_ticks(folder, tmp_path)
    assert set(before) <= set(in_dump) and report["backup"]["tables"]["ticks"] == len(in_dump)
    assert restored_ticks(proj, folder) == in_dump
    assert "tags" not in proj.tables("staging")  # the backup was taken before the migration
