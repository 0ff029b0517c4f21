"""The only path that changes a database.

Every migrate, promote, rollback, restore and execute runs the same sequence:
load config → lock env → read state → validate checksums → plan → gate (promotion order) → confirm
(protected env) → verified backup → apply → record → unlock → report.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from d1ops import __version__, backup
from d1ops.config import Environment
from d1ops.errors import (
    BackupFailed,
    D1OpsError,
    GateRefused,
    MigrationFailed,
    UsageError,
    WranglerError,
)
from d1ops.migrations import MigrationFile, MigrationSet, sql_for_batch
from d1ops.project import Project
from d1ops.tracking import (
    CHECKSUM_TABLE,
    EnvState,
    actor,
    lock_and_read_state,
    migration_batch,
    new_lock_owner,
    quote,
    read_state,
    release_lock,
    release_lock_sql,
)

Confirm = Callable[[Environment, str], None]
"""Called before a protected environment is changed, with a description of the change; raises to refuse."""


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


@dataclass(frozen=True)
class Drift:
    name: str
    file_checksum: str
    recorded: dict[str, str]  # env → checksum recorded there

    def describe(self) -> str:
        where = ", ".join(f"{env} has {sum_[:12]}" for env, sum_ in self.recorded.items())
        return f"{self.name}: file is {self.file_checksum[:12]}, but {where}"


@dataclass
class Plan:
    env: str
    to_apply: list[MigrationFile]
    skipped: list[str]
    already_applied: list[str]
    missing_files: list[str]
    warnings: list[str] = field(default_factory=list)

    def describe(self) -> str:
        if not self.to_apply:
            return f"Nothing to apply to {self.env}."
        lines = [f"Migrations to apply to {self.env}:"] + [f"  {m.name}" for m in self.to_apply]
        if self.skipped:
            lines.append(f"Skipped here (skip list): {', '.join(self.skipped)}")
        return "\n".join(lines)


@dataclass
class MigrationOutcome:
    name: str
    checksum: str
    result: str  # applied | failed | not run
    duration_ms: int | None = None
    error: str | None = None


@dataclass
class RunReport:
    """One JSON document per migrate/promote/rollback run: what was planned, backed up, applied."""

    command: str
    env: str
    target: str
    dry_run: bool
    started_at: str
    finished_at: str | None = None
    d1ops_version: str = __version__
    plan: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    backup: dict[str, Any] | None = None
    bookmark: str | None = None
    restore_command: str | None = None
    migrations: list[MigrationOutcome] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    wrangler_processes: int = 0
    exit_code: int = 0
    error: str | None = None
    report_path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RunFailed(D1OpsError):
    """A pipeline run failed; carries the report so the CLI can still print and file it."""

    def __init__(self, cause: D1OpsError, report: RunReport) -> None:
        super().__init__(cause.message)
        self.exit_code = cause.exit_code
        self.cause = cause
        self.report = report


# -- reading ----------------------------------------------------------------------------------------------------
def read_states(
    project: Project,
    envs: list[Environment],
    *,
    lock: tuple[Environment, str] | None = None,
    files: tuple[MigrationFile, ...] = (),
) -> dict[str, EnvState]:
    """Read several environments at once: one wrangler process each, at most as many at a time as cores.

    With `lock=(env, owner)` that environment is locked (and its tracking tables created) in the same call.
    """

    def read(env: Environment) -> EnvState:
        if lock and env.name == lock[0].name:
            return lock_and_read_state(project.wrangler, env, lock[1], files)
        return read_state(project.wrangler, env)

    if len(envs) == 1:
        return {envs[0].name: read(envs[0])}
    with ThreadPoolExecutor(max_workers=max(1, min(len(envs), os.cpu_count() or 1))) as pool:
        futures = {env.name: pool.submit(read, env) for env in envs}
        return {name: future.result() for name, future in futures.items()}


def find_drift(migrations: MigrationSet, states: dict[str, EnvState]) -> list[Drift]:
    """Files whose checksum differs from the one recorded in any environment where they were applied."""
    drifts = []
    for m in migrations.files:
        recorded = {
            env: state.applied[m.name].checksum
            for env, state in states.items()
            if m.name in state.applied and state.applied[m.name].checksum not in (None, m.checksum)
        }
        if recorded:
            drifts.append(Drift(m.name, m.checksum, recorded))  # type: ignore[arg-type]
    return drifts


def plan_migrations(env: Environment, state: EnvState, migrations: MigrationSet, only: set[str] | None = None) -> Plan:
    """Pending files in wrangler's order, minus the environment's skip list (and outside `only`, if given)."""
    on_disk = migrations.by_name()
    to_apply, skipped = [], []
    for m in migrations.files:
        if m.name in state.applied:
            continue
        if m.name in env.skip:
            skipped.append(m.name)
        elif only is None or m.name in only:
            to_apply.append(m)
    missing = [name for name in state.applied if name not in on_disk]
    warnings = [f"{name} is applied to {env.name} but its file is missing from the folder" for name in missing]
    return Plan(env.name, to_apply, skipped, list(state.applied), missing, warnings)


def gate_plan(project: Project, env: Environment, plan: Plan, states: dict[str, EnvState]) -> None:
    """Refuse a migration that its predecessor environment has not applied with the same checksum."""
    previous = project.config.predecessor(env)
    if previous is None or not plan.to_apply:
        return
    before = states[previous.name]
    refused = []
    for m in plan.to_apply:
        if m.name in previous.skip:
            continue
        applied = before.applied.get(m.name)
        if applied is None:
            refused.append(f"{m.name} is not applied to {previous.name}")
        elif applied.checksum not in (None, m.checksum):
            refused.append(f"{m.name} was applied to {previous.name} with checksum {applied.checksum[:12]}")
    if refused:
        raise GateRefused(
            f"Promotion order is {' → '.join(project.config.env_names)}: refusing to migrate {env.name}.\n"
            + "\n".join(f"  {line}" for line in refused)
            + f"\nApply it to {previous.name} first: `d1ops promote --to {previous.name}` "
            f"(or `d1ops migrate {previous.name}`)."
        )


def check_drift(drifts: list[Drift]) -> None:
    if drifts:
        raise GateRefused(
            "Applied migrations were edited after they were applied (checksum drift):\n"
            + "\n".join(f"  {d.describe()}" for d in drifts)
            + "\nNever edit an applied migration: restore the file from version control "
            "(git checkout -- FILE) and put the change in a new migration (`d1ops new NAME`)."
        )


# -- the pipeline ------------------------------------------------------------------------------------------------
def run_migrate(
    project: Project,
    env_name: str | None,
    *,
    dry_run: bool = False,
    confirm: Confirm | None = None,
    command: str = "migrate",
    only_from_predecessor: bool = False,
) -> RunReport:
    """Apply pending migrations to one environment, through every gate. Returns the run report.

    `only_from_predecessor` (promote) limits the plan to what the previous environment has applied.
    Raises RunFailed (carrying the report) on any failure.
    """
    config = project.config
    env = config.env(env_name)
    report = RunReport(command=command, env=env.name, target=env.target, dry_run=dry_run, started_at=utc_now())
    start_count = project.wrangler.processes
    owner = new_lock_owner()
    locked = False
    try:
        migrations = project.migrations()
        migrations.raise_for_errors()
        report.warnings += [f"{f.file}: {f.message}" for f in migrations.warnings]
        index = config.env_names.index(env.name)
        envs = list(config.environments[: index + 1])
        locked = not dry_run  # set first: a failure after the lock call must still release it
        states = read_states(project, envs, lock=None if dry_run else (env, owner), files=migrations.files)
        check_drift(find_drift(migrations, states))
        previous = config.predecessor(env)
        only = None
        if only_from_predecessor and previous is not None:
            only = set(states[previous.name].applied)
        plan = plan_migrations(env, states[env.name], migrations, only)
        report.plan = [m.name for m in plan.to_apply]
        report.skipped = plan.skipped
        report.warnings += plan.warnings
        gate_plan(project, env, plan, states)
        if dry_run or not plan.to_apply:
            if locked:
                release_lock(project.wrangler, env, owner)
                locked = False
            if dry_run and plan.to_apply and env.backup != "skip":
                report.backup = {
                    "would_take": f"{config.backups_dir.name}/{env.name}/<UTC time>-{command}",
                    "required": env.backup == "required",
                    "verify": env.verify,
                }
            return _finish(project, report, start_count, None)
        if env.protected:
            if confirm is None:
                raise GateRefused(f"{env.name} is protected and no confirmation was given. Use --yes in CI.")
            confirm(env, plan.describe())
        backup_folder = _backup_before_apply(project, env, states[env.name], report, command)
        _apply(project, env, plan, report, owner)
        locked = False  # the last migration's batch released the lock
        return _finish(project, report, start_count, backup_folder)
    except D1OpsError as exc:
        if locked:
            release_quietly(project, env, owner, report.warnings)
        report.error = exc.message
        report.exit_code = exc.exit_code
        folder = Path(report.backup["path"]) if report.backup and report.backup.get("path") else None
        _finish(project, report, start_count, folder)
        raise RunFailed(exc, report) from exc
    except BaseException:
        if locked:
            release_quietly(project, env, owner, report.warnings)
        raise


def release_quietly(project: Project, env: Environment, owner: str, warnings: list[str]) -> None:
    """Release our lock after a failure; if even that fails, say how to release it by hand."""
    try:
        release_lock(project.wrangler, env, owner)
    except D1OpsError as exc:
        warnings.append(f"could not release the lock on {env.name}: {exc.message}. Run `d1ops unlock {env.name}`.")


def _backup_before_apply(
    project: Project, env: Environment, state: EnvState, report: RunReport, label: str
) -> Path | None:
    """Take the backup the environment's policy asks for; a failure of a required one aborts the run."""
    if env.is_remote:
        try:
            info = project.wrangler.time_travel_info(env)
            report.bookmark = str(info.get("bookmark") or "") or None
        except WranglerError as exc:
            if env.backup == "required":
                raise BackupFailed(
                    f"Could not record a Time Travel bookmark of {env.name}: {exc.detail}. Nothing was applied."
                ) from exc
            report.warnings.append(f"no Time Travel bookmark: {exc.detail}")
        if report.bookmark:
            report.restore_command = backup.bookmark_restore_command(project, env, report.bookmark)
    if env.backup == "skip":
        return None
    try:
        result = backup.take_backup(
            project,
            env,
            tables=None,
            label=label,
            verify=env.verify,
            head=_head(state),
            bookmark=report.bookmark,
        )
    except BackupFailed as exc:
        if env.backup == "required":
            raise BackupFailed(f"{exc.message}\nNothing was applied to {env.name}.") from exc
        report.warnings.append(f"backup failed (backup: optional, so the run went on): {exc.message}")
        return None
    if result is None:
        report.backup = {"skipped": "the database holds no tables yet: nothing to back up"}
        return None
    report.backup = result.summary()
    if not result.verified:
        message = f"The backup {result.path} did not verify: {result.problem}."
        if env.backup == "required":
            raise BackupFailed(f"{message}\nNothing was applied to {env.name}.")
        report.warnings.append(message)
    return result.path


