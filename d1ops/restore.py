"""Restore: make an environment's tables equal a backup again, or (remote) go back to a Time Travel bookmark.

A restore runs the pipeline's sequence: check the backup (checksums, a load into SQLite) before anything is
touched → lock → read the schema → confirm (protected env) → a fresh verified backup of what is about to be
replaced → one atomic `execute --file` batch, which also releases the lock → report.

- A whole-database backup replaces every ordinary table, `d1_migrations` and `d1ops_migrations` included:
  drop them all, replay the dump. FTS virtual tables are left as they are (a D1 export cannot hold them).
- A backup of some tables is restored in place. D1 always enforces foreign keys, so dropping or replacing a
  parent row fires ON DELETE CASCADE / SET NULL in the tables that reference it. Rows the backup lacks are
  deleted by key, then every backup row is upserted (`INSERT … ON CONFLICT(pk) DO UPDATE`; never
  `INSERT OR REPLACE`, which deletes first). Rows of other tables those deletes would change are counted
  first, and the restore refuses unless --allow-cascade. Triggers of the restored tables are dropped and
  recreated in the same batch, so they do not fire for restored rows.
"""

from __future__ import annotations

import json
import math
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from d1ops import backup
from d1ops.backup import DatabaseSchema, SchemaObject, ident
from d1ops.config import Environment
from d1ops.errors import BackupFailed, D1OpsError, RestoreFailed, UsageError, WranglerError
from d1ops.pipeline import Confirm, release_quietly, utc_now, write_private
from d1ops.project import Project
from d1ops.tracking import LOCK_TABLE, lock_and_read_state, new_lock_owner, quote, release_lock, release_lock_sql
from d1ops.wrangler import redact

ROWS_PER_STATEMENT = 200
STATEMENT_CHARS = 90_000  # D1 refuses statements over 100 KB
KEYS_PER_STATEMENT = 500
COMMAND_CHARS = 90_000  # one --command argument must stay under the OS limit of 128 KiB per argument
BLOCKING_ACTIONS = ("RESTRICT", "NO ACTION")

# The objects backup.read_schema reads, and every foreign key of the ordinary tables: one process for both.
_SCHEMA_QUERY = (
    "SELECT type, name, tbl_name, sql FROM sqlite_master "
    "WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name NOT LIKE '\\_cf\\_%' ESCAPE '\\' "
    "AND name NOT LIKE '\\_d1ops\\_%' ESCAPE '\\' ORDER BY rowid"
)
_FK_QUERY = (
    'SELECT m.name AS child, f.id AS fk, f."table" AS parent, f."from" AS col, f."to" AS ref, '
    "f.on_update AS on_update, f.on_delete AS on_delete "
    "FROM sqlite_master m JOIN pragma_foreign_key_list(m.name) f "
    "WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND m.name NOT LIKE '\\_cf\\_%' ESCAPE '\\' "
    "AND coalesce(m.sql, '') NOT LIKE 'CREATE VIRTUAL%' ORDER BY m.name, f.id, f.seq"
)


# -- results --------------------------------------------------------------------------------------------------
@dataclass
class TableRestore:
    """One restored table: `rows` is what the backup holds, i.e. the table's row count after the restore."""

    name: str
    rows: int
    rows_before: int | None = None  # None: unknown, or the table did not exist
    deleted: int | None = None  # None: not counted (a whole-database restore replaces every row)
    inserted: int | None = None
    updated: int | None = None
    recreated: bool = False


@dataclass(frozen=True)
class Dependent:
    """Rows of a table outside the backup that reference rows the restore deletes (or re-keys)."""

    table: str
    parent: str
    columns: tuple[str, ...]
    event: str  # delete | update
    action: str  # CASCADE, SET NULL, SET DEFAULT, RESTRICT, NO ACTION
    rows: int

    @property
    def blocks(self) -> bool:
        return self.action in BLOCKING_ACTIONS

    def describe(self) -> str:
        verbs = {
            "CASCADE": "deleted" if self.event == "delete" else "updated",
            "SET NULL": "set to NULL",
            "SET DEFAULT": "set to their default",
        }
        what = verbs.get(self.action, "still reference them, so D1 refuses the restore")
        return (
            f"{self.table}: {self.rows} row(s) {what} "
            f"(ON {self.event.upper()} {self.action} of {self.table}({', '.join(self.columns)}) → {self.parent})"
        )


