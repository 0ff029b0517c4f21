"""Verification: is a backup what its manifest says, and does it load?

- quick: every file's sha256 matches the manifest, the dump stream-loads into a temporary SQLite database,
  and every table holds the rows the manifest lists.
- full: quick, then the dump is loaded into a scratch local D1 through wrangler and the rows counted there:
  the proof that D1 itself accepts it.

A re-verification that cannot finish (wrangler busy, a timeout) leaves the manifest as it was, and a `quick`
check never takes away a `full` that still holds.
"""

from __future__ import annotations

import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from d1ops import progress
from d1ops.catalog import checksum_problems, read_manifest, write_manifest
from d1ops.dumpfile import SQL_DUMP, dump_sqlite, load_backup, write_compact_dump
from d1ops.errors import BackupFailed, ContentionError, WranglerError
from d1ops.files import utc_now
from d1ops.project import Project
from d1ops.scratch import ScratchD1
from d1ops.sqltext import StatementTooLarge, ident

LEVELS = ("quick", "full")


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


def verify_backup(
    project: Project, folder: Path, *, level: str = "quick", record: bool = True, loaded: Path | None = None
) -> BackupResult:
    """Check a backup at `level`; with `record`, write the verdict into its manifest.

    `loaded`: the backup's dump already loaded into SQLite by the run that just wrote it (not loaded again).
    A check that could not finish raises BackupFailed and leaves the manifest untouched. A passing `quick`
    keeps a recorded `full`.
    """
    manifest = read_manifest(folder)
    try:
        problem = _problem(project, folder, manifest, level, loaded)
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
                f"Could not record the verification in {folder}/manifest.json ({exc.strerror or exc}); the "
                "manifest was left as it was. Free space and run `d1ops backups verify` again."
            ) from exc
    return BackupResult(folder, manifest, verified, reached if verified else None, problem)


def _problem(project: Project, folder: Path, manifest: dict[str, Any], level: str, loaded: Path | None) -> str | None:
    if not manifest["files"]:
        return "the manifest lists no files: it vouches for nothing"
    unlisted = sorted(set(_required_files(manifest)) - {str(f.get("name")) for f in manifest["files"]})
    if unlisted:
        return f"the manifest does not vouch for {', '.join(unlisted)} (no checksum listed)"
    problems = checksum_problems(folder, manifest)
    if problems:
        return "; ".join(problems)
    expected = expected_rows(manifest)
    progress.step(f"Verifying {folder.name} ({level})")
    with tempfile.TemporaryDirectory(prefix="d1ops-verify-") as tmp:
        db = loaded or Path(tmp) / "verify.sqlite"
        if loaded is None:
            try:
                load_backup(folder, manifest, db)
            except (sqlite3.Error, ValueError, OSError, UnicodeDecodeError) as exc:
                return f"the dump does not load into SQLite: {exc}"
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
        wrong = [
            f"{t}: {counted[t]} rows in the dump, {n} in the manifest" for t, n in expected.items() if counted[t] != n
        ]
        if wrong:
            return "row counts differ: " + "; ".join(wrong)
        if level == "full":
            return _problem_in_scratch_d1(project, folder, manifest, expected, db, Path(tmp))
    return None


def expected_rows(manifest: dict[str, Any]) -> dict[str, int]:
    """Rows per table the manifest vouches for: ordinary tables, and FTS5 tables that hold content."""
    expected = {str(t["name"]): int(t["rows"]) for t in manifest["tables"]}
    for virtual in manifest.get("virtual_tables") or []:
        if virtual.get("rows") is not None:
            expected[str(virtual["name"])] = int(virtual["rows"])
    return expected


def _required_files(manifest: dict[str, Any]) -> list[str]:
    if manifest.get("format", "sql") == "sql":
        return [SQL_DUMP]
    virtual = [v["name"] for v in manifest.get("virtual_tables") or [] if v.get("content") == "rows"]
    return [f"{name}.json" for name in [*(t["name"] for t in manifest["tables"]), *virtual]]


def _problem_in_scratch_d1(
    project: Project, folder: Path, manifest: dict[str, Any], expected: dict[str, int], db: Path, tmp: Path
) -> str | None:
    """Load the backup into a scratch local D1 and count the rows there."""
    scratch = ScratchD1(project.wrangler, tmp / "scratch")
    source = tmp / "compact.sql"
    try:
        with source.open("w", encoding="utf-8") as out:
            if manifest.get("format", "sql") == "sql":
                write_compact_dump(folder / SQL_DUMP, out)
            else:
                dump_sqlite(db, out)
    except StatementTooLarge as exc:
        return f"D1 cannot load it: {exc.message}"
    try:
        scratch.run_file(source)
    except WranglerError as exc:
        if _transient(exc):
            raise _Unfinished(exc.detail) from None
        return f"a scratch local D1 rejects the dump: {exc.detail}"
    try:
        counted = scratch.count_rows(list(expected))
    except WranglerError as exc:
        raise _Unfinished(exc.detail) from None
    wrong = [
        f"{t}: {counted.get(t)} rows in D1, {n} in the manifest" for t, n in expected.items() if counted.get(t) != n
    ]
    return ("row counts differ in the scratch D1: " + "; ".join(wrong)) if wrong else None


def _transient(exc: WranglerError) -> bool:
    """A failure that says nothing about the dump: contention, a timeout, wrangler not starting."""
    return isinstance(exc, ContentionError) or exc.wrangler_exit_code is None
