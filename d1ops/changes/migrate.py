"""migrate and promote: apply pending migration files to one environment, through every gate.

All or nothing by default: the pending migrations, each with its two tracking rows, and the release of the
lock go to wrangler as one batch, which D1 runs atomically (1 process for any number of files). If it fails,
nothing was applied or recorded; the failing migration is found by replaying the batch one migration at a
time on a scratch local copy (`replay.py`), never by applying the earlier files for real.
`--one-by-one` keeps wrangler's own semantics: one call per file, the files before a failure stay applied.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from d1ops.errors import GateRefused, MigrationFailed, OutcomeUnknown, UsageError, WranglerError
from d1ops.project.config import Environment
from d1ops.project.credentials import require_for_gate
from d1ops.project.migrations import MigrationFile, MigrationSet, schema_drift
from d1ops.project.project import Project
from d1ops.run.apply import Batch, read_back_state, send_batch
from d1ops.run.replay import Step, explain_failure
from d1ops.run.report import MigrationOutcome, RunReport, elapsed_ms
from d1ops.run.sequence import Change, Confirm, Run, run_change
from d1ops.run.tracking import (
    CHECKSUM_TABLE,
    EnvState,
    actor,
    migration_batch,
    read_recorded_schemas,
    read_states,
)
from d1ops.sql.rowguard import schema_after
from d1ops.sql.text import quote, sql_for_batch
from d1ops.support import progress


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
    warnings: list[str] = field(default_factory=list)

    def describe(self) -> str:
        if not self.to_apply:
            return f"Nothing to apply to {self.env}."
        lines = [f"Migrations to apply to {self.env}:"] + [f"  {m.name}" for m in self.to_apply]
        if self.skipped:
            lines.append(f"Skipped here (skip list): {', '.join(self.skipped)}")
        return "\n".join(lines)


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


def check_drift(drifts: list[Drift]) -> None:
    if drifts:
        raise GateRefused(
            "Applied migrations were edited after they were applied (checksum drift):\n"
            + "\n".join(f"  {d.describe()}" for d in drifts)
            + "\nNever edit an applied migration: restore the file from version control "
            "(git checkout -- FILE) and put the change in a new migration (`d1ops new NAME`)."
        )


def refuse_schema_drift(run: Run, migrations: MigrationSet, state: EnvState, *, accept: bool, command: str) -> None:
    """Refuse a target whose schema is not what its applied migrations make, naming the objects, unless
    `--accept-drift`; the report records the drift either way."""
    items = schema_drift(
        migrations,
        list(state.applied),
        run.schema,
        run.project.config.schema_cache,
        lambda: read_recorded_schemas(run.wrangler, run.env, run.schema),
    )
    if not items:
        return
    run.report.warnings += [f"schema drift: {d.describe()}" for d in items]
    if isinstance(run.report.details, dict):
        run.report.details["schema_drift"] = {"accepted": accept, "objects": [d.to_dict() for d in items]}
    if not accept:
        raise GateRefused(
            f"{state.env}'s schema is not what its applied migrations make (drift):\n"
            + "\n".join(f"  {d.describe()}" for d in items)
            + f"\nNothing was changed. Put the hand-made change into a migration (or undo it), or run `d1ops "
            f"{command} {state.env} --accept-drift` to apply on top of it."
        )


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
    return Plan(env.name, to_apply, skipped, warnings)


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


class MigrateChange(Change):
    """Apply the pending migrations of one environment (promote: only what its predecessor has)."""

    def __init__(
        self, project: Project, env: Environment, *, command: str, only_from_predecessor: bool, one_by_one: bool
    ) -> None:
        super().__init__(env)
        self.project = project
        self.command = command
        self.only_from_predecessor = only_from_predecessor
        self.one_by_one = one_by_one
        self.accept_drift = False
        self.rehearse = False  # promote --rehearse: rehearse the plan on a copy of the target first (the gate)
        self.plan_: Plan | None = None

    def prepare(self, run: Run) -> None:
        self.migrations = self.project.migrations()
        self.migrations.raise_for_errors()
        run.report.warnings += [f"{f.file}: {f.message}" for f in self.migrations.warnings]

    def read(self, run: Run) -> None:
        """This environment under its lock (with its schema, for a replay), and the ones before it for the gate,
        all at once."""
        config = self.project.config
        envs = list(config.environments[: config.env_names.index(self.env.name) + 1])
        require_for_gate(self.command, self.env, envs)
        locked = {self.env.name: lambda: run.lock_and_read(with_schema=True)}
        self.states = read_states(run.wrangler, envs, readers=locked)

    def plan(self, run: Run) -> bool:
        check_drift(find_drift(self.migrations, self.states))
        state = self.states[self.env.name]
        refuse_schema_drift(run, self.migrations, state, accept=self.accept_drift, command=self.command)
        previous = self.project.config.predecessor(self.env)
        only = set(self.states[previous.name].applied) if self.only_from_predecessor and previous else None
        plan = self.plan_ = plan_migrations(self.env, self.states[self.env.name], self.migrations, only)
        run.report.plan = [m.name for m in plan.to_apply]
        run.report.skipped = plan.skipped
        run.report.warnings += plan.warnings
        gate_plan(self.project, self.env, plan, self.states)
        if self.rehearse and plan.to_apply:
            gate_rehearsal(run, self.project, self.env, plan, accept_drift=self.accept_drift)
        return bool(plan.to_apply)

    def describe(self) -> str:
        assert self.plan_ is not None
        return self.plan_.describe()

    def on_dry_run(self, run: Run) -> None:
        config = self.project.config
        if run.report.plan and self.env.backup != "skip":
            run.report.backup = {
                "would_take": f"{config.env_dir(self.env.name).relative_to(config.backups_dir.parent)}/"
                f"<UTC time>-{self.command}",
                "required": self.env.backup == "required",
                "verify": self.env.verify,
            }

    # -- apply ----------------------------------------------------------------------------------------------
    def apply(self, run: Run) -> None:
        assert self.plan_ is not None
        pending = self.plan_.to_apply
        run.report.migrations = [MigrationOutcome(m.name, m.checksum, "not run") for m in pending]
        self.sqls = []
        for m in pending:
            try:
                self.sqls.append(sql_for_batch(m.read_sql()))
            except (OSError, UnicodeDecodeError) as exc:
                raise MigrationFailed(f"{m.name} cannot be read ({exc}). {self.untouched()}") from exc
        if self.one_by_one:
            self._apply_one_by_one(run)
        else:
            self._apply_as_one_batch(run)

    def _apply_as_one_batch(self, run: Run) -> None:
        assert self.plan_ is not None
        pending, outcomes = self.plan_.to_apply, run.report.migrations
        who = actor()
        names = ", ".join(quote(m.name) for m in pending)
        pairs = zip(pending, self.sqls, strict=True)
        body = "".join(migration_batch(m, sql, who) for m, sql in pairs)
        body += f"SELECT name, duration_ms FROM {CHECKSUM_TABLE} WHERE name IN ({names});\n"
        started = time.monotonic()
        try:
            guard = [(m.name, sql) for m, sql in zip(pending, self.sqls, strict=True)]
            result = send_batch(run, Batch("batch", body, guard=guard))
        except OutcomeUnknown:
            raise
        except WranglerError as exc:
            raise batch_failure(run, self, exc) from exc
        # The release follows the duration query, so the rows are in the last result of the change's own.
        # Locally they carry each migration's time measured inside the database; remotely wrangler prints only
        # an import summary: then the batch's wall time is all there is.
        rows = result[-1].results if result else []
        durations = {str(r["name"]): r.get("duration_ms") for r in rows if "name" in r}
        for outcome in outcomes:
            outcome.result = "applied"
            value = durations.get(outcome.name)
            if isinstance(value, int | float):
                outcome.duration_ms, outcome.timing = int(value), "database"
        if not durations and len(outcomes) == 1:
            outcomes[0].duration_ms, outcomes[0].timing = elapsed_ms(started), "process"

    def _apply_one_by_one(self, run: Run) -> None:
        assert self.plan_ is not None
        pending, outcomes = self.plan_.to_apply, run.report.migrations
        who = actor()
        for i, (m, sql, outcome) in enumerate(zip(pending, self.sqls, outcomes, strict=True)):
            last = i == len(pending) - 1
            batch = Batch(f"{i:04d}-{m.path.stem}", migration_batch(m, sql, who), release=last, guard=[(m.name, sql)])
            progress.step(f"Applying {m.name} to {self.env.name} ({i + 1}/{len(pending)}, one by one)")
            started = time.monotonic()
            try:
                send_batch(run, batch)
            except OutcomeUnknown:
                raise
            except WranglerError as exc:
                outcome.result, outcome.error = "failed", exc.detail
                outcome.duration_ms, outcome.timing = elapsed_ms(started), "process"
                done = [o.name for o in outcomes if o.result == "applied"]
                raise MigrationFailed(
                    f"Migration {m.name} failed on {self.env.name}: {exc.detail}\n"
                    f"Nothing of {m.name} was applied or recorded"
                    + (f" ({', '.join(done)} applied before it, one by one)" if done else "")
                    + f". Fix {m.path.name} and run `d1ops migrate {self.env.name}` again."
                ) from exc
            outcome.result = "applied"
            outcome.duration_ms, outcome.timing = elapsed_ms(started), "process"
            if run.schema is not None and not last:  # the next file's row guard counts the tables this one left
                run.schema = schema_after(run.schema, sql)
                if run.schema is None:
                    run.report.warnings.append(
                        f"the row guard did not watch the files after {m.name}: it does not replay"
                    )

    def read_back(self, run: Run, cause: OutcomeUnknown) -> MigrationFailed:
        return read_back_applied(run, cause)


def read_back_applied(run: Run, cause: OutcomeUnknown) -> MigrationFailed:
    """After an apply whose outcome is unknown: read what the database holds now and report exactly that.
    Nothing is re-applied."""
    env = run.env
    state = read_back_state(run)
    outcomes = run.report.migrations
    if state is None:
        for o in outcomes:
            if o.result == "not run":
                o.result = "unknown"
        return MigrationFailed(
            f"The call applying migrations to {env.name} did not finish ({cause.detail}), and the state "
            f"could not be read back: whether it was applied is unknown. Nothing will be retried. Run "
            f"`d1ops status {env.name}` to see what is applied, and `d1ops unlock {env.name}` if the "
            "lock is still held."
        )
    for o in outcomes:
        if o.result in ("not run", "unknown"):
            o.result = "applied" if o.name in state.applied else "not applied"
    applied = [o.name for o in outcomes if o.result == "applied"]
    said = f"applied: {', '.join(applied)}" if applied else "none of them is applied"
    lock = ""
    if state.lock_owner == run.owner and not env.is_remote:
        run.locked = True  # the local call is dead and did not run: the run releases the lock as after a failure
    elif state.lock_owner == run.owner:
        lock = (
            f" The lock is still held by this run (the import may still finish on D1): check `d1ops status "
            f"{env.name}`, then `d1ops unlock {env.name}` (or let its lease expire at {state.lock_expires_at})."
        )
    return MigrationFailed(
        f"The call applying migrations to {env.name} did not finish ({cause.detail}). Read back from the "
        f"database: {said}.{lock} Nothing was retried; run `d1ops migrate {env.name}` to apply the rest."
    )


def batch_failure(run: Run, change: MigrateChange, exc: WranglerError) -> MigrationFailed:
    """Nothing of the batch was applied: name the migration that failed, from a replay on a scratch copy."""
    assert change.plan_ is not None
    pending = change.plan_.to_apply
    who = actor()
    pairs = zip(pending, change.sqls, strict=True)
    steps = [Step(m.name, migration_batch(m, sql, who), sql) for m, sql in pairs]
    found = explain_failure(run, steps, exc)
    if found.index is not None:
        outcome = run.report.migrations[found.index]
        outcome.result, outcome.error = "failed", found.error
    m = pending[found.index] if found.index is not None else None
    head = (
        f"Migration {m.name} failed on {change.env.name}: {found.error}"
        if m
        else f"The batch of {len(pending)} migration(s) failed on {change.env.name}: {exc.detail}"
    )
    statement = f"\n  statement: {found.statement}" if found.statement else ""
    note = f"\n{found.note}" if found.note else ""
    fix = f"Fix {m.path.name}" if m else "Fix the failing migration"
    target = change.env.name if change.command == "migrate" else f"--to {change.env.name}"
    again = f"d1ops {change.command} {target}"
    return MigrationFailed(
        f"{head}{statement}{note}\nNothing was applied or recorded: the {len(pending)} pending migration(s) ran "
        f"as one atomic batch, so {change.env.name} is exactly as it was. {fix} and run `{again}` again."
    )


# -- entry points ---------------------------------------------------------------------------------------------
def run_migrate(
    project: Project,
    env_name: str | None,
    *,
    dry_run: bool = False,
    confirm: Confirm | None = None,
    command: str = "migrate",
    only_from_predecessor: bool = False,
    one_by_one: bool = False,
    accept_drift: bool = False,
    rehearse: bool = False,
) -> RunReport:
    """Apply pending migrations to one environment, through every gate. Raises RunFailed carrying the report."""
    env = project.config.env(env_name)
    change = MigrateChange(
        project, env, command=command, only_from_predecessor=only_from_predecessor, one_by_one=one_by_one
    )
    change.accept_drift, change.rehearse = accept_drift, rehearse
    return run_change(project, change, dry_run=dry_run, confirm=confirm)


def behind_env(project: Project) -> Environment:
    """The first environment that lacks something its predecessor has applied (promote's default target)."""
    config = project.config
    migrations = project.migrations()
    states = read_states(project.wrangler, list(config.environments))
    for env in config.environments[1:]:
        previous = config.predecessor(env)
        assert previous is not None
        plan = plan_migrations(env, states[env.name], migrations, set(states[previous.name].applied))
        if plan.to_apply:
            return env
    raise UsageError("Every environment already has what the one before it has: nothing to promote.")


def gate_rehearsal(run: Run, project: Project, env: Environment, plan: Plan, *, accept_drift: bool = False) -> None:
    """promote --rehearse's gate, in the plan (a dry run included, before any confirmation): exactly the files the
    plan applies, rehearsed on a scratch copy of the target's data under the run's lock. The rehearsal goes into
    the report; one that fails refuses the run, and the target is only read (rehearse.py: its state, its schema,
    its export)."""
    from d1ops.run.rehearse import rehearse

    rehearsal = rehearse(project, env.name, only={m.name for m in plan.to_apply}, accept_drift=accept_drift)
    if isinstance(run.report.details, dict):
        run.report.details["rehearsal"] = rehearsal
    if rehearsal.ok:
        return
    failing = []
    for m in rehearsal.migrations:
        if m.result == "applied":
            continue
        said = [m.error] if m.error else []
        said += [f"{c['sql']} -> {c.get('error') or c.get('value')}" for c in m.checks if not c["passed"]]
        failing.append(f"  {m.name}: {m.result}" + (f": {'; '.join(said)}" if said else ""))
    raise GateRefused(
        f"The rehearsal on a copy of {env.name} failed: nothing was promoted.\n"
        + "\n".join(failing)
        + f"\nFix the migration (`d1ops rehearse {env.name}` shows each one's effect), then promote again."
    )


def run_promote(
    project: Project,
    to: str | None,
    *,
    dry_run: bool = False,
    confirm: Confirm | None = None,
    one_by_one: bool = False,
    accept_drift: bool = False,
    rehearse: bool = False,
) -> RunReport:
    """Apply to `to` (default: the first environment behind its predecessor) what its predecessor has; with
    `rehearse`, only after a rehearsal of exactly that on a copy of its data passed (the plan's gate)."""
    config = project.config
    env = config.env(to) if to else behind_env(project)
    if config.predecessor(env) is None:
        raise UsageError(
            f"{env.name} is the first environment: nothing to promote into it. Use `d1ops migrate {env.name}`."
        )
    return run_migrate(
        project,
        env.name,
        dry_run=dry_run,
        confirm=confirm,
        command="promote",
        only_from_predecessor=True,
        one_by_one=one_by_one,
        accept_drift=accept_drift,
        rehearse=rehearse,
    )
