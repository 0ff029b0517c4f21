"""Verification: is a backup what its manifest says, and does it load?

- quick: every file's sha256 matches the manifest, the dump stream-loads into a temporary SQLite database
  as D1 loads it (foreign keys on, one transaction), and every table holds the rows the manifest lists.
  A restore runs the same check (`quick_check`).
- full: quick, and the dump is loaded into a scratch local D1 through wrangler and the rows counted there:
  the proof that D1 itself accepts it. The D1 load (one wrangler process, most of the time) runs in a
  background thread while the quick check loads SQLite, and the rows are counted in the file it wrote.

A re-verification that cannot finish (wrangler busy, a timeout) leaves the manifest as it was, and a `quick`
check never takes away a `full` that still holds.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from d1ops.backups.catalog import checksum_problems, read_manifest, write_manifest
from d1ops.backups.dumpfile import SQL_DUMP, AbsentParents, backup_parents, dump_sqlite, load_backup, write_compact_dump
from d1ops.backups.layout import MANIFEST, SQL, format_of
from d1ops.backups.scratch import ScratchD1
from d1ops.errors import BackupFailed, ContentionError, WranglerError
from d1ops.project.project import Project
from d1ops.sql.text import StatementTooLarge, ident
from d1ops.support import progress
from d1ops.support.background import Background
from d1ops.support.files import utc_now, work_dir


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


class _Unfinished(Exception):
    """The check could not run to the end (not a verdict on the backup)."""


class ScratchLoad:
    """Full verification's D1 half: SQL written by `write` (at once), then loaded into a scratch local D1 in a
    background thread, so the caller's own work (the quick check's SQLite load) runs beside wrangler."""

    def __init__(self, project: Project, tmp: Path, write: Callable[[TextIO], None]) -> None:
        self.scratch = ScratchD1(project.wrangler, tmp / "scratch")
        self.source = tmp / "compact.sql"
        self.problem: str | None = None
        self._load: Background | None = None
        try:
            with self.source.open("w", encoding="utf-8") as out:
                write(out)
        except StatementTooLarge as exc:
            self.problem = f"D1 cannot load it: {exc.message}"
            return
        self._load = Background(lambda: self.scratch.run_file(self.source), "d1ops-scratch-load")

    def wait(self) -> None:
        if self._load is not None:
            self._load.wait()

    def result(self, expected: dict[str, int]) -> str | None:
        """The verdict: None when D1 took every statement and holds the rows `expected` lists."""
        if self.problem is not None or self._load is None:
            return self.problem
        try:
            self._load.result()
        except WranglerError as exc:
            if _transient(exc):
                raise _Unfinished(exc.detail) from None
            return f"a scratch local D1 rejects the dump: {exc.detail}"
        counted = self.scratch.table_counts(list(expected))
        missing = [t for t in expected if t not in counted]
        if missing:  # not readable from the file here (e.g. no FTS5 in this Python's SQLite): ask wrangler
            try:
                counted.update(self.scratch.count_rows(missing))
            except WranglerError as exc:
                if "no such table" in exc.detail:
                    return f"the scratch D1 lacks a table the manifest lists: {exc.detail}"
                raise _Unfinished(exc.detail) from None
        wrong = [
            f"{t}: {counted.get(t)} rows in D1, {n} in the manifest" for t, n in expected.items() if counted.get(t) != n
        ]
        return ("row counts differ in the scratch D1: " + "; ".join(wrong)) if wrong else None


def start_scratch_load(project: Project, dump: Path, tmp: Path, parents: AbsentParents) -> ScratchLoad:
    """Start full verification's D1 load of an SQL dump (compacted for D1 first), with stand-ins for the
    tables a backup of some tables references (`parents`)."""
    return ScratchLoad(project, tmp, lambda out: parents.around(out, lambda body: write_compact_dump(dump, body)))


def verify_backup(
    project: Project,
    folder: Path,
    *,
    level: str = "quick",
    record: bool = True,
    loaded: Path | None = None,
    scratch: ScratchLoad | None = None,
) -> BackupResult:
    """Check a backup at `level`; with `record`, write the verdict into its manifest.

    `loaded`: the backup's dump already loaded into SQLite by the run that just wrote it (not loaded again);
    `scratch`: its D1 load, already started by that run (`full`).
    A check that could not finish raises BackupFailed and leaves the manifest untouched. A passing `quick`
    keeps a recorded `full`.
    """
    manifest = read_manifest(folder)
    try:
        problem = _problem(project, folder, manifest, level, loaded, scratch)
    except _Unfinished as exc:
        raise BackupFailed(
            f"Verification of {folder} could not finish: {exc}. The manifest was left as it was; run "
            f"`d1ops backups verify {folder.name}{' --full' if level == 'full' else ''}` again."
        ) from None
    verified = problem is None
    reached = level
    if verified and level == "quick" and manifest.get("verified") and manifest.get("verify_level") == "full":
        reached = "full"  # the files still match what the full check loaded into D1
    if record:
        manifest["verified"] = verified
        manifest["verify_level"] = reached if verified else None
        manifest["verify_problem"] = problem
        manifest["verified_at"] = utc_now()
        manifest["finished_at"] = manifest.get("finished_at") or manifest["verified_at"]
        try:
            write_manifest(folder, manifest)
        except OSError as exc:
            raise BackupFailed(
                f"Could not record the verification in {folder}/{MANIFEST} ({exc.strerror or exc}); the "
                "manifest was left as it was. Free space and run `d1ops backups verify` again."
            ) from exc
    return BackupResult(folder, manifest, verified, reached if verified else None, problem)


def _problem(
    project: Project,
    folder: Path,
    manifest: dict[str, Any],
    level: str,
    loaded: Path | None,
    scratch: ScratchLoad | None,
) -> str | None:
    """Why the backup fails `level`, or None. A D1 load still running is waited for (never left loading into a
    folder about to be removed), except after Ctrl-C: then d1ops's exit ends it (lifeline.py)."""
    problem = _files_problem(folder, manifest)
    if problem is not None:
        if scratch is not None:
            scratch.wait()
        return problem
    progress.step(f"Verifying {folder.name} ({level})")
    with work_dir("verify") as tmp:
        if level == "full" and scratch is None and format_of(manifest) == SQL:
            scratch = start_scratch_load(project, folder / SQL_DUMP, Path(tmp), backup_parents(manifest))
        db = loaded or Path(tmp) / "verify.sqlite"
        problem = _sqlite_problem(folder, manifest, loaded, db)
        if problem is not None or level != "full":
            if scratch is not None:
                scratch.wait()
            return problem
        if scratch is None:  # JSON backups: D1 SQL written from the loaded SQLite
            parents = backup_parents(manifest)
            scratch = ScratchLoad(
                project, Path(tmp), lambda out: parents.around(out, lambda body: dump_sqlite(db, body))
            )
        return scratch.result(expected_rows(manifest))


