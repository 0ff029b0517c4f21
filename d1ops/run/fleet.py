"""A fleet: one schema on many databases of the account, migrated through the D1 REST API (no wrangler process).

Per database, the same run as everywhere else, in 3 API calls for a change (2 when it is up to date):
1. one query takes the lease and reads state and schema (tracking.lock_and_read_state's statements, sent to the
   API instead of wrangler); the checksum and schema drift checks (a drifted database is refused unless
   --accept-drift) and the plan follow;
2. the Time Travel bookmark of the database before the change (its safety net); with --backup, then an export
   through the API written as a normal verified backup of that database (`fleet_backup.py`, +3 calls);
3. one atomic batch (`fleet_batch.py`): lease guard, the row guard's counts, each migration with its tracking rows,
   the row guard's check, release of the lease: the same pieces, in the same order, as `run/apply.py` sends. A
   batch over D1's 100,000-byte limit for one request goes through the import flow instead (+3 calls).
A failed batch changed nothing (D1 runs it as one transaction); the lease is then released in one more call.
An answer lost on the way is read back (the state says what the batch did); nothing is ever sent twice.

A run journal (backups/<env>/fleet/journal[-shard-K-of-N].jsonl, append-only JSON lines) records the run's lease
owner and each database started and finished. A run killed at any point is finished by running the same command
again: it takes the same owner (so the leases the dead run held are its own), keeps what the journal says is done,
and re-reads every other database, whose tracking rows say what is applied. A lock on the journal stops a second
run of the same shard while one is alive.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from d1ops.changes.migrate import find_drift, plan_migrations
from d1ops.errors import D1OpsError, GateRefused, LockHeld, WranglerError
from d1ops.project.config import Environment
from d1ops.project.migrations import MigrationFile, schema_drift
from d1ops.project.project import Project
from d1ops.run.apply import row_guard_for
from d1ops.run.fleet_backup import FleetBackups
from d1ops.run.fleet_batch import failing_migration, fleet_batch, guard_migration, send_fleet_batch
from d1ops.run.fleet_journal import Journal, NullJournal
from d1ops.run.fleet_report import Confirm, DbOutcome, FleetFailed, FleetProgress, FleetReport, Progress
from d1ops.run.fleet_targets import ApiSeam, Target, parse_shard, resolve_fleet, select
from d1ops.run.lease import lock_and_read_state, new_lock_owner, release_lock_sql
from d1ops.run.tracking import LOCK_TABLE, EnvState, actor, read_state
from d1ops.sql.drift import DriftItem
from d1ops.sql.rowguard import RowGuard, guard_failure, row_guard_warning
from d1ops.sql.schema import DatabaseSchema
from d1ops.sql.text import sql_for_batch
from d1ops.support.files import unique_stamp, utc_now, write_private

if TYPE_CHECKING:
    from d1ops.api.client import D1Api

__all__ = ["FleetFailed", "FleetOptions", "FleetReport", "fleet_batch", "migrate_fleet", "resume_command"]


# ---------------------------------------------------------------------------------------------- the run


@dataclass
class FleetOptions:
    only: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    canary: int = 0
    concurrency: int = 16
    keep_going: bool = False
    backup: bool = False
    shard: str | None = None
    dry_run: bool = False
    accept_drift: bool = False


class FleetRun:
    def __init__(self, project: Project, env: Environment, api: D1Api, opts: FleetOptions, owner: str) -> None:
        self.project, self.env, self.api, self.opts, self.owner = project, env, api, opts, owner
        self.migrations = project.migrations()
        self.migrations.raise_for_errors()
        self.files = self.migrations.files
        self.sqls = {m.name: sql_for_batch(m.read_sql()) for m in self.files}
        self.allowed: set[str] | None = None
        self.who = actor()
        self.stop = threading.Event()
        self.journal: Journal | NullJournal = NullJournal()
        self.started_applies: dict[str, dict[str, Any]] = {}  # a resumed run's journal: name → its "apply" event
        # Tenants share their schema: the drift verdict and the row guard are worked out once per distinct
        # (history, schema) and (schema, plan), not once per database.
        self._memo: dict[tuple[Any, ...], Any] = {}
        self._memo_lock = threading.Lock()
        self.backups: FleetBackups | None = None  # --backup: each database's export before its apply

    def _memoised(self, key: tuple[Any, ...], make: Callable[[], Any]) -> Any:
        with self._memo_lock:
            if key in self._memo:
                return self._memo[key]
        value = make()
        with self._memo_lock:
            return self._memo.setdefault(key, value)

    def schema_drift_of(self, state: EnvState, schema: DatabaseSchema | None) -> list[DriftItem] | None:
        """The objects unlike what the database's applied migrations make (the single run's `schema_drift`)."""
        applied = list(state.applied)
        cache = self.project.config.schema_cache
        key = ("drift", tuple(applied), schema)
        return self._memoised(key, lambda: schema_drift(self.migrations, applied, schema, cache))  # type: ignore[no-any-return]

    def row_guard_of(self, schema: DatabaseSchema | None, changes: list[tuple[str, str]]) -> RowGuard | None:
        key = ("guard", schema, tuple(changes))
        return self._memoised(key, lambda: row_guard_for(self.env, schema, changes))  # type: ignore[no-any-return]

    def migrate_one(self, target: Target) -> DbOutcome:
        journal = self.journal
        started = time.monotonic()
        out = DbOutcome(target.name, target.id, "failed")
        if self.stop.is_set():
            out.result, out.error = "skipped", "not started: the run stopped after a failure (use --keep-going)"
            return out
        journal.write({"event": "start", "name": target.name, "id": target.id})
        try:
            self._migrate(target, out)
        except D1OpsError as exc:
            out.result, out.error = "failed", exc.message
        out.ms = int((time.monotonic() - started) * 1000)
        journal.write({"event": "done", **out.to_dict()})
        if out.result == "failed" and not self.opts.keep_going:
            self.stop.set()
        return out

    def _migrate(self, target: Target, out: DbOutcome) -> None:
        from d1ops.api.client import ApiError, ApiOutcomeUnknown

        seam = ApiSeam(self.api, target)
        env = replace(self.env, name=target.name)
        try:
            if self.opts.dry_run:  # a dry run only reads: no lease
                state = read_state(seam, env, with_schema=True)  # type: ignore[arg-type]
                schema = state.schema
            else:
                state, schema = lock_and_read_state(seam, env, self.owner, self.files, with_schema=True)  # type: ignore[arg-type]
        except WranglerError as exc:
            raise D1OpsError(f"could not take the lease and read the state: {exc.detail}") from exc
        held = not self.opts.dry_run
        try:
            drift = find_drift(self.migrations, {target.name: state})
            if drift:
                raise GateRefused("checksum drift: " + "; ".join(d.describe() for d in drift))
            drifted = self.schema_drift_of(state, schema)
            if drifted:
                out.drift = [d.describe() for d in drifted]
                if not self.opts.accept_drift:
                    raise GateRefused(
                        "drifted: " + "; ".join(out.drift) + f". Nothing was changed on {target.name}: put the "
                        "hand-made change into a migration (or undo it), or run again with --accept-drift."
                    )
            plan = plan_migrations(env, state, self.migrations, self.allowed)
            if not plan.to_apply:
                out.result = "up-to-date"
                before = self.started_applies.get(target.name)
                if before and all(n in state.applied for n in before["plan"]):  # the killed run's batch went through
                    out.result, out.applied, out.bookmark = "applied", list(before["plan"]), before.get("bookmark")
                return
            if self.opts.dry_run:
                out.result, out.applied = "skipped", [m.name for m in plan.to_apply]
                out.error = "dry run: would apply these"
                return
            try:
                out.bookmark = self.api.bookmark(target.id) or None
            except ApiError as exc:
                raise D1OpsError(f"no Time Travel bookmark ({exc.detail}): nothing was applied") from exc
            if self.backups is not None:
                out.backup = self.backups.take(target, state, schema, out.bookmark)  # refused: nothing applied
            sqls = [self.sqls[m.name] for m in plan.to_apply]
            guard = self.row_guard_of(schema, [(m.name, sql) for m, sql in zip(plan.to_apply, sqls, strict=True)])
            text = fleet_batch(self.owner, plan.to_apply, sqls, self.who, guard)
            plan_names = [m.name for m in plan.to_apply]
            self.journal.write({"event": "apply", "name": target.name, "bookmark": out.bookmark, "plan": plan_names})
            try:
                out.sent_by = send_fleet_batch(self.api, target, text)
                held = False
            except ApiOutcomeUnknown as exc:
                held = False  # the batch releases the lease itself, if it ran
                self._read_back(seam, env, target, plan.to_apply, out, exc.detail)
                return
            except ApiError as exc:
                refused = guard_failure(exc.detail) if guard else None
                if refused is not None:  # the row guard's own error: the batch was rolled back, lease still ours
                    out.failed_migration = guard_migration(guard, plan.to_apply)
                    raise D1OpsError(refused) from exc
                if self._holder(target) != self.owner:  # read from the lock row, not from the error's text
                    held = False
                    raise LockHeld("this run no longer held the lease: the batch was refused, nothing applied") from exc
                name = failing_migration(schema, plan.to_apply, sqls)
                if name is None and len(plan.to_apply) == 1:
                    name = plan.to_apply[0].name
                out.failed_migration = name
                what = f"migration {name} failed" if name else f"the batch of {len(plan.to_apply)} migrations failed"
                raise D1OpsError(f"{what}: {exc.detail}. Nothing was applied to {target.name}.") from exc
            out.result, out.applied = "applied", [m.name for m in plan.to_apply]
        finally:
            if held:
                self._release(target)

    def _holder(self, target: Target) -> str | None:
        """Who holds the lease of a database now (after a failed batch: was it ours?). One API call."""
        from d1ops.api.client import ApiError

        try:
            rows = self.api.query(target.id, f"SELECT owner FROM {LOCK_TABLE} WHERE id = 1;", what="lease read")
        except ApiError:
            return self.owner  # cannot tell: the batch's own failure message stands
        found = rows[0].results if rows else []
        return str(found[0]["owner"]) if found and found[0].get("owner") else None

    def _release(self, target: Target) -> None:
        from d1ops.api.client import ApiError

        try:
            self.api.query(target.id, release_lock_sql(self.owner), what=f"release on {target.name}")
        except ApiError:
            pass  # the lease expires; a rerun of this command takes it back (same owner)

    def _read_back(
        self, seam: ApiSeam, env: Environment, target: Target, pending: list[MigrationFile], out: DbOutcome, why: str
    ) -> None:
        state: EnvState | None = None
        for attempt in range(3):
            try:
                state = read_state(seam, env)  # type: ignore[arg-type]
                break
            except WranglerError:
                time.sleep(0.5 * (attempt + 1))
        if state is None:
            raise D1OpsError(
                f"the apply got no answer ({why}) and the state could not be read back: rerun the same command; "
                "it reads the database again and applies only what is missing"
            )
        names = [m.name for m in pending]
        if all(n in state.applied for n in names):
            out.result, out.applied = "applied", names
            return
        if state.lock_owner == self.owner:
            self._release(target)
        raise D1OpsError(f"the apply got no answer ({why}); read back: nothing of it was applied")


def migrate_fleet(
    project: Project,
    env: Environment,
    opts: FleetOptions,
    *,
    confirm: Confirm | None = None,
    on_progress: Progress | None = None,
    api: D1Api | None = None,
) -> FleetReport:
    """Migrate every database of a fleet environment; raises FleetFailed (carrying the report) on any failure."""
    from d1ops.api.client import D1Api

    api = api or D1Api.from_env()
    shard = parse_shard(opts.shard)
    report = FleetReport(env=env.name, databases=[], shard=opts.shard)
    begun = time.monotonic()
    calls0 = api.calls
    targets = select(resolve_fleet(api, env, project.config.root), opts.only, opts.exclude, shard)
    owner, done = new_lock_owner(), {}
    run = FleetRun(project, env, api, opts, owner)
    off = row_guard_warning(env)
    if off:
        report.warnings.append(off)
    if opts.backup and not opts.dry_run:
        run.backups = FleetBackups(project, env, api)
    if env.protected and not opts.dry_run:
        if confirm is None:
            raise GateRefused(f"{env.name} is protected and no confirmation was given. Use --yes in CI.")
        confirm(env, f"migrate the fleet {env.name}: {len(targets)} databases")
    run.allowed = _gate(project, env, run)
    journal = Journal(project.config.env_dir(env.name) / "fleet", shard) if not opts.dry_run else None
    if journal and journal.previous:
        first = next((e for e in journal.previous if e.get("event") == "run"), {})
        owner = str(first.get("owner") or owner)
        report.resumed = str(first.get("run") or "")
        done = {
            e["name"]: DbOutcome(**{k: v for k, v in e.items() if k != "event"})
            for e in journal.previous
            if e.get("event") == "done" and e.get("result") in ("applied", "up-to-date")
        }
    run.owner = owner
    if journal:
        run.journal = journal
        run.started_applies = {e["name"]: e for e in journal.previous if e.get("event") == "apply"}
    if journal and not journal.previous:
        journal.write({"event": "run", "run": owner.split()[-1], "owner": owner, "at": utc_now(), "pid": os.getpid()})
    elif journal:
        journal.write({"event": "resume", "at": utc_now(), "pid": os.getpid()})
    outcomes: dict[str, DbOutcome] = {}
    todo = [t for t in targets if t.name not in done]
    progress = FleetProgress(len(done), len(targets), 0, time.monotonic())
    lock = threading.Lock()

    def task(target: Target) -> None:
        outcome = run.migrate_one(target)
        with lock:
            outcomes[target.name] = outcome
            progress.done += 1
            progress.failures += outcome.result == "failed"
            if on_progress:
                on_progress(progress)

    try:
        canary, rest = todo[: opts.canary], todo[opts.canary :]
        for group in (canary, rest):
            if not group:
                continue
            pool = ThreadPoolExecutor(max_workers=max(1, min(opts.concurrency, len(group))))
            try:
                list(pool.map(task, group))
            except BaseException:  # Ctrl-C: no new starts; the databases under way finish their one call
                run.stop.set()
                pool.shutdown(wait=True, cancel_futures=True)
                raise
            pool.shutdown()
            if group is canary and any(outcomes[t.name].result == "failed" for t in canary):
                run.stop.set()
        for t in rest if run.stop.is_set() else ():
            outcomes.setdefault(t.name, DbOutcome(t.name, t.id, "skipped", error="not started: the canary failed"))
    except BaseException:
        report.interrupted = True
        run.stop.set()
        raise
    finally:
        report.databases = [
            done.get(t.name)
            or outcomes.get(t.name)
            or DbOutcome(t.name, t.id, "skipped", error="not started: interrupted")
            for t in targets
        ]
        report.api_calls, report.seconds = api.calls - calls0, time.monotonic() - begun
        if journal:
            if report.interrupted:
                report.journal = str(journal.path)
                journal.close()
            else:
                journal.write({"event": "end", "at": utc_now(), "summary": report.summary()})
                report.journal = str(journal.finish())
            report.report_path = str(_write_report(project, env, report))
    failures = report.failed
    if failures or run.stop.is_set():
        names = ", ".join(f"{d.name} ({d.failed_migration})" if d.failed_migration else d.name for d in failures[:20])
        report.error = (
            f"{len(failures)} of {len(targets)} databases of {env.name} failed: {names}. Each failed database is as "
            f"it was (nothing half-applied). Fix the cause and run the same command again."
        )
        raise FleetFailed(report.error, report)
    return report


def _gate(project: Project, env: Environment, run: FleetRun) -> set[str] | None:
    """The promotion order: a fleet gets only what the environment before it has applied (with the same
    checksum); a file the predecessor lacks refuses the run before any database is touched."""
    previous = project.config.predecessor(env)
    if previous is None or previous.is_fleet:
        return None
    before = read_state(project.wrangler, previous)
    missing = [
        m.name
        for m in run.files
        if m.name not in env.skip
        and (m.name not in before.applied or before.applied[m.name].checksum not in (None, m.checksum))
    ]
    if missing:
        raise GateRefused(
            f"Promotion order is {' → '.join(project.config.env_names)}: refusing to migrate the fleet {env.name}.\n"
            + "\n".join(f"  {n} is not applied to {previous.name}" for n in missing)
            + f"\nApply it to {previous.name} first: `d1ops migrate {previous.name}`."
        )
    return set(before.applied)


def _write_report(project: Project, env: Environment, report: FleetReport) -> Path:
    path = project.config.env_dir(env.name) / "reports" / f"{unique_stamp()}-fleet-migrate.json"
    try:
        write_private(path, json.dumps(report.to_dict(), indent=1) + "\n")
    except OSError:
        pass
    return path


def resume_command(env: str, opts: FleetOptions) -> str:
    parts = ["d1ops", "migrate", env]
    parts += [f"--only {o}" for o in opts.only] + [f"--except {e}" for e in opts.exclude]
    if opts.shard:
        parts.append(f"--shard {opts.shard}")
    if opts.keep_going:
        parts.append("--keep-going")
    parts += ["--backup"] * opts.backup + ["--accept-drift"] * opts.accept_drift
    return " ".join(parts)
