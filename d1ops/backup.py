"""Backups that are proven restorable.

Layout: `backups/<env>/<UTC time>-<label>/` holds the dump (`dump.sql`, or one `<table>.json` per table plus
`schema.sql`) and `manifest.json`. A backup is assembled in a hidden `.<name>.partial` folder and renamed
into place only when its files and manifest are written, so a crash never leaves a half backup that looks whole.
Files are 0600 and folders 0700: they hold user emails and key hashes.

Verified means: every file's sha256 matches the manifest, the dump stream-loads into a temporary SQLite
database, and every table's row count equals the count read from the source at backup time ("quick").
"full" also loads the dump into a scratch local D1 through wrangler, in a temporary wrangler project, and
counts the rows there: the proof that D1 itself accepts it.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import sqlite3
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from d1ops import __version__
from d1ops.config import Binding, Environment
from d1ops.errors import BackupFailed, D1OpsError, UsageError, WranglerError
from d1ops.migrations import sha256_file
from d1ops.project import Project
from d1ops.tracking import LOCK_TABLE, TRACKING_TABLES
from d1ops.wrangler import Statement

MANIFEST = "manifest.json"
SQL_DUMP = "dump.sql"
SCHEMA_FILE = "schema.sql"
FORMATS = ("sql", "json")
INTERNAL_PREFIXES = ("sqlite_", "_cf_", "_d1ops_")


def ident(name: str) -> str:
    """An SQL identifier, double-quoted."""
    return '"' + name.replace('"', '""') + '"'


# -- what the database holds ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SchemaObject:
    type: str
    name: str
    tbl_name: str
    sql: str | None


@dataclass(frozen=True)
class DatabaseSchema:
    objects: tuple[SchemaObject, ...]

    @property
    def virtual_tables(self) -> list[str]:
        return [
            o.name for o in self.objects if o.type == "table" and (o.sql or "").upper().startswith("CREATE VIRTUAL")
        ]

    @property
    def shadow_tables(self) -> list[str]:
        prefixes = tuple(f"{v}_" for v in self.virtual_tables)
        return [o.name for o in self.objects if o.type == "table" and prefixes and o.name.startswith(prefixes)]

    @property
    def tables(self) -> list[str]:
        """Ordinary tables: what a backup can hold (virtual tables and their shadow tables excluded)."""
        skip = set(self.virtual_tables) | set(self.shadow_tables)
        return [o.name for o in self.objects if o.type == "table" and o.name not in skip]

    def ddl_for(self, tables: list[str]) -> list[str]:
        """CREATE statements of these tables, then their indexes and triggers."""
        wanted = set(tables)
        first = [o.sql for o in self.objects if o.type == "table" and o.name in wanted and o.sql]
        rest = [o.sql for o in self.objects if o.type in ("index", "trigger") and o.tbl_name in wanted and o.sql]
        return [*first, *rest]


def read_schema(project: Project, env: Environment) -> DatabaseSchema:
    rows = project.wrangler.execute(
        env,
        command="SELECT type, name, tbl_name, sql FROM sqlite_master "
        "WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name NOT LIKE '\\_cf\\_%' ESCAPE '\\' "
        "AND name NOT LIKE '\\_d1ops\\_%' ESCAPE '\\' ORDER BY rowid",
    )[0].results
    return DatabaseSchema(
        tuple(SchemaObject(str(r["type"]), str(r["name"]), str(r["tbl_name"]), r.get("sql")) for r in rows)
    )


def count_rows_sql(tables: list[str]) -> str:
    # One statement per table: D1 caps the terms of a compound SELECT (UNION ALL of 8 tables fails).
    return "\n".join(f"SELECT count(*) AS n FROM {ident(t)};" for t in tables)


def counts_from(results: list[Statement], tables: list[str]) -> dict[str, int]:
    return {t: int(s.results[0]["n"]) for t, s in zip(tables, results, strict=True)}  # type: ignore[call-overload]


def count_rows(project: Project, env: Environment, tables: list[str]) -> dict[str, int]:
    """Row counts of these tables: one wrangler process."""
    if not tables:
        return {}
    return counts_from(project.wrangler.execute(env, command=count_rows_sql(tables)), tables)


def check_tables(schema: DatabaseSchema, tables: list[str], env: Environment) -> None:
    """Refuse names that are not real, backupable tables of the database (before anything runs)."""
    import difflib

    bad = [t for t in tables if t not in schema.tables]
    if bad:
        hints = []
        for t in bad:
            close = difflib.get_close_matches(t, schema.tables, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            kind = " is a virtual table (FTS): back up its content table instead" if t in schema.virtual_tables else ""
            hints.append(f"'{t}'{kind or hint}")
        raise UsageError(
            f"No such table in {env.name}: {', '.join(hints)}. Tables: {', '.join(schema.tables) or '(none)'}."
        )


# -- the backup ----------------------------------------------------------------------------------------------------
@dataclass
class BackupResult:
    path: Path
    manifest: dict[str, Any]
    verified: bool
    verify_level: str | None
    problem: str | None = None

    def summary(self) -> dict[str, Any]:
        dump = self.manifest["files"][0] if self.manifest["files"] else {}
        return {
            "path": str(self.path),
            "sha256": dump.get("sha256"),
            "files": self.manifest["files"],
            "verified": self.verified,
            "verify_level": self.verify_level,
            "tables": {t["name"]: t["rows"] for t in self.manifest["tables"]},
        }


def utc_stamp(moment: datetime) -> str:
    return moment.strftime("%Y%m%dT%H%M%S") + f"{moment.microsecond // 1000:03d}Z"


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
) -> BackupResult | None:
    """Back up `tables` (None: the whole database) of `env` into a new backup folder, then verify it.

    Returns None when a whole-database backup finds no tables at all (nothing to lose).
    Raises BackupFailed when no backup could be written (then no folder is left behind); a backup
    that was written but failed verification is kept, marked unverified, and returned.
    """
    if fmt not in FORMATS:
        raise UsageError(f"Unknown backup format '{fmt}': use one of {', '.join(FORMATS)}.")
    started = datetime.now(UTC)
    try:
        schema = read_schema(project, env)
        whole = tables is None
        if tables is None:
            selected = [t for t in schema.tables if t != LOCK_TABLE]
            if not [t for t in selected if t not in TRACKING_TABLES]:
                return None
        else:
            check_tables(schema, tables, env)
            selected = list(dict.fromkeys(tables))
        counts = count_rows(project, env, selected)
    except WranglerError as exc:
        raise BackupFailed(f"Backup of {env.name} failed reading the database: {exc.detail}") from exc
    final = project.config.backups_dir / env.name / f"{utc_stamp(started)}-{_safe_label(label)}"
    partial = final.with_name(f".{final.name}.partial")
    try:
        _make_private_dir(partial)
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
            "started_at": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "finished_at": None,
            "verified": False,
            "verify_level": None,
        }
        _write_manifest(partial, manifest)
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


def _make_private_dir(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.mkdir(mode=0o700)
    os.chmod(path, 0o700)


def _file_entry(path: Path) -> dict[str, Any]:
    os.chmod(path, 0o600)
    return {"name": path.name, "sha256": sha256_file(path), "size": path.stat().st_size}


def _write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    tmp = folder / f".{MANIFEST}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=2)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, folder / MANIFEST)


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


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"$base64": base64.b64encode(value).decode("ascii")}
    raise TypeError(f"cannot encode {type(value).__name__}")


def write_table_json(conn: sqlite3.Connection, table: str, path: Path) -> int:
    """A JSON array of row objects, one row per line, streamed from SQLite (never all rows in memory)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    count = 0
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        cursor = conn.execute(f"SELECT * FROM {ident(table)}")
        columns = [d[0] for d in cursor.description]
        out.write("[")
        for row in cursor:
            out.write(",\n" if count else "\n")
            out.write(json.dumps(dict(zip(columns, row, strict=True)), default=_json_default, ensure_ascii=False))
            count += 1
        out.write("\n]\n" if count else "]\n")
    return count


