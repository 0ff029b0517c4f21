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
from pathlib import Path
from typing import Any

from d1ops import __version__
from d1ops.catalog import write_manifest
from d1ops.config import Environment
from d1ops.dumpfile import SCHEMA_FILE, SQL_DUMP, load_dump, write_table_json
from d1ops.errors import BackupFailed, D1OpsError, UsageError, WranglerError
from d1ops.files import make_private_dir, utc_now, utc_stamp
from d1ops.migrations import sha256_file
from d1ops.project import Project
from d1ops.schema import DatabaseSchema, check_tables, count_rows, read_schema
from d1ops.tracking import LOCK_TABLE, TRACKING_TABLES
from d1ops.verify import BackupResult, verify_backup

FORMATS = ("sql", "json")


def take_backup(
    project: Project,
    env: Environment,
    *,
    tables: list[str] | None,
    label: str,
    verify: str | None = "quick",
    fmt: str = "sql",
    head: str | None = None,
    bookmark: str | None = None,
    schema: DatabaseSchema | None = None,
) -> BackupResult | None:
    """Back up `tables` (None: the whole database) of `env` into a new backup folder, then verify it.

    `schema`, when the caller read it already (in the same call as the lock), saves a process.
    Returns None when a whole-database backup finds no tables at all (nothing to lose).
    Raises BackupFailed when no backup could be written (then no folder is left behind); a backup
    that was written but failed verification is kept, marked unverified, and returned.
    """
    if fmt not in FORMATS:
        raise UsageError(f"Unknown backup format '{fmt}': use one of {', '.join(FORMATS)}.")
    started = utc_now()
    stamp = utc_stamp()
    try:
        schema = schema or read_schema(project.wrangler, env)
        whole = tables is None
        if tables is None:
            selected = [t for t in schema.tables if t != LOCK_TABLE]
            if not [t for t in selected if t not in TRACKING_TABLES]:
                return None
        else:
            check_tables(schema, tables, env)
            selected = list(dict.fromkeys(tables))
        counts = count_rows(project.wrangler, env, selected)
    except WranglerError as exc:
        raise BackupFailed(f"Backup of {env.name} failed reading the database: {exc.detail}") from exc
    final = project.config.env_dir(env.name) / f"{stamp}-{_safe_label(label)}"
    partial = final.with_name(f".{final.name}.partial")
    try:
        make_private_dir(partial)
        files = _write_dump(project, env, partial, selected, whole and not schema.virtual_tables, fmt, schema)
        manifest: dict[str, Any] = {
            "env": env.name,
            "database": project.config.database,
            "database_name": env.binding.database_name,
            "target": env.target,
            "format": fmt,
            "label": label,
            "whole_database": whole,
            "tables": [{"name": t, "rows": counts[t]} for t in selected],
            "not_backed_up": sorted(set(schema.virtual_tables) | set(schema.shadow_tables)) if whole else [],
            "schema": schema.ddl_for(selected),
            "files": [_file_entry(partial / f) for f in files],
            "migration_head": head,
            "bookmark": bookmark,
            "wrangler_version": project.wrangler.version(),
            "d1ops_version": __version__,
            "started_at": started,
            "finished_at": None,
            "verified": False,
            "verify_level": None,
        }
        write_manifest(partial, manifest)
        os.replace(partial, final)
    except (D1OpsError, OSError) as exc:
        shutil.rmtree(partial, ignore_errors=True)
        if isinstance(exc, UsageError):
            raise
        detail = exc.message if isinstance(exc, D1OpsError) else f"{exc.strerror or exc} ({exc.filename or partial})"
        raise BackupFailed(
            f"Backup of {env.name} failed: {detail}. No backup was kept. "
            f"Check that {project.config.backups_dir} is writable and has space, then retry."
        ) from exc
    except BaseException:  # Ctrl-C: no half backup left behind either
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return verify_backup(project, final, level=verify or "quick", record=True)


def _safe_label(label: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_" else "-" for c in label)[:60].strip("-")
    return cleaned or "backup"


def _file_entry(path: Path) -> dict[str, Any]:
    os.chmod(path, 0o600)
    return {"name": path.name, "sha256": sha256_file(path), "size": path.stat().st_size}


def _write_dump(
    project: Project,
    env: Environment,
    folder: Path,
    tables: list[str],
    whole_export: bool,
    fmt: str,
    schema: DatabaseSchema,
) -> list[str]:
    """Export through wrangler into `folder`; returns the names of the files written."""
    dump = folder / SQL_DUMP
    export_sql(project, env, dump, tables=tables, whole=whole_export)
    if fmt == "sql":
        return [SQL_DUMP]
    # JSON: rows of each table streamed out of the dump loaded into a temporary SQLite database.
    names = []
    with tempfile.TemporaryDirectory(prefix="d1ops-json-") as tmp:
        db = Path(tmp) / "load.sqlite"
        load_dump(dump, db)
        conn = sqlite3.connect(db)
        try:
            for table in tables:
                name = f"{table}.json"
                write_table_json(conn, table, folder / name)
                names.append(name)
        finally:
            conn.close()
    (folder / SCHEMA_FILE).write_text(";\n".join(schema.ddl_for(tables)) + ";\n", encoding="utf-8")
    dump.unlink()
    return [*names, SCHEMA_FILE]


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
        if fmt == "sql":
            export_sql(project, env, output, tables=selected, whole=not tables and not schema.virtual_tables)
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