@dataclass
class RestoreResult:
    env: str
    target: str
    mode: str  # tables | database | bookmark
    dry_run: bool = False
    source: str | None = None
    source_env: str | None = None
    source_taken_at: str | None = None
    tables: list[TableRestore] = field(default_factory=list)
    dropped_tables: list[str] = field(default_factory=list)
    dependents: list[Dependent] = field(default_factory=list)
    pre_restore_backup: str | None = None
    bookmark: str | None = None  # the Time Travel bookmark restored to (mode bookmark)
    bookmark_before: str | None = None  # remote: the bookmark of the state before the restore (to undo it)
    wrangler_processes: int = 0
    warnings: list[str] = field(default_factory=list)
    started_at: str | None = None
    finished_at: str | None = None
    report_path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        if self.mode == "bookmark":
            lines = [f"Restored {self.env} to Time Travel bookmark {self.bookmark}."]
        else:
            verb = "Would restore" if self.dry_run else "Restored"
            how = "the whole database" if self.mode == "database" else f"{len(self.tables)} table(s), in place,"
            taken = f", taken from {self.source_env} at {self.source_taken_at}" if self.source_env else ""
            lines = [f"{verb} {how} of {self.env} from {self.source}{taken}:"]
            lines += _table_lines(self.tables)
            if self.dropped_tables:
                dropped = "would be dropped" if self.dry_run else "dropped"
                lines.append(f"Tables not in the backup, {dropped}: {', '.join(self.dropped_tables)}")
        if self.dependents:
            head = "would change" if self.dry_run else "changed"
            lines.append(f"Rows of tables outside the backup that the restore {head} (foreign keys):")
            lines += [f"  {d.describe()}" for d in self.dependents]
        if self.pre_restore_backup:
            lines.append(f"Pre-restore backup: {self.pre_restore_backup}")
            lines.append(f"  to undo: d1ops restore {self.pre_restore_backup} --env {self.env}")
        elif self.dry_run:
            lines.append("A verified pre-restore backup would be taken first.")
        if self.bookmark_before:
            lines.append(f"Time Travel bookmark before the restore: {self.bookmark_before}")
            lines.append(f"  to undo: d1ops restore --bookmark {self.bookmark_before} --env {self.env}")
        lines.append(f"{self.wrangler_processes} wrangler process(es).")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _table_lines(tables: list[TableRestore]) -> list[str]:
    def cell(value: int | None) -> str:
        return "-" if value is None else str(value)

    rows = [
        [t.name, str(t.rows), cell(t.rows_before), cell(t.inserted), cell(t.updated), cell(t.deleted)]
        + (["recreated"] if t.recreated else [])
        for t in tables
    ]
    headers = ["TABLE", "ROWS", "BEFORE", "INSERTED", "UPDATED", "DELETED"]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)).rstrip() for r in [headers, *rows]]


# -- SQL text ----------------------------------------------------------------------------------------------------
def sql_literal(value: Any) -> str:
    """An SQL literal that reads back as exactly `value` (integers, reals via repr, text, NULL, blobs)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NULL"  # SQLite stores NaN as NULL
        if math.isinf(value):
            return "9e999" if value > 0 else "-9e999"
        return repr(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return "X'" + bytes(value).hex().upper() + "'"
    text = str(value)
    if "\x00" in text:  # a literal cannot hold NUL
        return "CAST(X'" + text.encode("utf-8").hex().upper() + "' AS TEXT)"
    return quote(text)


def _row_values(row: Sequence[Any]) -> str:
    return "(" + ", ".join(sql_literal(v) for v in row) + ")"


def upsert_statements(
    table: str, columns: Sequence[str], key: Sequence[str], rows: Iterable[Sequence[Any]]
) -> Iterator[str]:
    """Multi-row `INSERT … ON CONFLICT(key) DO UPDATE` statements (plain INSERT when there is no key).

    An upsert updates a row in place: it never deletes it, so no ON DELETE action fires in other tables.
    """
    head = f"INSERT INTO {ident(table)} ({', '.join(ident(c) for c in columns)}) VALUES\n"
    others = [c for c in columns if c.lower() not in {k.lower() for k in key}]
    if not key:
        tail = ";\n"
    elif others:
        sets = ", ".join(f"{ident(c)} = excluded.{ident(c)}" for c in others)
        tail = f"\nON CONFLICT({', '.join(ident(k) for k in key)}) DO UPDATE SET {sets};\n"
    else:
        tail = f"\nON CONFLICT({', '.join(ident(k) for k in key)}) DO NOTHING;\n"
    yield from _chunked(head, tail, (_row_values(r) for r in rows), ROWS_PER_STATEMENT)


def delete_statements(table: str, key: Sequence[str], keys: Iterable[Sequence[Any]]) -> Iterator[str]:
    """`DELETE … WHERE key IN (…)` for these key values, in chunks."""
    yield from _chunked(
        f"DELETE FROM {ident(table)} WHERE {_in_list(key)}", ");\n", _key_literals(key, keys), KEYS_PER_STATEMENT
    )


def _in_list(columns: Sequence[str]) -> str:
    """The left side of an IN list over these columns: `"c" IN (` or `("a", "b") IN (VALUES `."""
    names = [ident(c) for c in columns]
    return f"{names[0]} IN (" if len(names) == 1 else f"({', '.join(names)}) IN (VALUES "


def _key_literals(key: Sequence[str], keys: Iterable[Sequence[Any]]) -> Iterator[str]:
    for k in keys:
        yield sql_literal(k[0]) if len(key) == 1 else _row_values(k)


def _chunked(head: str, tail: str, items: Iterable[str], limit: int) -> Iterator[str]:
    """`head item, item, … tail` statements of at most `limit` items and about STATEMENT_CHARS characters."""
    chunk: list[str] = []
    size = 0
    for item in items:
        if chunk and (len(chunk) >= limit or size + len(item) > STATEMENT_CHARS):
            yield head + ",\n".join(chunk) + tail
            chunk, size = [], 0
        chunk.append(item)
        size += len(item) + 2
    if chunk:
        yield head + ",\n".join(chunk) + tail


# -- what the database holds --------------------------------------------------------------------------------
@dataclass(frozen=True)
class ForeignKey:
    child: str
    parent: str
    columns: tuple[str, ...]  # in the child
    refs: tuple[str, ...] | None  # in the parent; None: the parent's primary key
    on_delete: str
    on_update: str


def foreign_keys_from(rows: Iterable[dict[str, Any]]) -> list[ForeignKey]:
    """Group rows of pragma_foreign_key_list (as _FK_QUERY selects them) into one entry per constraint."""
    grouped: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault((str(row["child"]), int(row["fk"])), []).append(row)
    return [
        ForeignKey(
            child=child,
            parent=str(parts[0]["parent"]),
            columns=tuple(str(p["col"]) for p in parts),
            refs=None if any(p["ref"] is None for p in parts) else tuple(str(p["ref"]) for p in parts),
            on_delete=str(parts[0]["on_delete"]).upper(),
            on_update=str(parts[0]["on_update"]).upper(),
        )
        for (child, _), parts in grouped.items()
    ]


def read_live_schema(project: Project, env: Environment) -> tuple[DatabaseSchema, list[ForeignKey]]:
    """The schema objects and every foreign key of an environment's database: one wrangler process."""
    result = project.wrangler.execute(env, command=f"{_SCHEMA_QUERY};\n{_FK_QUERY};")
    objects = tuple(
        SchemaObject(str(r["type"]), str(r["name"]), str(r["tbl_name"]), r.get("sql")) for r in result[0].results
    )
    return DatabaseSchema(objects), foreign_keys_from(result[1].results)


