"""Taking backups that are proven restorable, and plain exports.

A backup is assembled in a hidden `.<name>.partial` folder and renamed into place only when its files and
manifest are written, so a crash never leaves a half backup that looks whole. It is then verified
(`verify.py`) and the verdict recorded in its manifest.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from d1ops import __version__
from d1ops.backups.catalog import write_manifest
from d1ops.backups.dumpfile import (
    SCHEMA_FILE,
    SQL_DUMP,
    AbsentParents,
    absent_parents,
    complete_from_schema,
    dump_sqlite,
    load_dump,
    write_table_json,
)
from d1ops.backups.layout import DEFAULT_FORMAT, FORMATS
from d1ops.backups.verify import BackupResult, ScratchLoad, start_scratch_load, verify_backup
from d1ops.errors import BackupFailed, D1OpsError, UsageError, WranglerError
from d1ops.project.config import Environment
from d1ops.project.migrations import sha256_file
from d1ops.project.project import Project
from d1ops.run.tracking import LOCK_TABLE, TRACKING_TABLES, WRANGLER_TABLE
from d1ops.sql.schema import (
    SCHEMA_READ,
    DatabaseSchema,
    check_tables,
    count_rows_sql,
    counts_from,
    created_before_parent,
    schema_from,
)
from d1ops.sql.text import StatementTooLarge, ident
from d1ops.support.background import Background
from d1ops.support.files import make_private_dir, pid_alive, utc_now, utc_stamp, work_dir
from d1ops.wrangler.reads import read_schema

# Writes an SQL dump of (tables, whole database?) to a path: wrangler's export by default; a fleet's goes through
# the D1 API (run/fleet_backup.py). Everything else a backup does (load, count, manifest, verify) is the same.
Exporter = Callable[[Path, list[str], bool], None]


@dataclass(frozen=True)
class Export:
    """A `wrangler d1 export` of named tables, written already (a plan read the live rows with it): a backup of
    those tables takes it as its dump instead of exporting again."""

    path: Path
    tables: tuple[str, ...]
    started_at: str


def take_backup(
    project: Project,
    env: Environment,
    *,
    tables: list[str] | None,
    label: str,
    verify: str | None = "quick",
    fmt: str = DEFAULT_FORMAT,
    head: str | None = None,
    bookmark: str | None = None,
    schema: DatabaseSchema | None = None,
    exporter: Exporter | None = None,
    export: Export | None = None,
) -> BackupResult | None:
    """Back up `tables` (None: the whole database) of `env` into a new backup folder, then verify it.

    `schema`, when the caller read it already (in the same call as the lock), saves a process; so does `export`,
    an export of exactly `tables` the caller made already (then the backup is of the rows as that export read them).
    `exporter` writes the dump instead of `wrangler d1 export` (a fleet's database, through the D1 API).
    Returns None when a whole-database backup finds no tables at all (nothing to lose).
    Raises BackupFailed when no backup could be written (then no folder is left behind); a backup
    that was written but failed verification is kept, marked unverified, and returned.
    """
    if fmt not in FORMATS:
        raise UsageError(f"Unknown backup format '{fmt}': use one of {', '.join(FORMATS)}.")
    if export is not None and (tables is None or tuple(dict.fromkeys(tables)) != export.tables):
        raise ValueError(f"the export holds {', '.join(export.tables)}, not the tables to back up")
    started = export.started_at if export is not None else utc_now()
    stamp = utc_stamp()
    final = project.config.env_dir(env.name) / f"{stamp}-{_safe_label(label)}"
    partial = final.with_name(f".{final.name}.{os.getpid()}.partial")  # the pid: see clean_dead_partials
    early: Background | None = None
    run_export = exporter or wrangler_exporter(project, env)
    # Named tables: their export needs only the names; the schema is read beside it.
    if schema is None and tables and export is None:
        try:
            clean_dead_partials(final.parent)
            make_private_dir(partial)
            names = list(dict.fromkeys(tables))
            early = Background(lambda: run_export(partial / SQL_DUMP, names, False), "export")
        except OSError:
            pass  # not writable: the steps below say so, in the backup's own words
    try:
        live: dict[str, int] | None = None
        if schema is None:  # a standalone backup: the head is read with the schema too
            schema, live, read_head = _read_schema_and_counts(project, env, tables)
            head = head or read_head
        whole = tables is None
        if tables is None:
            selected = [t for t in schema.tables if t != LOCK_TABLE]
            if not [t for t in selected if t not in TRACKING_TABLES]:
                return None
        else:
            check_tables(schema, tables, env)
            selected = list(dict.fromkeys(tables))
    except WranglerError as exc:
        _abandon(early, partial)
        raise BackupFailed(f"Backup of {env.name} failed reading the database: {exc.detail}") from exc
    except BaseException as exc:
        _abandon(early, partial, wait=isinstance(exc, D1OpsError))  # Ctrl-C: not waited for (lifeline.py ends it)
        raise
    if early is None:  # an early export cleaned them before it started
        clean_dead_partials(final.parent)
    with work_dir("backup") as tmp:
        try:
            make_private_dir(partial, exist_ok=early is not None)
            if early is not None:
                early.result()
            if export is not None:
                shutil.copyfile(export.path, partial / SQL_DUMP)
            exported = early is not None or export is not None
            dumped = _write_dump(
                project,
                env,
                partial,
                selected,
                schema,
                whole,
                fmt,
                Path(tmp),
                verify == "full",
                exported,
                run_export,
            )
            manifest: dict[str, Any] = {
                "env": env.name,
                "database": project.config.database,
                "database_name": env.binding.database_name,
                "database_id": env.binding.database_id,
                "target": env.target,
                "format": fmt,
                "label": label,
                "whole_database": whole,
                # Counted in the dump itself: a consistent snapshot, whatever the app wrote around it.
                "tables": [{"name": t, "rows": dumped.counts.get(t, 0)} for t in selected],
                "virtual_tables": dumped.virtual,
                "sqlite_sequence": dumped.sequence,
                "left_out": schema.left_out() if whole else [],
                "schema": schema.restore_ddl() if whole else schema.ddl_for(selected),
                "files": [_file_entry(partial / f) for f in dumped.files],
                "live_rows": live,
                "live_rows_note": LIVE_ROWS_NOTE if live is None else LIVE_ROWS_READ,
                "migration_head": head,
                "bookmark": bookmark,
                "wrangler_version": project.wrangler.version() if exporter is None else None,
                "exported_through": "wrangler" if exporter is None else "d1-api",
                "d1ops_version": __version__,
                "started_at": started,
                "finished_at": None,
                "verified": False,
                "verify_level": None,
            }
            write_manifest(partial, manifest)
            os.replace(partial, final)
        except (D1OpsError, OSError, sqlite3.Error, ValueError, UnicodeDecodeError) as exc:
            shutil.rmtree(partial, ignore_errors=True)
            if isinstance(exc, UsageError):
                raise
            raise BackupFailed(
                f"Backup of {env.name} failed: {_detail(exc, partial)}. No backup was kept. "
                + (
                    "Fix the data named above, then retry."
                    if isinstance(exc, StatementTooLarge)
                    else f"Check that {project.config.backups_dir} is writable and has space, then retry."
                )
            ) from exc
        except BaseException:  # Ctrl-C: no half backup left behind either
            shutil.rmtree(partial, ignore_errors=True)
            raise
        return verify_backup(
            project, final, level=verify or "quick", record=True, loaded=dumped.loaded, scratch=dumped.scratch
        )


def _abandon(early: Background | None, partial: Path, *, wait: bool = True) -> None:
    """The schema read failed or refused the names: let the export end, and leave no folder behind."""
    if early is None:
        return
    if wait:
        early.wait()
    shutil.rmtree(partial, ignore_errors=True)


LIVE_ROWS_NOTE = (
    "not recorded: the row counts above are the dump's own (a consistent snapshot); counting the live database "
    "would cost another wrangler process and would not match a database the app keeps writing to"
)


LIVE_ROWS_READ = (
    "what the live database held when the backup started (read with its schema), as information: an app writing "
    "to it makes these differ from the dump's own counts, which are the backup's"
)


HEAD_READ = f"SELECT name FROM {WRANGLER_TABLE} ORDER BY id DESC LIMIT 1;"


def _read_schema_and_counts(
    project: Project, env: Environment, tables: list[str] | None
) -> tuple[DatabaseSchema, dict[str, int] | None, str | None]:
    """The schema, the newest applied migration (the manifest's migration_head) and the live row counts of named
    tables, read in one process. A database wrangler never tracked (no d1_migrations), or a name that is no
    table, fails that read: then the schema alone is read (check_tables says which name)."""
    named = list(dict.fromkeys(tables or []))
    counts = f"{count_rows_sql(named)}\n" if named else ""
    try:
        results = project.wrangler.execute(env, command=f"{counts}{HEAD_READ}\n{SCHEMA_READ}")
    except WranglerError as exc:
        if "no such table" not in exc.detail:
            raise
        return read_schema(project.wrangler, env), None, None
    rows = results[len(named)].results
    head = str(rows[0]["name"]) if rows and rows[0].get("name") else None
    return schema_from(results), counts_from(results[: len(named)], named) if named else None, head


def _detail(exc: BaseException, partial: Path) -> str:
    if isinstance(exc, D1OpsError):
        return exc.message
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc} ({exc.filename or partial})"
    return f"the export does not load into SQLite ({exc})"


def clean_dead_partials(folder: Path) -> list[Path]:
    """Remove the `.partial` folders that a killed d1ops left behind (SIGKILL runs no cleanup): those whose
    process (the pid in the name) is no longer alive. A live backup's folder, or one from another host's
    process that happens to share the folder, is only removed once its pid is gone here too."""
    removed = []
    for path in folder.glob(".*.partial") if folder.is_dir() else ():
        pid = path.name.rsplit(".", 2)[-2]
        if not pid.isdigit() or pid_alive(int(pid)):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _safe_label(label: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_" else "-" for c in label)[:60].strip("-")
    return cleaned or "backup"


def _file_entry(path: Path) -> dict[str, Any]:
    os.chmod(path, 0o600)
    return {"name": path.name, "sha256": sha256_file(path), "size": path.stat().st_size}


@dataclass
class Dumped:
    files: list[str]  # written into the backup folder
    counts: dict[str, int]  # rows per ordinary table, counted in the dump
    virtual: list[dict[str, Any]]  # virtual tables: name, content (rows | rebuild | none), rows
    sequence: list[list[Any]]  # sqlite_sequence as in the dump
    loaded: Path | None  # the dump loaded into SQLite, when it is exactly the backup's dump.sql
    scratch: ScratchLoad | None = None  # full verification's D1 load of that dump, started beside the SQLite load


def _write_dump(
    project: Project,
    env: Environment,
    folder: Path,
    tables: list[str],
    schema: DatabaseSchema,
    whole: bool,
    fmt: str,
    tmp: Path,
    full: bool = False,
    exported: bool = False,
    export: Exporter | None = None,
) -> Dumped:
    """Export through wrangler into `folder` (one process), load the export into SQLite and count it there.

    `whole`: a whole-database backup. When wrangler refuses to export it whole (virtual tables), the ordinary
    tables, `sqlite_sequence` and each regular FTS5 table's content are exported by name, and the rest of the
    schema is added from `schema`'s exact SQL; `dump.sql` is then written by d1ops, in restore order.
    `full`: start full verification's D1 load of the export while it is loaded into SQLite here.
    `exported`: the named tables' export is in `folder` already. `export`: what writes a dump (default: wrangler's).
    """
    export = export or wrangler_exporter(project, env)
    dump, db = folder / SQL_DUMP, tmp / "load.sqlite"
    fallback = whole and bool(schema.virtual_tables)
    # A child created before its parent (ALTER TABLE … REFERENCES): wrangler's export, in creation order, has
    # its rows before the parent exists, which D1 refuses; dump.sql is then written by d1ops, parents first.
    rewrite = fallback or bool(
        created_before_parent([t for t in schema.tables if t in set(tables)], schema.foreign_keys)
    )
    parents = AbsentParents() if whole else absent_parents(schema.ddl_for(tables), tables)
    if exported:
        pass  # the caller exported these named tables already
    elif whole and not fallback:
        export(dump, tables, True)
    else:
        export(dump, tables + (_fallback_extras(schema) if whole else []), False)
    scratch = start_scratch_load(project, dump, tmp, parents) if full and fmt == "sql" and not rewrite else None
    try:  # the dump wrangler wrote loaded as D1 loads it: the quick check of the backup, done here once
        load_dump(dump, db, foreign_keys=fmt == "sql" and not rewrite, parents=parents)
    except (sqlite3.Error, ValueError, UnicodeDecodeError):
        if scratch is not None:
            scratch.wait()
        if fallback or fmt != "sql":
            raise
        # Kept, with no rows counted: its verification reports why it does not load, and it stays unverified.
        return Dumped([SQL_DUMP], {}, [], [], None)
    if fallback:
        complete_from_schema(db, schema)
    if rewrite and fmt == "sql":
        with dump.open("w", encoding="utf-8") as out:
            dump_sqlite(db, out)
    virtual: list[dict[str, Any]] = (
        [{"name": v, "content": schema.fts_content(v)} for v in schema.virtual_tables] if whole else []
    )
    conn = sqlite3.connect(db)
    try:
        present = {str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        counts = {t: _count(conn, t) for t in tables if t in present}
        for entry in virtual:
            entry["rows"] = _count(conn, entry["name"]) if entry["content"] != "none" else None
        sequence = (
            [list(r) for r in conn.execute("SELECT name, seq FROM sqlite_sequence")]
            if whole and ("sqlite_sequence" in present)
            else []
        )
        if fmt == "sql":
            return Dumped([SQL_DUMP], counts, virtual, sequence, None if rewrite else db, scratch)
        # JSON: the rows of each table (and of each regular FTS5 table, rowids included) streamed out of SQLite.
        names = []
        for table in tables:
            write_table_json(conn, table, folder / f"{table}.json")
            names.append(f"{table}.json")
        for entry in virtual:
            if entry["content"] == "rows":
                write_table_json(conn, entry["name"], folder / f"{entry['name']}.json", with_rowid=True)
                names.append(f"{entry['name']}.json")
    finally:
        conn.close()
    ddl = schema.restore_ddl() if whole else schema.ddl_for(tables)
    (folder / SCHEMA_FILE).write_text(";\n".join(ddl) + ";\n", encoding="utf-8")
    dump.unlink()
    return Dumped([*names, SCHEMA_FILE], counts, virtual, sequence, None)


def _fallback_extras(schema: DatabaseSchema) -> list[str]:
    """What a per-table export of a whole database adds to its tables: sqlite_sequence, FTS5 content."""
    autoincrement = any("AUTOINCREMENT" in (o.sql or "").upper() for o in schema.of_type("table"))
    content = [f"{v}_content" for v in schema.virtual_tables if schema.fts_content(v) == "rows"]
    return (["sqlite_sequence"] if autoincrement else []) + content


def _count(conn: sqlite3.Connection, table: str) -> int:
    return int(conn.execute(f"SELECT count(*) FROM {ident(table)}").fetchone()[0])


def wrangler_exporter(project: Project, env: Environment) -> Exporter:
    """The default Exporter: `export_sql` (wrangler d1 export)."""
    return lambda output, names, whole: export_sql(project, env, output, tables=names, whole=whole)


def export_sql(project: Project, env: Environment, output: Path, *, tables: list[str], whole: bool) -> None:
    """`wrangler d1 export`: whole database when possible, else per table (e.g. FTS5 virtual tables present).

    Written to a temporary name beside `output` and renamed, so `output` is never left half-written.
    """
    tmp = output.with_name(f".{output.name}.tmp")
    try:
        if whole:
            try:
                project.wrangler.export(env, tmp)
            except WranglerError as exc:
                if "Virtual Tables" not in exc.detail and "virtual table" not in exc.detail.lower():
                    raise
                project.wrangler.export(env, tmp, tables=tuple(tables))
        else:
            project.wrangler.export(env, tmp, tables=tuple(tables))
        if not tmp.is_file():
            raise BackupFailed(f"wrangler d1 export wrote no file for {env.name}.")
        os.chmod(tmp, 0o600)
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)


def bookmark_restore_command(env: Environment, bookmark: str) -> str:
    env_flag = f" --env {env.wrangler_env}" if env.wrangler_env else ""
    return (
        f"d1ops restore --bookmark {bookmark} --env {env.name}   "
        f"(wrangler: npx wrangler d1 time-travel restore {env.binding.binding} --bookmark {bookmark}{env_flag})"
    )


def export_database(project: Project, env: Environment, schema: DatabaseSchema, output: Path) -> None:
    """The whole database as SQL that restores every object: wrangler's own export, or (FTS5 present, which
    wrangler refuses) or a child created before its parent (which wrangler's export writes in an order D1
    refuses), the dump a backup writes."""
    if not schema.virtual_tables and not created_before_parent(schema.tables, schema.foreign_keys):
        export_sql(project, env, output, tables=schema.tables, whole=True)
        return
    with tempfile.TemporaryDirectory(prefix="d1ops-export-") as tmp:
        _write_dump(project, env, Path(tmp), schema.tables, schema, True, "sql", Path(tmp))
        shutil.move(Path(tmp) / SQL_DUMP, output)


def export_file(project: Project, env: Environment, tables: list[str], output: Path, fmt: str) -> dict[str, int]:
    """The plain one-off export: one SQL dump, or the JSON rows of one table. Returns rows per table (JSON)."""
    if fmt not in FORMATS:
        raise UsageError(f"Unknown format '{fmt}': use one of {', '.join(FORMATS)}.")
    if fmt == "json" and len(tables) != 1:
        raise UsageError("--format json writes the rows of one table: give exactly one --table.")
    schema = read_schema(project.wrangler, env)
    check_tables(schema, tables, env)
    if not output.parent.is_dir():
        raise UsageError(f"Folder {output.parent} does not exist.")
    selected = tables or schema.tables
    try:
        if fmt == "sql" and not tables:  # the whole database, as a backup holds it
            export_database(project, env, schema, output)
            return {}
        if fmt == "sql":
            export_sql(project, env, output, tables=selected, whole=False)
            return {}
        with tempfile.TemporaryDirectory(prefix="d1ops-export-") as tmp:
            dump, db = Path(tmp) / SQL_DUMP, Path(tmp) / "load.sqlite"
            export_sql(project, env, dump, tables=selected, whole=False)
            load_dump(dump, db)
            partial = output.with_name(f".{output.name}.tmp")
            conn = sqlite3.connect(db)
            try:
                rows = write_table_json(conn, selected[0], partial)
            finally:
                conn.close()
            os.replace(partial, output)
            return {selected[0]: rows}
    except OSError as exc:
        raise BackupFailed(f"Cannot write {output}: {exc.strerror or exc}.") from exc
