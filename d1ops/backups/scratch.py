"""A scratch local D1: a throwaway wrangler project in a temporary folder, driven by the same wrangler.

Full verification loads a backup into one; an all-or-nothing run replays a failed batch in one to name the
failing migration; a rehearsal applies pending migrations to one. Nothing in it touches a real environment.
"""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

from d1ops.project.config import Binding, Environment
from d1ops.run.tracking import TRACKING_TABLES
from d1ops.sql.schema import read_schema_sqlite
from d1ops.sql.text import ident
from d1ops.wrangler.reads import count_rows
from d1ops.wrangler.runner import Statement, Wrangler

SCRATCH_BINDING = "DB"


def scratch_env(database_id: str) -> Environment:
    return Environment(
        name="scratch",
        target="local",
        wrangler_env=None,
        protected=False,
        skip=(),
        backup="skip",
        verify="quick",
        binding=Binding(SCRATCH_BINDING, "d1ops-scratch", database_id, None),
    )


class ScratchD1:
    """A local D1 in `folder` (which must be empty or absent); its processes count in `wrangler`'s total."""

    def __init__(self, wrangler: Wrangler, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        database_id = str(uuid.uuid4())
        config = folder / "wrangler.toml"
        config.write_text(
            'name = "d1ops-scratch"\ncompatibility_date = "2025-01-01"\n\n[[d1_databases]]\n'
            f'binding = "{SCRATCH_BINDING}"\ndatabase_name = "d1ops-scratch"\ndatabase_id = "{database_id}"\n',
            encoding="utf-8",
        )
        self.folder = folder
        self.env = scratch_env(database_id)
        self.wrangler = wrangler.sibling(folder, config)

    def run_file(self, path: Path, *, discard_results: bool = True) -> list[Statement]:
        """Run an SQL file as one atomic batch (raises WranglerError with D1's message when it fails)."""
        return self.wrangler.execute(self.env, file=path, discard_results=discard_results)

    def count_rows(self, tables: list[str]) -> dict[str, int]:
        return count_rows(self.wrangler, self.env, tables)

    def sqlite_file(self) -> Path | None:
        """The SQLite file behind the scratch D1 (wrangler keeps local state beside its config)."""
        folder = self.folder / ".wrangler" / "state" / "v3" / "d1" / "miniflare-D1DatabaseObject"
        files = [p for p in folder.glob("*.sqlite") if p.name != "metadata.sqlite"] if folder.is_dir() else []
        return files[0] if len(files) == 1 else None

    def snapshot(self, path: Path) -> bool:
        """Copy the scratch database to `path` as it is now, the writes still in its -wal file included (a plain
        file copy misses them: the tables recent statements created). False when there is no database yet."""
        source = self.sqlite_file()
        if source is None:
            return False
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
        try:
            dst = sqlite3.connect(path)
            try:
                src.backup(dst)
            finally:
                dst.close()
        finally:
            src.close()
        return True

    def table_counts(self, tables: list[str] | None = None) -> dict[str, int]:
        """Rows per table, read from the scratch file directly (no wrangler process): `tables`, or every
        ordinary table. A table this Python's SQLite cannot read (an FTS5 module missing) is left out."""
        path = self.sqlite_file()
        if path is None:
            return {}
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            if tables is None:
                skip = set(TRACKING_TABLES)
                tables = [t for t in read_schema_sqlite(conn).tables if t not in skip]
            counts = {}
            for table in tables:
                try:
                    counts[table] = conn.execute(f"SELECT count(*) FROM {ident(table)}").fetchone()[0]
                except sqlite3.Error:
                    continue
            return counts
        finally:
            conn.close()