def iter_json_rows(path: Path) -> Iterator[dict[str, Any]]:
    """Stream the rows of a file written by write_table_json."""
    with path.open(encoding="utf-8") as handle:
        first = handle.readline().strip()
        if first == "[]":
            return
        if first != "[":
            raise ValueError(f"{path.name}: not a d1ops JSON table file")
        for line in handle:
            line = line.rstrip("\n")
            if line == "]":
                return
            row = json.loads(line.rstrip(","))
            yield {k: _json_value(v) for k, v in row.items()}
        raise ValueError(f"{path.name}: truncated (no closing ])")


def _json_value(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"$base64"}:
        return base64.b64decode(value["$base64"])
    return value


# -- loading a dump --------------------------------------------------------------------------------------------
def iter_statements(path: Path) -> Iterator[str]:
    """Stream the statements of an SQL dump (multi-line CREATE TABLE and trigger bodies included)."""
    buffer: list[str] = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            buffer.append(line)
            if line.rstrip().endswith(";") and sqlite3.complete_statement("".join(buffer)):
                yield "".join(buffer)
                buffer = []
    rest = "".join(buffer).strip()
    if rest:
        if not sqlite3.complete_statement(rest + ";"):
            raise ValueError("the dump ends in the middle of a statement (truncated?)")
        yield rest + ";"