@dataclass(frozen=True)
class _Shape:
    columns: list[str]
    key: list[str]  # primary key columns, in key order; [] when the table has none


def _shape(conn: sqlite3.Connection, table: str, schema: str = "main") -> _Shape:
    rows = conn.execute(f"PRAGMA {schema}.table_info({ident(table)})").fetchall()
    return _Shape([str(r[1]) for r in rows], [str(r[1]) for r in sorted((r for r in rows if r[5]), key=lambda r: r[5])])


def _lower(names: Iterable[str]) -> set[str]:
    return {n.lower() for n in names}


def _parents_first(tables: list[str], fks: list[ForeignKey]) -> list[str]:
    """`tables` ordered so that a table comes after the tables it references (cycles broken arbitrarily)."""
    by_lower = {t.lower(): t for t in tables}
    parents: dict[str, set[str]] = {t: set() for t in tables}
    for fk in fks:
        child, parent = by_lower.get(fk.child.lower()), by_lower.get(fk.parent.lower())
        if child and parent and child != parent:
            parents[child].add(parent)
    order: list[str] = []

    def visit(table: str, path: set[str]) -> None:
        if table in order or table in path:
            return
        path.add(table)
        for parent in sorted(parents[table]):
            visit(parent, path)
        order.append(table)

    for table in tables:
        visit(table, set())
    return order


def _referencing(tables: list[str], fks: list[ForeignKey]) -> list[str]:
    """Tables outside `tables` that reference them, directly or through each other (what a cascade can reach)."""
    inside = _lower(tables)
    found: list[str] = []
    frontier = set(inside)
    while frontier:
        reached = {fk.child for fk in fks if fk.parent.lower() in frontier and fk.child.lower() not in inside}
        found += sorted(reached)
        inside |= _lower(reached)
        frontier = _lower(reached)
    return found


# -- the restore of a backup ----------------------------------------------------------------------------------
def restore_backup(
    project: Project,
    folder: Path,
    env_name: str,
    *,
    from_other_env: bool,
    allow_cascade: bool,
    dry_run: bool,
    confirm: Confirm,
) -> RestoreResult:
    """Make `env_name`'s tables equal the backup in `folder` (see the module docstring for how).

    Nothing is touched unless the backup's checksums match and it loads into SQLite. With `dry_run`, the
    plan is computed (rows to delete, dependent rows) without a lock, a backup or a change. Raises
    RestoreFailed / BackupFailed / GateRefused (exit 1) or UsageError (exit 2), each saying what to do next.
    """
    env = project.config.env(env_name)
    manifest = backup.read_manifest(folder)
    problems = backup.checksum_problems(folder, manifest)
    if problems:
        raise RestoreFailed(
            f"Backup {folder} does not match its manifest: {'; '.join(problems)}. Nothing was touched. "
            f"Restore another backup (`d1ops backups list {manifest.get('env') or env.name}`)."
        )
    source_env = str(manifest.get("env") or "")
    if source_env != env.name and not from_other_env:
        raise UsageError(
            f"Backup {folder.name} was taken from {source_env or 'an unknown environment'}, not {env.name}. "
            f"Restoring it replaces rows of {env.name} with rows of {source_env or 'that environment'}: "
            "if that is what you want, pass --from-other-env."
        )
    result = RestoreResult(
        env=env.name,
        target=env.target,
        mode="database" if manifest.get("whole_database") else "tables",
        dry_run=dry_run,
        source=str(folder),
        source_env=source_env or None,
        source_taken_at=manifest.get("started_at"),
        started_at=utc_now(),
    )
    start = project.wrangler.processes
    with tempfile.TemporaryDirectory(prefix="d1ops-restore-") as tmp:
        run = _Restore(project, env, folder, manifest, Path(tmp), result, allow_cascade=allow_cascade, confirm=confirm)
        run.load_source()
        if dry_run:
            run.plan()
            return _finish(project, result, start)
        try:
            run.restore()
        except D1OpsError as exc:
            _finish(project, result, start, exc)
            raise
    return _finish(project, result, start)


