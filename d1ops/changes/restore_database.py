"""Restore a whole-database backup: drop every table and view, replay the backup, in one atomic batch."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from dataclasses import asdict
from typing import Any, TextIO

from d1ops.backups.dumpfile import SQL_DUMP, dump_sqlite, write_compact_dump
from d1ops.backups.layout import SQL, format_of
from d1ops.changes.restore import BackupRestore, rows_table
from d1ops.run.apply import Batch
from d1ops.run.lease import clear_lock_sql
from d1ops.run.sequence import Run
from d1ops.run.tracking import LOCK_TABLE
from d1ops.sql.schema import DatabaseSchema, lower, read_schema_sqlite
from d1ops.sql.tablediff import TableRestore
from d1ops.sql.text import ident
from d1ops.wrangler.reads import count_rows


def warn_virtual(run: Run, schema: DatabaseSchema, manifest: dict[str, Any], *, always: bool) -> None:
    """A backup that holds no virtual tables (some tables; an old whole backup) leaves the live ones as they are."""
    if manifest.get("whole_database") and "virtual_tables" in manifest:
        return  # a whole backup written by this d1ops holds every virtual table (and the restore recreates them)
    skipped = sorted(set(schema.virtual_tables) | set(manifest.get("not_backed_up") or []))
    if skipped and (always or schema.virtual_tables):
        fts = schema.virtual_tables[0] if schema.virtual_tables else "fts"
        run.report.warnings.append(
            f"virtual tables (FTS) {', '.join(skipped)} are not in the backup and were left as they are; an "
            f"FTS index may need a rebuild: INSERT INTO {fts}({fts}) VALUES('rebuild')"
        )


class DatabaseRestore(BackupRestore):
    dropped_rows: dict[str, int | None] = {}  # noqa: RUF012 - replaced per run by plan(); tables the backup lacks

    def plan(self, run: Run) -> bool:
        result, schema = self.result, self.schema
        with closing(sqlite3.connect(self.source_db)) as conn:
            self.kept = read_schema_sqlite(conn).tables
            views = lower(str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'view'"))
        result.tables = [TableRestore(str(t["name"]), int(t["rows"])) for t in self.manifest["tables"]]
        result.dropped_tables = [t for t in schema.tables if t.lower() not in lower(self.kept) and t != LOCK_TABLE]
        warn_virtual(run, schema, self.manifest, always=True)
        lost = [o.name for o in schema.of_type("view") if o.name.lower() not in views]
        if lost:
            run.report.warnings.append(f"views {', '.join(lost)} are not in the backup: they are dropped")
        if run.dry_run or self.env.protected:  # what the dry run and the confirmation show: 1 process
            live = {t.lower(): t for t in schema.tables}
            present = [live[t.name.lower()] for t in result.tables if t.name.lower() in live]
            counts = count_rows(run.wrangler, self.env, present + result.dropped_tables)
            self._note_rows_before(counts)
            self.dropped_rows = {t: counts.get(t) for t in result.dropped_tables}
        return True

    def describe(self) -> str:
        rows = sum(t.rows for t in self.result.tables)
        dropped = self.result.dropped_tables
        also = f"; tables the backup lacks are dropped: {', '.join(dropped)}" if dropped else ""
        lines = [
            f"Restore the WHOLE database of {self.env.name} from backup {self.folder}{self.taken()}: every table is "
            f"dropped and recreated from the backup ({len(self.result.tables)} tables, {rows} rows), d1_migrations "
            f"included{also}. Each table loses the rows it has now (DELETED) and gains the backup's (INSERTED):",
            rows_table(
                [
                    {**asdict(t), "inserted": t.rows, "deleted": t.rows_before, "updated": None}
                    for t in self.result.tables
                ]
                + [
                    {
                        "name": t,
                        "rows": 0,
                        "rows_before": n,
                        "inserted": 0,
                        "deleted": n,
                        "updated": None,
                        "recreated": False,
                    }
                    for t, n in self.dropped_rows.items()
                ]
            ),
            "A verified pre-restore backup is taken first.",
        ]
        return "\n".join(lines)

    def apply(self, run: Run) -> None:
        self.record_safety(run)
        if run.safety_backup is not None:
            self._note_rows_before({str(t["name"]): int(t["rows"]) for t in run.safety_backup.manifest["tables"]})
        # The run's lease guard opens the batch, before the lock table is dropped with the others; the lock table
        # is dropped and replaced, so the lease ends with the batch.
        batch = Batch("restore", self._write_batch, keep_results=False, release=False, ends_lease=True)
        self.run_batch(run, batch)

    def _write_batch(self, out: TextIO) -> None:
        out.write("PRAGMA defer_foreign_keys=TRUE;\n")
        # Views, then virtual tables (their shadow tables go with them), then tables (their indexes and
        # triggers go with them): the backup recreates every object it holds.
        for view in self.schema.of_type("view"):
            out.write(f"DROP VIEW IF EXISTS {ident(view.name)};\n")
        virtual = self.schema.virtual_tables if "virtual_tables" in self.manifest else []  # old backups: kept
        for table in [*virtual, *self.schema.tables]:
            out.write(f"DROP TABLE IF EXISTS {ident(table)};\n")
        self._write_dump(out)
        if LOCK_TABLE in self.kept:  # the dump's lock table holds the lock of the run that took it, or none
            out.write(f"\n{clear_lock_sql()}")

    def _write_dump(self, out: TextIO) -> None:
        """The backup as SQL: the dump itself, or (JSON backup) SQL written from the backup loaded into SQLite."""
        if format_of(self.manifest) == SQL:
            write_compact_dump(self.folder / SQL_DUMP, out)
        else:
            dump_sqlite(self.source_db, out)

    def _note_rows_before(self, counts: dict[str, int]) -> None:
        before = {k.lower(): v for k, v in counts.items()}
        for table in self.result.tables:
            table.rows_before = before.get(table.name.lower())