_SINGLE_INSERT = re.compile(r'^INSERT INTO ("(?:[^"]|"")+") VALUES(\(.*\));\s*$', re.DOTALL)
ROWS_PER_INSERT = 200
INSERT_CHARS = 90_000  # D1 refuses statements over 100 KB


def write_compact_dump(dump: Path, out: TextIO) -> None:
    """Copy a dump, joining consecutive one-row INSERTs into one table into multi-row INSERTs.

    The same rows and statements otherwise; wrangler's local `execute --file` costs ~1 ms and more per
    statement (100,000 one-row INSERTs: 110 s; the same rows 200 per statement: 2.5 s, measured here).
    """
    table: str | None = None
    rows: list[str] = []
    size = 0

    def flush() -> None:
        nonlocal rows, size
        if rows:
            out.write(f"INSERT INTO {table} VALUES{','.join(rows)};\n")
        rows, size = [], 0

    for statement in iter_statements(dump):
        match = _SINGLE_INSERT.match(statement.strip())
        if match is None or match.group(1) == '"sqlite_sequence"':
            flush()
            out.write(statement.rstrip("\n") + "\n")
            continue
        if match.group(1) != table or len(rows) >= ROWS_PER_INSERT or size + len(match.group(2)) > INSERT_CHARS:
            flush()
            table = match.group(1)
        rows.append(match.group(2))
        size += len(match.group(2))
    flush()