def _head(state: EnvState) -> str | None:
    return state.applied_names[-1] if state.applied else None


def _apply(project: Project, env: Environment, plan: Plan, report: RunReport, owner: str) -> None:
    """Apply the plan; each migration's SQL and tracking rows are atomic, and the last batch releases the lock.

    Several migrations go to wrangler as one batch first (1 process instead of N; D1 runs a file atomically).
    If the batch fails, nothing of it was applied, and the migrations are applied one per process to find
    and name the failing file, the ones before it staying applied.
    """
    who = actor()
    outcomes = [MigrationOutcome(m.name, m.checksum, "not run") for m in plan.to_apply]
    report.migrations = outcomes
    sqls = []
    for m in plan.to_apply:
        try:
            sqls.append(sql_for_batch(m.read_sql()))
        except (OSError, UnicodeDecodeError) as exc:
            raise MigrationFailed(f"{m.name} cannot be read ({exc}). Nothing was applied.") from exc
    with tempfile.TemporaryDirectory(prefix="d1ops-") as tmp:
        if len(plan.to_apply) > 1 and _apply_as_one_batch(project, env, plan, sqls, outcomes, who, owner, Path(tmp)):
            return
        for i, (m, sql, outcome) in enumerate(zip(plan.to_apply, sqls, outcomes, strict=True)):
            last = i == len(plan.to_apply) - 1
            batch = Path(tmp) / f"{i:04d}-{m.name}"
            batch.write_text(migration_batch(m, sql, who, release_owner=owner if last else None), encoding="utf-8")
            started = time.monotonic()
            try:
                project.wrangler.execute(env, file=batch)
            except WranglerError as exc:
                outcome.result = "failed"
                outcome.error = exc.detail
                outcome.duration_ms = int((time.monotonic() - started) * 1000)
                done = [o.name for o in outcomes if o.result == "applied"]
                raise MigrationFailed(
                    f"Migration {m.name} failed on {env.name}: {exc.detail}\n"
                    f"Nothing of {m.name} was applied or recorded"
                    + (f" ({', '.join(done)} applied before it)" if done else "")
                    + f". Fix {m.path.name} and run `d1ops migrate {env.name}` again."
                ) from exc
            outcome.result = "applied"
            outcome.duration_ms = int((time.monotonic() - started) * 1000)