class _Restore:
    """One restore of one backup into one environment: the state shared by its steps."""

    def __init__(
        self,
        project: Project,
        env: Environment,
        folder: Path,
        manifest: dict[str, Any],
        work: Path,
        result: RestoreResult,
        *,
        allow_cascade: bool,
        confirm: Confirm,
    ) -> None:
        self.project, self.env, self.folder, self.manifest = project, env, folder, manifest
        self.work, self.result = work, result
        self.allow_cascade, self.confirm = allow_cascade, confirm
        self.source_db = work / "backup.sqlite"
        self.current_db = work / "current.sqlite"
        self.owner = new_lock_owner()
        self.locked = False

    # -- the steps --------------------------------------------------------------------------------------------
    def load_source(self) -> None:
        """Load the backup into a temporary SQLite database and check its row counts: a refusal touches nothing."""
        try:
            backup.load_backup(self.folder, self.manifest, self.source_db)
            conn = sqlite3.connect(self.source_db)
            try:
                wrong = []
                for entry in self.manifest["tables"]:
                    counted = conn.execute(f"SELECT count(*) FROM {ident(entry['name'])}").fetchone()[0]
                    if counted != int(entry["rows"]):
                        wrong.append(f"{entry['name']}: {counted} rows in the dump, {entry['rows']} in the manifest")
            finally:
                conn.close()
        except (sqlite3.Error, ValueError, OSError, UnicodeDecodeError) as exc:
            raise RestoreFailed(
                f"Backup {self.folder} does not load into SQLite ({exc}). Nothing was touched. "
                "Restore another backup (`d1ops backups list`)."
            ) from exc
        if wrong:
            raise RestoreFailed(
                f"Backup {self.folder} does not hold the rows its manifest lists: {'; '.join(wrong)}. "
                "Nothing was touched. Restore another backup (`d1ops backups list`)."
            )

    def plan(self) -> None:
        """Dry run: no lock, no backup, no change."""
        if self.result.mode == "database":
            self._database(dry_run=True)
        else:
            self._tables(dry_run=True)

    def restore(self) -> None:
        """lock → read schema → confirm → pre-restore backup → one atomic batch (releases the lock)."""
        self.locked = True  # set first: a failure after the lock call must still release it
        try:
            lock_and_read_state(self.project.wrangler, self.env, self.owner, ())
            if self.result.mode == "database":
                self._database(dry_run=False)
            else:
                self._tables(dry_run=False)
        finally:
            if self.locked:
                try:
                    release_lock(self.project.wrangler, self.env, self.owner)
                except D1OpsError as exc:
                    self.result.warnings.append(
                        f"could not release the lock on {self.env.name}: {exc.message}. "
                        f"Run `d1ops unlock {self.env.name}`."
                    )

    # -- whole database ---------------------------------------------------------------------------------------
    def _database(self, *, dry_run: bool) -> None:
        schema, _ = read_live_schema(self.project, self.env)
        with closing(sqlite3.connect(self.source_db)) as conn:
            kept = [str(r[0]) for r in conn.execute(_ORDINARY_TABLES)]
        result = self.result
        result.tables = [TableRestore(str(t["name"]), int(t["rows"])) for t in self.manifest["tables"]]
        result.dropped_tables = [t for t in schema.tables if t.lower() not in _lower(kept) and t != LOCK_TABLE]
        self._warn_virtual(schema, always=True)
        with closing(sqlite3.connect(self.source_db)) as conn:
            views = _lower(str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'view'"))
        lost = [o.name for o in schema.objects if o.type == "view" and o.name.lower() not in views]
        if lost:
            result.warnings.append(f"views {', '.join(lost)} are not in the backup: they are dropped")
        live = {t.lower(): t for t in schema.tables}
        if dry_run:
            present = [live[t.name.lower()] for t in result.tables if t.name.lower() in live]
            self._note_rows_before(backup.count_rows(self.project, self.env, present))
            return
        rows = sum(t.rows for t in result.tables)
        dropped = (
            f"; tables the backup lacks are dropped: {', '.join(result.dropped_tables)}"
            if result.dropped_tables
            else ""
        )
        self._confirm(
            f"Restore the WHOLE database of {self.env.name} from backup {self.folder}{self._taken()}: every table is "
            f"dropped and recreated from the backup ({len(result.tables)} tables, {rows} rows), d1_migrations "
            f"included{dropped}. A verified pre-restore backup is taken first."
        )
        pre = self._pre_restore_backup(None)
        if pre is not None:
            self._note_rows_before({str(t["name"]): int(t["rows"]) for t in pre.manifest["tables"]})
        self._note_bookmark()
        batch = self.work / "restore.sql"
        with batch.open("w", encoding="utf-8") as out:
            out.write("PRAGMA defer_foreign_keys=TRUE;\n")
            for view in (o.name for o in schema.objects if o.type == "view"):
                out.write(f"DROP VIEW IF EXISTS {ident(view)};\n")
            for table in schema.tables:
                out.write(f"DROP TABLE IF EXISTS {ident(table)};\n")
            self._write_dump(out)
            if LOCK_TABLE in kept:  # the dump's lock table holds the lock of the run that took it, or none
                out.write(f"\nDELETE FROM {LOCK_TABLE};\n")
        self._apply(batch, "")  # the lock table was dropped and replaced: the lock is gone with the batch

    def _write_dump(self, out: Any) -> None:
        """The backup as SQL: the dump itself, or (JSON backup) SQL written from the backup loaded into SQLite."""
        if self.manifest.get("format", "sql") == "sql":
            backup.write_compact_dump(self.folder / backup.SQL_DUMP, out)
            return
        # Every table before any row: D1 refuses a row whose foreign key names a table not created yet.
        with closing(sqlite3.connect(self.source_db)) as conn:
            tables = [str(r[0]) for r in conn.execute(_ORDINARY_TABLES)]
            for table in tables:
                out.writelines(f"{sql};\n" for sql in _ddl(conn, table, ("table",)))
            for table in tables:
                columns = _shape(conn, table).columns
                rows = conn.execute(f"SELECT {', '.join(ident(c) for c in columns)} FROM {ident(table)}")
                out.writelines(upsert_statements(table, columns, [], rows))
            others = conn.execute(
                "SELECT sql FROM sqlite_master WHERE type IN ('index', 'trigger', 'view') AND sql IS NOT NULL "
                "ORDER BY rowid"
            )
            out.writelines(f"{r[0]};\n" for r in others)

    # -- some tables, in place --------------------------------------------------------------------------------
    def _tables(self, *, dry_run: bool) -> None:
        result = self.result
        schema, fks = read_live_schema(self.project, self.env)
        names = [str(t["name"]) for t in self.manifest["tables"]]
        if LOCK_TABLE in names:
            names.remove(LOCK_TABLE)
            result.warnings.append(f"{LOCK_TABLE} (d1ops' lock) is never restored; it was skipped")
        live = {t.lower(): t for t in schema.tables}
        other = {o.name.lower(): o.type for o in schema.objects if o.type == "view"}
        other.update({t.lower(): "virtual table" for t in schema.virtual_tables + schema.shadow_tables})
        clashes = [f"{n} is a {other[n.lower()]} in {self.env.name}" for n in names if n.lower() in other]
        if clashes:
            raise RestoreFailed(f"Cannot restore {', '.join(clashes)}. Nothing was touched.")
        existing = [live[n.lower()] for n in names if n.lower() in live]
        missing = [n for n in names if n.lower() not in live]
        with closing(sqlite3.connect(self.source_db)) as conn:  # the foreign keys of the tables to recreate
            conn.row_factory = sqlite3.Row
            fks += [fk for fk in foreign_keys_from(dict(r) for r in conn.execute(_FK_QUERY)) if fk.child in missing]
        order = _parents_first(names, fks)
        counts = {str(t["name"]): int(t["rows"]) for t in self.manifest["tables"]}
        if not dry_run:
            listed = ", ".join(f"{n} ({counts[n]} rows)" for n in order)
            recreate = f" Missing tables are recreated: {', '.join(missing)}." if missing else ""
            cascade = (
                "Rows of other tables that reference deleted rows may be deleted or set to NULL (--allow-cascade)."
                if self.allow_cascade
                else "The restore stops if it would change any row of another table."
            )
            self._confirm(
                f"Restore {len(order)} table(s) of {self.env.name} in place from backup {self.folder}{self._taken()}: "
                f"{listed}. Rows the backup lacks are deleted, the others rewritten.{recreate} {cascade} "
                "A verified pre-restore backup is taken first; --dry-run shows the row counts."
            )
        self._snapshot(existing, fks, dry_run=dry_run)
        plans = self._plan_tables(order, live, fks)
        result.dependents = self._dependents(plans, fks, names)
        self._refuse_changes_outside(dry_run)
        if dry_run:
            return
        self._note_bookmark()
        triggers = [o for o in schema.objects if o.type == "trigger" and o.sql and o.tbl_name.lower() in _lower(names)]
        if triggers:
            result.warnings.append(
                f"triggers {', '.join(t.name for t in triggers)} did not fire for the restored rows "
                "(dropped and recreated in the same batch)"
            )
        if triggers or missing:
            self._warn_virtual(schema, always=False)
        batch = self.work / "restore.sql"
        with batch.open("w", encoding="utf-8") as out:
            self._write_table_batch(out, plans, triggers)
        self._apply(batch, release_lock_sql(self.owner))

    def _snapshot(self, existing: list[str], fks: list[ForeignKey], *, dry_run: bool) -> None:
        """The current rows of the tables to restore, in `current_db`: from the pre-restore backup, or (dry run)
        from a plain export. With --allow-cascade the pre-restore backup also holds the tables that reference them.
        """
        if not existing:
            sqlite3.connect(self.current_db).close()
            return
        if dry_run:
            dump = self.work / "current.sql"
            backup.export_sql(self.project, self.env, dump, tables=existing, whole=False)
            backup.load_dump(dump, self.current_db)
            return
        extra = _referencing(existing, fks) if self.allow_cascade else []
        live = _lower(existing)
        pre = self._pre_restore_backup(existing + [t for t in extra if t.lower() not in live])
        assert pre is not None  # a backup of named tables always returns a result
        backup.load_backup(pre.path, pre.manifest, self.current_db)

    def _plan_tables(self, order: list[str], live: dict[str, str], fks: list[ForeignKey]) -> list[_TablePlan]:
        conn = sqlite3.connect(self.source_db)
        try:
            conn.execute("ATTACH DATABASE ? AS cur", (str(self.current_db),))
            plans, problems = [], []
            for name in order:
                plan = _TablePlan(name, live.get(name.lower()), _shape(conn, name))
                if plan.live_name:
                    current = _shape(conn, plan.live_name, "cur")
                    have = _lower(current.columns)
                    lacking = [c for c in plan.source.columns if c.lower() not in have]
                    if lacking:
                        problems.append(f"the backup's {name} has columns the table lacks now: {', '.join(lacking)}")
                    extra = [c for c in current.columns if c.lower() not in _lower(plan.source.columns)]
                    if extra:
                        self.result.warnings.append(
                            f"{name}.{', '.join(extra)} not in the backup: kept rows keep their value, "
                            "re-inserted rows get the column default"
                        )
                    plan.key = current.key
                    if plan.key and not _lower(plan.key) <= _lower(plan.source.columns):
                        problems.append(f"the backup's {name} lacks primary key column(s) {', '.join(plan.key)}")
                else:
                    plan.key = plan.source.key
                referencing = sorted({fk.child for fk in fks if fk.parent.lower() == name.lower()})
                if not plan.key and referencing:
                    problems.append(
                        f"{name} has no primary key and {', '.join(referencing)} reference(s) it, so its rows "
                        "cannot be matched in place"
                    )
                plans.append(plan)
            if problems:
                raise RestoreFailed(
                    f"Cannot restore in place into {self.env.name}: " + "; ".join(problems) + ". Nothing was "
                    "changed. Restore a whole-database backup instead, or bring the schema back first "
                    "(`d1ops rollback`)."
                )
            for plan in plans:
                plan.diff(conn)
                self.result.tables.append(plan.outcome)
            return plans
        finally:
            conn.close()

    def _dependents(self, plans: list[_TablePlan], fks: list[ForeignKey], names: list[str]) -> list[Dependent]:
        """Count the rows outside the backup that reference rows the restore deletes or re-keys (0–n processes)."""
        inside = _lower(names)
        by_name = {p.name.lower(): p for p in plans}
        checks: list[tuple[ForeignKey, str, str, list[tuple[Any, ...]]]] = []
        conn = sqlite3.connect(self.source_db)
        try:
            conn.execute("ATTACH DATABASE ? AS cur", (str(self.current_db),))
            for fk in fks:
                plan = by_name.get(fk.parent.lower())
                if plan is None or fk.child.lower() in inside or not plan.live_name or not plan.key:
                    continue
                refs = list(fk.refs or plan.key)
                for event, values in plan.vanishing(conn, refs):
                    action = fk.on_delete if event == "delete" else fk.on_update
                    if values:
                        checks.append((fk, event, action, values))
        finally:
            conn.close()
        statements: list[str] = []
        for i, (fk, _, _, values) in enumerate(checks):
            head = f"SELECT {i} AS k, count(*) AS n FROM {ident(fk.child)} WHERE {_in_list(fk.columns)}"
            statements += _chunked(head, ")", _key_literals(fk.columns, values), KEYS_PER_STATEMENT)
        found = [0] * len(checks)
        for command in _commands(statements):
            for statement in self.project.wrangler.execute(self.env, command=command):
                for row in statement.results:
                    found[int(row["k"])] += int(row["n"])
        dependents = [
            Dependent(fk.child, fk.parent, fk.columns, event, action, n)
            for (fk, event, action, _), n in zip(checks, found, strict=True)
            if n
        ]
        for d in dependents:
            further = [t for t in _referencing([d.table], fks) if t.lower() not in inside]
            if d.action == "CASCADE" and d.event == "delete" and further:
                self.result.warnings.append(
                    f"deleting those {d.table} rows can cascade further into {', '.join(further)} (not counted)"
                )
        return dependents

    def _refuse_changes_outside(self, dry_run: bool) -> None:
        """Refuse when rows outside the backup would block the restore, or change without --allow-cascade."""
        result = self.result
        blocking = [d for d in result.dependents if d.blocks]
        changing = [d for d in result.dependents if not d.blocks]
        if not blocking and (self.allow_cascade or not changing):
            if changing and dry_run:
                result.warnings.append("with --allow-cascade, the dependent rows listed would be changed")
            return
        kept = f" The pre-restore backup {result.pre_restore_backup} was kept." if result.pre_restore_backup else ""
        if blocking:
            advice = (
                f"Delete or re-point the rows of {', '.join(sorted({d.table for d in blocking}))} first "
                "(--allow-cascade cannot override RESTRICT / NO ACTION), or restore a backup that holds those "
                "tables too, or a whole-database backup."
            )
        else:
            advice = (
                "Pass --allow-cascade to restore anyway (the pre-restore backup then also holds those tables), "
                "or restore a backup that holds those tables too."
            )
        raise RestoreFailed(
            f"Restoring {', '.join(t.name for t in result.tables)} into {self.env.name} would change rows of "
            "tables outside the backup (D1 enforces foreign keys):\n"
            + "\n".join(f"  {d.describe()}" for d in [*blocking, *changing])
            + f"\nNothing was changed.{kept} {advice}"
        )

    def _write_table_batch(self, out: Any, plans: list[_TablePlan], triggers: list[SchemaObject]) -> None:
        out.write("PRAGMA defer_foreign_keys=TRUE;\n")
        conn = sqlite3.connect(self.source_db)
        try:
            created = [p for p in plans if not p.live_name]
            for plan in created:
                for sql in _ddl(conn, plan.name, ("table",)):
                    out.write(f"{sql};\n")
            for trigger in triggers:
                out.write(f"DROP TRIGGER IF EXISTS {ident(trigger.name)};\n")
            for plan in reversed(plans):  # children first
                if plan.deleted_keys is None:
                    out.write(f"DELETE FROM {ident(plan.target)};\n")
                else:
                    out.writelines(delete_statements(plan.target, plan.key, plan.deleted_keys))
            for plan in plans:  # parents first
                columns = plan.source.columns
                rows = conn.execute(f"SELECT {', '.join(ident(c) for c in columns)} FROM main.{ident(plan.name)}")
                key = plan.key if plan.deleted_keys is not None else []
                out.writelines(upsert_statements(plan.target, columns, key, rows))
            for plan in created:
                for sql in _ddl(conn, plan.name, ("index", "trigger")):
                    out.write(f"{sql};\n")
            for trigger in triggers:
                out.write(f"{trigger.sql};\n")
        finally:
            conn.close()

    # -- shared -----------------------------------------------------------------------------------------------
    def _taken(self) -> str:
        when = f" at {self.result.source_taken_at}" if self.result.source_taken_at else ""
        return f" (taken from {self.result.source_env}{when})" if self.result.source_env else ""

    def _confirm(self, description: str) -> None:
        if self.env.protected:
            self.confirm(self.env, description)

    def _pre_restore_backup(self, tables: list[str] | None) -> backup.BackupResult | None:
        try:
            pre = backup.take_backup(self.project, self.env, tables=tables, label="pre-restore", verify=self.env.verify)
        except BackupFailed as exc:
            raise BackupFailed(f"{exc.message}\nNothing was restored into {self.env.name}.") from exc
        if pre is None:
            return None
        self.result.pre_restore_backup = str(pre.path)
        if not pre.verified:
            raise BackupFailed(
                f"The pre-restore backup {pre.path} did not verify: {pre.problem}. Nothing was restored into "
                f"{self.env.name}. Check that {self.project.config.backups_dir} has space, then retry."
            )
        return pre

    def _note_rows_before(self, counts: dict[str, int]) -> None:
        before = {k.lower(): v for k, v in counts.items()}
        for table in self.result.tables:
            table.rows_before = before.get(table.name.lower())

    def _note_bookmark(self) -> None:
        """Remote: record the Time Travel bookmark of the state before the restore (a second way back)."""
        if not self.env.is_remote:
            return
        try:
            info = self.project.wrangler.time_travel_info(self.env)
            self.result.bookmark_before = str(info.get("bookmark") or "") or None
        except WranglerError as exc:
            self.result.warnings.append(f"no Time Travel bookmark before the restore: {exc.detail}")

    def _warn_virtual(self, schema: DatabaseSchema, *, always: bool) -> None:
        skipped = sorted(set(schema.virtual_tables) | set(self.manifest.get("not_backed_up") or []))
        if skipped and (always or schema.virtual_tables):
            fts = schema.virtual_tables[0] if schema.virtual_tables else "fts"
            self.result.warnings.append(
                f"virtual tables (FTS) {', '.join(skipped)} are not in the backup and were left as they are; an "
                f"FTS index may need a rebuild: INSERT INTO {fts}({fts}) VALUES('rebuild')"
            )

    def _apply(self, batch: Path, tail: str) -> None:
        """Run the batch (one atomic `execute --file`); `tail` (the lock release) is appended to it."""
        if tail:
            with batch.open("a", encoding="utf-8") as out:
                out.write(tail)
        try:
            self.project.wrangler.execute(self.env, file=batch, discard_results=True)
        except WranglerError as exc:
            hint = ""
            if "FOREIGN KEY" in exc.detail:
                hint = (
                    " Restored rows reference rows of other tables that no longer exist: restore those tables "
                    "too, or a whole-database backup."
                )
            elif "UNIQUE" in exc.detail:
                hint = (
                    " A UNIQUE value of a restored row is held by another row that stays (e.g. two rows swapped "
                    "values): fix those rows by hand first, or restore a whole-database backup."
                )
            kept = (
                f" The pre-restore backup is {self.result.pre_restore_backup}."
                if self.result.pre_restore_backup
                else ""
            )
            raise RestoreFailed(
                f"The restore of {self.env.name} failed: {exc.detail}\nD1 runs the restore as one atomic batch: "
                f"nothing of it was applied, {self.env.name} is as it was.{kept}{hint}"
            ) from exc
        self.locked = False


_ORDINARY_TABLES = (
    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
    "AND coalesce(sql, '') NOT LIKE 'CREATE VIRTUAL%' ORDER BY rowid"
)


def _ddl(conn: sqlite3.Connection, table: str, types: tuple[str, ...]) -> list[str]:
    marks = ", ".join("?" for _ in types)
    rows = conn.execute(
        f"SELECT sql FROM sqlite_master WHERE tbl_name = ? AND type IN ({marks}) AND sql IS NOT NULL ORDER BY rowid",
        (table, *types),
    )
    return [str(r[0]) for r in rows]


def _commands(statements: list[str]) -> Iterator[str]:
    """Join read statements into as few --command arguments as the size limit allows."""
    batch: list[str] = []
    size = 0
    for statement in statements:
        if batch and size + len(statement) > COMMAND_CHARS:
            yield ";\n".join(batch) + ";"
            batch, size = [], 0
        batch.append(statement)
        size += len(statement) + 2
    if batch:
        yield ";\n".join(batch) + ";"


@dataclass
class _TablePlan:
    """How one table is restored in place, computed from the backup (main) and its current rows (cur)."""

    name: str  # as the backup spells it
    live_name: str | None  # as the database spells it; None: the table is missing and is recreated
    source: _Shape
    key: list[str] = field(default_factory=list)
    deleted_keys: list[tuple[Any, ...]] | None = field(default_factory=list)  # None: delete every row (no key)
    outcome: TableRestore = field(init=False)

    @property
    def target(self) -> str:
        return self.live_name or self.name

    def _on_key(self) -> str:
        return " AND ".join(f"c.{ident(k)} = b.{ident(k)}" for k in self.key)

    def diff(self, conn: sqlite3.Connection) -> None:
        main, cur = f"main.{ident(self.name)}", f"cur.{ident(self.target)}"
        rows = conn.execute(f"SELECT count(*) FROM {main}").fetchone()[0]
        if not self.live_name:
            self.outcome = TableRestore(self.name, rows, None, 0, rows, 0, recreated=True)
            self.deleted_keys = [] if self.key else None
            return
        before = conn.execute(f"SELECT count(*) FROM {cur}").fetchone()[0]
        if not self.key:
            self.deleted_keys = None
            self.outcome = TableRestore(self.name, rows, before, before, rows, 0)
            return
        on = self._on_key()
        keys = ", ".join(f"c.{ident(k)}" for k in self.key)
        self.deleted_keys = conn.execute(
            f"SELECT {keys} FROM {cur} AS c WHERE NOT EXISTS (SELECT 1 FROM {main} AS b WHERE {on})"
        ).fetchall()
        inserted = conn.execute(
            f"SELECT count(*) FROM {main} AS b WHERE NOT EXISTS (SELECT 1 FROM {cur} AS c WHERE {on})"
        ).fetchone()[0]
        others = [c for c in self.source.columns if c.lower() not in _lower(self.key)]
        updated = 0
        if others:
            same = " AND ".join(f"b.{ident(c)} IS c.{ident(c)} COLLATE BINARY" for c in others)
            updated = conn.execute(
                f"SELECT count(*) FROM {main} AS b JOIN {cur} AS c ON {on} WHERE NOT ({same})"
            ).fetchone()[0]
        self.outcome = TableRestore(self.name, rows, before, len(self.deleted_keys), inserted, updated)

    def vanishing(self, conn: sqlite3.Connection, refs: list[str]) -> Iterator[tuple[str, list[tuple[Any, ...]]]]:
        """Values of `refs` (what a foreign key points at) that the restore deletes, or changes in place."""
        main, cur, on = f"main.{ident(self.name)}", f"cur.{ident(self.target)}", self._on_key()
        cols = ", ".join(f"c.{ident(r)}" for r in refs)
        not_null = " AND ".join(f"c.{ident(r)} IS NOT NULL" for r in refs)
        if self.deleted_keys:
            yield (
                "delete",
                conn.execute(
                    f"SELECT DISTINCT {cols} FROM {cur} AS c WHERE {not_null} "
                    f"AND NOT EXISTS (SELECT 1 FROM {main} AS b WHERE {on})"
                ).fetchall(),
            )
        if _lower(refs) != _lower(self.key):
            same = " AND ".join(f"b.{ident(r)} IS c.{ident(r)} COLLATE BINARY" for r in refs)
            yield (
                "update",
                conn.execute(
                    f"SELECT DISTINCT {cols} FROM {main} AS b JOIN {cur} AS c ON {on} WHERE {not_null} AND NOT ({same})"
                ).fetchall(),
            )


# -- Time Travel ----------------------------------------------------------------------------------------------
def restore_bookmark(project: Project, env_name: str, bookmark: str, *, confirm: Confirm) -> RestoreResult:
    """Remote only: take the env lock, restore the whole database to a Time Travel bookmark, clear the lock.

    The lock table goes back in time with everything else, so whatever lock it holds afterwards (the run that
    was under way at the bookmark) is stale and is removed.
    """
    env = project.config.env(env_name)
    if not env.is_remote:
        raise UsageError(
            f"Time Travel is remote-only: {env.name} is a local database. Restore a backup folder instead: "
            f"`d1ops restore <backup> --env {env.name}` (see `d1ops backups list {env.name}`)."
        )
    result = RestoreResult(env=env.name, target=env.target, mode="bookmark", bookmark=bookmark, started_at=utc_now())
    start = project.wrangler.processes
    owner = new_lock_owner()
    locked = True
    try:
        lock_and_read_state(project.wrangler, env, owner, ())
        if env.protected:
            confirm(
                env,
                f"Restore the whole database of {env.name} ({env.binding.database_name or env.binding.binding}) to "
                f"Time Travel bookmark {bookmark}: every change made after it is undone, d1_migrations included.",
            )
        try:
            answer = project.wrangler.time_travel_restore(env, bookmark=bookmark)
        except WranglerError as exc:
            raise RestoreFailed(
                f"Time Travel restore of {env.name} to {bookmark} failed: {exc.detail}\n{env.name} was not "
                "restored. Check the bookmark (`npx wrangler d1 time-travel info`) and retry."
            ) from exc
        if isinstance(answer, dict):
            result.bookmark_before = str(answer.get("previous_bookmark") or "") or None
        locked = False  # the lock went back in time with the database
        try:
            release_lock(project.wrangler, env, None)
        except D1OpsError as exc:
            result.warnings.append(
                f"{env.name} was restored, but the lock table went back in time too and may hold the lock of a run "
                f"of back then ({exc.message}). Run `d1ops unlock {env.name}`."
            )
    except D1OpsError as exc:
        if locked:
            release_quietly(project, env, owner, result.warnings)
            locked = False
        _finish(project, result, start, exc)
        raise
    finally:
        if locked:
            release_quietly(project, env, owner, result.warnings)
    return _finish(project, result, start)


# -- the report ---------------------------------------------------------------------------------------------
def _finish(project: Project, result: RestoreResult, start: int, error: D1OpsError | None = None) -> RestoreResult:
    """Count processes; unless dry run, file the JSON report under backups/<env>/reports/ (and in the
    pre-restore backup's folder)."""
    result.finished_at = utc_now()
    result.wrangler_processes = project.wrangler.processes - start
    if result.dry_run:
        return result
    path = project.config.backups_dir / result.env / "reports" / f"{backup.utc_stamp(datetime.now(UTC))}-restore.json"
    result.report_path = str(path)
    data = {"command": "restore", **result.to_dict(), "exit_code": error.exit_code if error else 0}
    data["error"] = error.message if error else None
    text = redact(json.dumps(data, indent=2, default=str)) + "\n"
    try:
        write_private(path, text)
        if result.pre_restore_backup and Path(result.pre_restore_backup).is_dir():
            write_private(Path(result.pre_restore_backup) / "report.json", text)
    except OSError as exc:
        result.warnings.append(f"could not write the restore report ({exc})")
    return result