def load_dump(dump: Path, db: Path) -> None:
    """Stream-load an SQL dump into an on-disk SQLite database (memory stays flat for any dump size)."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("BEGIN")
        for statement in iter_statements(dump):
            conn.execute(statement)
        conn.execute("COMMIT")
    finally:
        conn.close()


def load_backup(folder: Path, manifest: dict[str, Any], db: Path) -> None:
    """Load any backup (SQL dump or JSON files) into a temporary SQLite database."""
    if manifest.get("format", "sql") == "sql":
        load_dump(folder / SQL_DUMP, db)
        return
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("BEGIN")
        schema = manifest.get("schema", [])
        tables = [s for s in schema if _is_create_table(s)]
        for statement in tables:
            conn.execute(statement)
        for table in manifest["tables"]:
            name = table["name"]
            for row in iter_json_rows(folder / f"{name}.json"):
                columns = ", ".join(ident(c) for c in row)
                marks = ", ".join("?" for _ in row)
                conn.execute(f"INSERT INTO {ident(name)} ({columns}) VALUES ({marks})", list(row.values()))
        for statement in schema:  # indexes and triggers after the rows: triggers must not fire on a load
            if not _is_create_table(statement):
                conn.execute(statement)
        conn.execute("COMMIT")
    finally:
        conn.close()


# -- verification ------------------------------------------------------------------------------------------------
def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(
            f"{folder} is not a d1ops backup (no {MANIFEST}). Pick one from `d1ops backups list`."
        ) from None
    except (OSError, ValueError) as exc:
        raise BackupFailed(f"{path} cannot be read ({exc}).") from exc
    if not isinstance(manifest, dict) or "tables" not in manifest or "files" not in manifest:
        raise BackupFailed(f"{path} is not a d1ops manifest.")
    return manifest


def checksum_problems(folder: Path, manifest: dict[str, Any]) -> list[str]:
    problems = []
    for entry in manifest["files"]:
        path = folder / entry["name"]
        if not path.is_file():
            problems.append(f"{entry['name']} is missing")
        elif sha256_file(path) != entry["sha256"]:
            problems.append(f"{entry['name']}: sha256 does not match the manifest (file changed or corrupted)")
    return problems


def verify_backup(project: Project, folder: Path, *, level: str = "quick", record: bool = True) -> BackupResult:
    """Check a backup: checksums, a load into SQLite, row counts; `full` also a load into a scratch D1.

    With `record`, the manifest's `verified`/`verify_level` are updated (and `finished_at` set if unset).
    """
    manifest = read_manifest(folder)
    problem = _verify_problem(project, folder, manifest, level)
    verified = problem is None
    if record:
        manifest["verified"] = verified
        manifest["verify_level"] = level if verified else None
        manifest["verify_problem"] = problem
        manifest["verified_at"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        manifest["finished_at"] = manifest.get("finished_at") or manifest["verified_at"]
        _write_manifest(folder, manifest)
    return BackupResult(folder, manifest, verified, level if verified else None, problem)


def _verify_problem(project: Project, folder: Path, manifest: dict[str, Any], level: str) -> str | None:
    problems = checksum_problems(folder, manifest)
    if problems:
        return "; ".join(problems)
    expected = {t["name"]: int(t["rows"]) for t in manifest["tables"]}
    with tempfile.TemporaryDirectory(prefix="d1ops-verify-") as tmp:
        db = Path(tmp) / "verify.sqlite"
        try:
            load_backup(folder, manifest, db)
        except (sqlite3.Error, ValueError, OSError, UnicodeDecodeError) as exc:
            return f"the dump does not load into SQLite: {exc}"
        conn = sqlite3.connect(db)
        try:
            loaded = {}
            for name in expected:
                try:
                    loaded[name] = conn.execute(f"SELECT count(*) FROM {ident(name)}").fetchone()[0]
                except sqlite3.Error as exc:
                    return f"table {name} is not in the dump ({exc})"
        finally:
            conn.close()
        wrong = [f"{t}: {loaded[t]} rows in the dump, {n} in the source" for t, n in expected.items() if loaded[t] != n]
        if wrong:
            return "row counts differ: " + "; ".join(wrong)
        if level == "full":
            return _verify_in_scratch_d1(project, folder, manifest, expected, Path(tmp))
    return None


def _verify_in_scratch_d1(
    project: Project, folder: Path, manifest: dict[str, Any], expected: dict[str, int], tmp: Path
) -> str | None:
    """Load the backup into a scratch local D1 (a temporary wrangler project) and count rows there."""
    scratch = tmp / "scratch"
    scratch.mkdir()
    database_id = str(uuid.uuid4())
    (scratch / "wrangler.toml").write_text(
        'name = "d1ops-verify"\ncompatibility_date = "2025-01-01"\n\n[[d1_databases]]\n'
        f'binding = "DB"\ndatabase_name = "d1ops-verify"\ndatabase_id = "{database_id}"\n',
        encoding="utf-8",
    )
    wrangler = project.wrangler.sibling(scratch, scratch / "wrangler.toml")
    env = scratch_env(database_id)
    if manifest.get("format", "sql") == "sql":
        dump = folder / SQL_DUMP
    else:
        dump = tmp / "from-json.sql"
        dump_sqlite(tmp / "verify.sqlite", dump)
    source = tmp / "compact.sql"
    with source.open("w", encoding="utf-8") as out:
        write_compact_dump(dump, out)
    try:
        wrangler.execute(env, file=source, discard_results=True)
        tables = list(expected)
        counted = counts_from(wrangler.execute(env, command=count_rows_sql(tables)), tables) if tables else {}
    except WranglerError as exc:
        return f"a scratch local D1 rejects the dump: {exc.detail}"
    wrong = [f"{t}: {counted.get(t)} rows in D1, {n} in the source" for t, n in expected.items() if counted.get(t) != n]
    return ("row counts differ in the scratch D1: " + "; ".join(wrong)) if wrong else None


def scratch_env(database_id: str) -> Environment:
    return Environment(
        name="scratch",
        target="local",
        wrangler_env=None,
        protected=False,
        skip=(),
        backup="skip",
        verify="quick",
        binding=Binding("DB", "d1ops-verify", database_id, None),
    )


def _is_create_table(statement: str) -> bool:
    return statement.lstrip().upper().startswith("CREATE TABLE")


def dump_sqlite(db: Path, output: Path) -> None:
    """Write an SQLite database as SQL D1 accepts: every table, then the rows, then indexes, triggers, views.

    (iterdump's own order, table by table, fails on D1 when a table references one created later.)
    Streamed: three passes over iterdump, nothing held in memory.
    """
    conn = sqlite3.connect(db)
    phases = (
        _is_create_table,
        lambda s: s.startswith("INSERT INTO") and not s.startswith('INSERT INTO "sqlite_sequence"'),
        lambda s: not _is_create_table(s) and not (s.startswith("INSERT INTO") and "sqlite_sequence" not in s[:30]),
    )
    try:
        with output.open("w", encoding="utf-8") as out:
            out.write("PRAGMA defer_foreign_keys=TRUE;\n")
            for wanted in phases:
                for line in conn.iterdump():
                    if line not in ("BEGIN TRANSACTION;", "COMMIT;") and wanted(line):
                        out.write(line + "\n")
    finally:
        conn.close()


# -- listing and pruning -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BackupEntry:
    env: str
    path: Path
    name: str
    label: str
    started_at: str
    tables: list[str]
    rows: int
    size: int
    verified: bool
    verify_level: str | None
    format: str
    manifest: dict[str, Any] = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "env": self.env,
            "path": str(self.path),
            "name": self.name,
            "label": self.label,
            "started_at": self.started_at,
            "tables": self.tables,
            "rows": self.rows,
            "size": self.size,
            "verified": self.verified,
            "verify_level": self.verify_level,
            "format": self.format,
        }


def list_backups(project: Project, env_name: str | None = None) -> list[BackupEntry]:
    """Backups on disk, newest first; hidden (partial) folders and reports are not backups."""
    root = project.config.backups_dir
    envs = [env_name] if env_name else project.config.env_names
    entries = []
    for name in envs:
        folder = root / name
        if not folder.is_dir():
            continue
        for child in folder.iterdir():
            if child.name.startswith(".") or not (child / MANIFEST).is_file():
                continue
            try:
                manifest = read_manifest(child)
            except D1OpsError:
                continue
            entries.append(
                BackupEntry(
                    env=name,
                    path=child,
                    name=child.name,
                    label=str(manifest.get("label", "")),
                    started_at=str(manifest.get("started_at", "")),
                    tables=[t["name"] for t in manifest["tables"]],
                    rows=sum(int(t["rows"]) for t in manifest["tables"]),
                    size=sum(int(f["size"]) for f in manifest["files"]),
                    verified=bool(manifest.get("verified")),
                    verify_level=manifest.get("verify_level"),
                    format=str(manifest.get("format", "sql")),
                    manifest=manifest,
                )
            )
    return sorted(entries, key=lambda e: e.name, reverse=True)


def prune_backups(project: Project, env_name: str, keep: int, *, dry_run: bool = False) -> list[BackupEntry]:
    """Delete all but the newest `keep` backups of an environment; the newest verified one is always kept."""
    if keep < 1:
        raise UsageError("--keep must be at least 1.")
    project.config.env(env_name)
    entries = list_backups(project, env_name)
    newest_verified = next((e for e in entries if e.verified), None)
    doomed = [e for e in entries[keep:] if e is not newest_verified]
    if not dry_run:
        for entry in doomed:
            shutil.rmtree(entry.path)
    return doomed


def resolve_backup(project: Project, spec: str) -> Path:
    """A backup folder from a path, a manifest path, or a folder name under backups/<env>/."""
    path = Path(spec)
    if path.is_file() and path.name == MANIFEST:
        path = path.parent
    if path.is_dir():
        return path
    for entry in list_backups(project):
        if entry.name == spec:
            return entry.path
    raise UsageError(f"No backup '{spec}'. Give a backup folder, or a name from `d1ops backups list`.")


def bookmark_restore_command(project: Project, env: Environment, bookmark: str) -> str:
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
    schema = read_schema(project, env)
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