def _apply_as_one_batch(
    project: Project,
    env: Environment,
    plan: Plan,
    sqls: list[str],
    outcomes: list[MigrationOutcome],
    who: str,
    owner: str,
    tmp: Path,
) -> bool:
    names = ", ".join(quote(m.name) for m in plan.to_apply)
    text = "".join(migration_batch(m, sql, who, release_owner=None) for m, sql in zip(plan.to_apply, sqls, strict=True))
    text += release_lock_sql(owner) + f"SELECT name, duration_ms FROM {CHECKSUM_TABLE} WHERE name IN ({names});\n"
    batch = tmp / "all.sql"
    batch.write_text(text, encoding="utf-8")
    try:
        result = project.wrangler.execute(env, file=batch)
    except WranglerError:
        return False  # nothing of the batch was applied: go one by one to name the failing file
    # Locally the last statement's rows carry the durations; remotely wrangler prints only an import summary.
    rows = result[-1].results if result else []
    durations = {str(r["name"]): r.get("duration_ms") for r in rows if "name" in r}
    for outcome in outcomes:
        outcome.result = "applied"
        value = durations.get(outcome.name)
        outcome.duration_ms = int(value) if isinstance(value, int | float) else None
    return True


def _finish(project: Project, report: RunReport, start_count: int, backup_folder: Path | None) -> RunReport:
    report.finished_at = utc_now()
    report.wrangler_processes = project.wrangler.processes - start_count
    if not report.dry_run:
        report.report_path = str(write_report(project, report, backup_folder))
    return report


