"""restore: make an environment's tables equal a backup again, or (remote) go back to a Time Travel bookmark.

The backup is checked by verification's quick check (checksums, a load into SQLite as D1 loads it, its row
counts) before the run starts: a refusal there touches nothing and files nothing. Then the run: lock → read the
schema → plan → confirm → a verified pre-restore backup of what is about to be replaced → one atomic
`execute --file` batch that also releases the lock → report.

- A whole-database backup replaces every ordinary table, `d1_migrations` and `d1ops_migrations` included:
  drop them all, replay the dump (`restore_database.py`).
- A backup of some tables is restored in place (`restore_tables.py`): rows the backup lacks are deleted by
  key, every backup row upserted. Its plan reads the live rows (the export the pre-restore backup keeps), counts
  what each table gains, changes and loses and the rows of other tables those deletes would change, and
  refuses unless --allow-cascade, before the confirmation, which shows those counts.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from d1ops.backups.catalog import of_database, read_manifest
from d1ops.backups.verify import quick_check
from d1ops.errors import D1OpsError, OutcomeUnknown, RestoreFailed, UsageError, WranglerError
from d1ops.project.config import Environment
from d1ops.project.project import Project
from d1ops.run.apply import Batch, send_batch
from d1ops.run.lease import release_stale_lock_sql
from d1ops.run.report import RunReport
from d1ops.run.sequence import Change, Confirm, Run, run_change
from d1ops.run.tracking import LOCK_DDL
from d1ops.sql.tablediff import Dependent, TableRestore
from d1ops.sql.text import StatementTooLarge
from d1ops.support.render import text_table
from d1ops.wrangler.reads import read_schema


@dataclass
class RestoreResult:
    """What a restore adds to its run report (shown at the report's top level)."""

    mode: str  # tables | database | bookmark
    source: str | None = None
    source_env: str | None = None
    source_taken_at: str | None = None
    tables: list[TableRestore] = field(default_factory=list)
    dropped_tables: list[str] = field(default_factory=list)
    dependents: list[Dependent] = field(default_factory=list)
    pre_restore_backup: str | None = None
    bookmark: str | None = None  # the Time Travel bookmark restored to (mode bookmark)
    bookmark_before: str | None = None  # remote: the bookmark of the state before the restore (to undo it)


class RestoreChange(Change):
    """What the restore of a backup and of a bookmark share."""

    command = "restore"
    backup_label = "pre-restore"

    def __init__(self, project: Project, env: Environment, result: RestoreResult) -> None:
        super().__init__(env)
        self.project = project
        self.result = result

    def prepare(self, run: Run) -> None:
        run.report.details = self.result  # the restore's own fields, at the top level of its report

    def untouched(self) -> str:
        return f"Nothing was restored into {self.env.name}."

    def backup_policy(self) -> str:
        return "required"  # whatever the environment's policy: a restore always keeps a way back

    def record_safety(self, run: Run) -> None:
        backup = run.safety_backup
        self.result.pre_restore_backup = str(backup.path) if backup else None
        self.result.bookmark_before = self.result.bookmark_before or run.report.bookmark

    def run_batch(self, run: Run, batch: Batch) -> None:
        """Send the batch (one atomic `execute --file`); if it failed, say the database is as it was."""
        try:
            send_batch(run, batch)
        except StatementTooLarge as exc:  # found while writing the batch: nothing was sent to D1
            source = getattr(self, "folder", "the backup")
            raise RestoreFailed(
                f"Cannot restore {self.env.name} from {source}: {exc.message} Nothing was restored."
            ) from None
        except OutcomeUnknown:
            raise
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
            pre = self.result.pre_restore_backup
            kept = f" The pre-restore backup is {pre}." if pre else ""
            raise RestoreFailed(
                f"The restore of {self.env.name} failed: {exc.detail}\nD1 runs the restore as one atomic batch: "
                f"nothing of it was applied, {self.env.name} is as it was.{kept}{hint}"
            ) from exc

    def read_back(self, run: Run, cause: OutcomeUnknown) -> D1OpsError:
        """The restore's batch did not answer (a dropped connection): say so, with the ways back, not only in the
        report (the report is where nobody looks in that moment)."""
        name, result = self.env.name, self.result
        undo = [f"`d1ops restore {result.pre_restore_backup} --env {name}` (the verified pre-restore backup)"]
        undo = undo if result.pre_restore_backup else []
        if result.bookmark_before:
            undo.append(f"`d1ops restore --bookmark {result.bookmark_before} --env {name}` (Time Travel)")
        ways = ("\nTo undo it if it was applied: " + ", or ".join(undo) + ".") if undo else ""
        return RestoreFailed(
            f"The restore of {name} did not finish ({cause.detail}): whether it was applied is unknown (D1 applies "
            f"the batch whole or not at all), and it was not retried. Check {name} (`d1ops execute {name} "
            f"--command ...`, `d1ops status {name}`); `d1ops unlock {name}` if the lock is still held.{ways}"
        )

    def taken(self) -> str:
        when = f" at {self.result.source_taken_at}" if self.result.source_taken_at else ""
        return f" (taken from {self.result.source_env}{when})" if self.result.source_env else ""


class BackupRestore(RestoreChange):
    """The restore of a backup folder: its manifest, and the backup loaded into SQLite (checked before the run)."""

    def __init__(
        self,
        project: Project,
        env: Environment,
        result: RestoreResult,
        folder: Path,
        manifest: dict[str, Any],
        source_db: Path,
    ) -> None:
        super().__init__(project, env, result)
        self.folder, self.manifest, self.source_db = folder, manifest, source_db

    def read(self, run: Run) -> None:
        """The lock, the state and the schema in one process (a dry run reads the schema alone)."""
        if run.dry_run:
            self.schema = read_schema(run.wrangler, self.env)
            return
        run.lock_and_read(with_schema=True)
        assert run.schema is not None
        self.schema = run.schema


def check_backup(folder: Path, manifest: dict[str, Any], env: Environment, db: Path, *, from_other_env: bool) -> None:
    """Refuse a backup of another database or environment, or one that fails verification's quick check (the
    check `backups verify` runs); `db` is left holding the backup."""
    source_db = str(manifest.get("database") or "")
    if env.database and not of_database(manifest, env):
        raise UsageError(
            f"Backup {folder.name} is a backup of database {source_db}, not {env.database}: refusing to restore it "
            f"into {env.database}. Restore it with `--db {source_db}`, or pick a backup of {env.database} from "
            f"`d1ops backups list --db {env.database}`."
        )
    source_env = str(manifest.get("env") or "")
    if source_env != env.name and not from_other_env:
        raise UsageError(
            f"Backup {folder.name} was taken from {source_env or 'an unknown environment'}, not {env.name}. "
            f"Restoring it replaces rows of {env.name} with rows of {source_env or 'that environment'}: "
            "if that is what you want, pass --from-other-env."
        )
    problem = quick_check(folder, manifest, db)
    if problem is not None:
        raise RestoreFailed(
            f"Backup {folder} fails verification: {problem}. Nothing was touched. "
            f"Restore another backup (`d1ops backups list {source_env or env.name}`)."
        )


def fleet_restore_hint(env: Environment, folder: Path, manifest: dict[str, Any]) -> str:
    """Why a backup cannot be restored into a fleet environment, and the two ways to restore that database."""
    name, bookmark = manifest.get("database_name") or "that database", manifest.get("bookmark")
    back = (
        f"`npx wrangler d1 time-travel restore {name} --bookmark {bookmark}` (the bookmark taken just before the "
        "backup: the same rows), or "
        if bookmark
        else ""
    )
    return (
        f"{env.name} is a fleet: a restore works on one database. Backup {folder.name} is of {name}. Restore it with "
        f"{back}an environment for {name} alone (target: remote, its own d1_databases entry) and "
        f"`d1ops restore {folder.name} --env THAT_ENV --from-other-env`."
    )


def restore_backup(
    project: Project,
    folder: Path,
    env_name: str,
    *,
    from_other_env: bool,
    allow_cascade: bool,
    dry_run: bool,
    confirm: Confirm,
) -> RunReport:
    """Make `env_name`'s tables equal the backup in `folder` (see the module docstring for how).

    Nothing is touched unless the backup's checksums match and it loads into SQLite. With `dry_run`, the plan
    is computed (rows to delete, dependent rows) without a lock, a backup or a change.
    """
    from d1ops.changes.restore_database import DatabaseRestore
    from d1ops.changes.restore_tables import TablesRestore

    env = project.config.env(env_name)
    manifest = read_manifest(folder)
    if env.is_fleet:
        raise UsageError(fleet_restore_hint(env, folder, manifest))
    with tempfile.TemporaryDirectory(prefix="d1ops-restore-") as tmp:
        source_db = Path(tmp) / "backup.sqlite"
        check_backup(folder, manifest, env, source_db, from_other_env=from_other_env)
        result = RestoreResult(
            mode="database" if manifest.get("whole_database") else "tables",
            source=str(folder),
            source_env=str(manifest.get("env") or "") or None,
            source_taken_at=manifest.get("started_at"),
        )
        change: RestoreChange
        if result.mode == "database":
            change = DatabaseRestore(project, env, result, folder, manifest, source_db)
        else:
            change = TablesRestore(project, env, result, folder, manifest, source_db, allow_cascade=allow_cascade)
        return run_change(project, change, dry_run=dry_run, confirm=confirm)


# -- Time Travel ----------------------------------------------------------------------------------------------
class BookmarkRestore(RestoreChange):
    """Remote only: restore the whole database to a Time Travel bookmark, then release the lease(s) that must go.

    The lock table goes back in time with everything else: our own lease vanishes, and the table holds whatever
    lease was live at the bookmark (usually that of the run that recorded the bookmark, long finished). That
    row is stale: while we held our lease, no other run could take one, so any lease acquired before ours
    came back from the past and is deleted. A lease acquired after ours belongs to a run that started after
    the restore (our lease was gone with it): it is left alone, as is any other run's lease.
    """

    def backup_policy(self) -> str:
        return "skip"  # the way back is the bookmark Time Travel answers with

    def wants_bookmark(self) -> bool:
        return False

    def describe(self) -> str:
        name = self.env.binding.database_name or self.env.binding.binding
        return (
            f"Restore the whole database of {self.env.name} ({name}) to Time Travel bookmark {self.result.bookmark}: "
            "every change made after it is undone, d1_migrations included."
        )

    def apply(self, run: Run) -> None:
        bookmark = self.result.bookmark
        try:
            answer = run.wrangler.time_travel_restore(self.env, bookmark=bookmark)
        except OutcomeUnknown:
            raise
        except WranglerError as exc:
            raise RestoreFailed(
                f"Time Travel restore of {self.env.name} to {bookmark} failed: {exc.detail}\n{self.env.name} was not "
                "restored. Check the bookmark (`npx wrangler d1 time-travel info`) and retry."
            ) from exc
        if isinstance(answer, dict):
            self.result.bookmark_before = str(answer.get("previous_bookmark") or "") or None
        run.applied()  # our lease went back in time with the database
        since = run.state.lock_acquired_at if run.state else None
        try:
            sql = release_stale_lock_sql(run.owner, since or "")
            run.wrangler.execute(self.env, command=f"{LOCK_DDL}\n{sql}")
        except D1OpsError as exc:
            run.report.warnings.append(
                f"{self.env.name} was restored, but the lock table went back in time too and may hold the lease of a "
                f"run of back then ({exc.message}). Run `d1ops unlock {self.env.name}`."
            )

    def read_back(self, run: Run, cause: OutcomeUnknown) -> D1OpsError:
        return RestoreFailed(
            f"The Time Travel restore of {self.env.name} to {self.result.bookmark} did not finish ({cause.detail}): "
            "whether it was done is unknown, and it was not retried. See `npx wrangler d1 time-travel info` "
            f"(the current bookmark) and `d1ops status {self.env.name}`; `d1ops unlock {self.env.name}` if the "
            "lock is still held."
        )


def restore_bookmark(project: Project, env_name: str, bookmark: str, *, confirm: Confirm) -> RunReport:
    env = project.config.env(env_name)
    if not env.is_remote:
        raise UsageError(
            f"Time Travel is remote-only: {env.name} is a local database. Restore a backup folder instead: "
            f"`d1ops restore <backup> --env {env.name}` (see `d1ops backups list {env.name}`)."
        )
    change = BookmarkRestore(project, env, RestoreResult(mode="bookmark", bookmark=bookmark))
    return run_change(project, change, confirm=confirm)


# -- rendering --------------------------------------------------------------------------------------------------
def describe_restore(report: RunReport) -> str:
    """The human summary of a restore's report."""
    d = report.to_dict()
    if d["mode"] == "bookmark":
        lines = [f"Restored {report.env} to Time Travel bookmark {d['bookmark']}."]
    else:
        verb = "Would restore" if report.dry_run else "Restored"
        how = "the whole database" if d["mode"] == "database" else f"{len(d['tables'])} table(s), in place,"
        taken = f", taken from {d['source_env']} at {d['source_taken_at']}" if d["source_env"] else ""
        lines = [f"{verb} {how} of {report.env} from {d['source']}{taken}:"]
        lines.append(rows_table(d["tables"]))
        if d["dropped_tables"]:
            dropped = "would be dropped" if report.dry_run else "dropped"
            lines.append(f"Tables not in the backup, {dropped}: {', '.join(d['dropped_tables'])}")
    if d["dependents"]:
        head = "would change" if report.dry_run else "changed"
        lines.append(f"Rows of tables outside the backup that the restore {head} (foreign keys):")
        lines += [f"  {Dependent(**{**x, 'columns': tuple(x['columns'])}).describe()}" for x in d["dependents"]]
    if d["pre_restore_backup"]:
        lines.append(f"Pre-restore backup: {d['pre_restore_backup']}")
        lines.append(f"  to undo: d1ops restore {d['pre_restore_backup']} --env {report.env}")
    elif report.dry_run:
        lines.append("A verified pre-restore backup would be taken first.")
    if d["bookmark_before"]:
        lines.append(f"Time Travel bookmark before the restore: {d['bookmark_before']}")
        lines.append(f"  to undo: d1ops restore --bookmark {d['bookmark_before']} --env {report.env}")
    lines.append(f"{report.wrangler_processes} wrangler process(es).")
    lines += [f"warning: {w}" for w in report.warnings]
    return "\n".join(lines)


def rows_table(tables: list[dict[str, Any]]) -> str:
    """Each restored table's rows: after the restore, before it, and those it gains, changes and loses (the
    confirmation, the dry run and the report show this one table)."""
    rows = [
        [t["name"], t["rows"], _cell(t["rows_before"]), _cell(t["inserted"]), _cell(t["updated"])]
        + [_cell(t["deleted"])]
        + (["recreated"] if t["recreated"] else [])
        for t in tables
    ]
    headers = ["TABLE", "ROWS", "BEFORE", "INSERTED", "UPDATED", "DELETED"]
    return text_table(headers, rows, rule=False, indent="  ")


def _cell(value: int | None) -> str:
    return "-" if value is None else str(value)