def _files_problem(folder: Path, manifest: dict[str, Any]) -> str | None:
    if not manifest["files"]:
        return "the manifest lists no files: it vouches for nothing"
    unlisted = sorted(set(_required_files(manifest)) - {str(f.get("name")) for f in manifest["files"]})
    if unlisted:
        return f"the manifest does not vouch for {', '.join(unlisted)} (no checksum listed)"
    problems = checksum_problems(folder, manifest)
    return "; ".join(problems) if problems else None


def quick_check(folder: Path, manifest: dict[str, Any], db: Path) -> str | None:
    """Why a backup fails the quick check, or None: what `backups verify` and a restore check (one function).

    The manifest lists the files it vouches for and every checksum matches; the backup loads into SQLite as D1
    loads it (foreign keys on, one transaction; the tables a backup of some tables references stood in for,
    see dumpfile.AbsentParents); and it holds the rows its manifest lists. `db` is left holding the backup.
    """
    return _files_problem(folder, manifest) or _sqlite_problem(folder, manifest, None, db)


def _sqlite_problem(folder: Path, manifest: dict[str, Any], loaded: Path | None, db: Path) -> str | None:
    """The quick check's load: the backup loads into SQLite as D1 loads it and holds the rows its manifest
    lists (`loaded`: the run that wrote it loaded it so already)."""
    if loaded is None:
        try:
            load_backup(folder, manifest, db, foreign_keys=True)
        except (sqlite3.Error, ValueError, OSError, UnicodeDecodeError) as exc:
            return f"the dump does not load as D1 loads it (into SQLite, foreign keys on): {exc}"
    expected = expected_rows(manifest)
    conn = sqlite3.connect(db)
    try:
        counted = {}
        for name in expected:
            try:
                counted[name] = conn.execute(f"SELECT count(*) FROM {ident(name)}").fetchone()[0]
            except sqlite3.Error as exc:
                return f"table {name} is not in the dump ({exc})"
    finally:
        conn.close()
    wrong = [f"{t}: {counted[t]} rows in the dump, {n} in the manifest" for t, n in expected.items() if counted[t] != n]
    return ("row counts differ: " + "; ".join(wrong)) if wrong else None


def expected_rows(manifest: dict[str, Any]) -> dict[str, int]:
    """Rows per table the manifest vouches for: ordinary tables, and FTS5 tables that hold content."""
    expected = {str(t["name"]): int(t["rows"]) for t in manifest["tables"]}
    for virtual in manifest.get("virtual_tables") or []:
        if virtual.get("rows") is not None:
            expected[str(virtual["name"])] = int(virtual["rows"])
    return expected


def _required_files(manifest: dict[str, Any]) -> list[str]:
    if format_of(manifest) == SQL:
        return [SQL_DUMP]
    virtual = [v["name"] for v in manifest.get("virtual_tables") or [] if v.get("content") == "rows"]
    return [f"{name}.json" for name in [*(t["name"] for t in manifest["tables"]), *virtual]]


def _transient(exc: WranglerError) -> bool:
    """A failure that says nothing about the dump: contention, a timeout, wrangler not starting."""
    return isinstance(exc, ContentionError) or exc.wrangler_exit_code is None