def write_report(project: Project, report: RunReport, backup_folder: Path | None) -> Path:
    """File the report under backups/<env>/reports/, and a copy in the run's backup folder."""
    folder = project.config.backups_dir / report.env / "reports"
    path = folder / f"{stamp()}-{report.command}.json"
    text = json.dumps(report.to_dict(), indent=2) + "\n"
    try:
        write_private(path, text)
        if backup_folder is not None and backup_folder.is_dir():
            write_private(backup_folder / "report.json", text)
    except OSError as exc:
        report.warnings.append(f"could not write the run report ({exc})")
    return path


def write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


# -- promote ------------------------------------------------------------------------------------------------------
def behind_env(project: Project) -> Environment:
    """The first environment that lacks something its predecessor has applied (promote's default target)."""
    config = project.config
    migrations = project.migrations()
    states = read_states(project, list(config.environments))
    for env in config.environments[1:]:
        previous = config.predecessor(env)
        assert previous is not None
        plan = plan_migrations(env, states[env.name], migrations, set(states[previous.name].applied))
        if plan.to_apply:
            return env
    raise UsageError("Every environment already has what the one before it has: nothing to promote.")


def run_promote(
    project: Project, to: str | None, *, dry_run: bool = False, confirm: Confirm | None = None
) -> RunReport:
    config = project.config
    env = config.env(to) if to else behind_env(project)
    if config.predecessor(env) is None:
        raise UsageError(
            f"{env.name} is the first environment: nothing to promote into it. Use `d1ops migrate {env.name}`."
        )
    return run_migrate(
        project, env.name, dry_run=dry_run, confirm=confirm, command="promote", only_from_predecessor=True
    )


# -- execute ------------------------------------------------------------------------------------------------------
def run_execute(
    project: Project, env_name: str, *, command: str | None, file: Path | None, confirm: Confirm | None
) -> list[dict[str, Any]]:
    """Run ad-hoc SQL; on a protected environment only after confirmation."""
    env = project.config.env(env_name)
    if file is not None and not file.is_file():
        raise UsageError(f"SQL file {file} does not exist.")
    if env.protected:
        if confirm is None:
            raise GateRefused(f"{env.name} is protected and no confirmation was given. Use --yes in CI.")
        confirm(env, f"Execute on {env.name}: " + (f"--file {file}" if file else f"--command {command!r}"))
    result = project.wrangler.execute(env, command=command, file=file)
    return [{"results": s.results, "meta": s.meta} for s in result]
