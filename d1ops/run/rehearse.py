"""rehearse: apply an environment's pending migrations to a scratch copy of its data, never to it.

The copy is an export of the environment (remote or local) loaded into a scratch local D1 — the same
machinery an all-or-nothing run replays a failed batch on (`replay.py`). Each pending migration is applied
one by one; the report gives per migration its result, its time, the rows it inserted, updated and deleted per
table, the rows it loses in tables it neither deletes from nor drops (cascade victims, with the cause), whether
the row guard would refuse it, and the result of its optional `-- d1ops: verify <SQL>` checks. The target's
drift is checked as migrate checks it (its schema against its applied migrations, replayed here). The
environment is only read (2 processes: the state with the schema, the export), whatever happens; the copy costs
1 more, each migration 1.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from d1ops.backups.scratch import ScratchD1
from d1ops.backups.take import export_database
from d1ops.changes.migrate import plan_migrations
from d1ops.errors import D1OpsError
from d1ops.project.credentials import NO_CREDENTIALS, credentials_source
from d1ops.project.migrations import schema_drift
from d1ops.project.project import Project
from d1ops.run.replay import Rehearsed, copy_from_dump, rehearse_on
from d1ops.run.tracking import read_recorded_schemas, read_state
from d1ops.support.files import utc_now, work_dir

DATA_RULES = ("fk-drop", "destructive")
"""Lint's errors about data a migration loses: rehearse runs the files anyway to show the loss (and fails)."""


@dataclass
class Rehearsal:
    env: str
    started_at: str
    copied_rows: dict[str, int] = field(default_factory=dict)
    migrations: list[Rehearsed] = field(default_factory=list)
    lint: list[dict[str, object]] = field(default_factory=list)  # lint's data-loss errors: migrate refuses them
    drift: list[dict[str, object]] | None = field(default_factory=list)  # None: cannot tell (see schema_drift)
    drift_accepted: bool = False
    wrangler_processes: int = 0
    ok: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def rehearse(project: Project, env_name: str, *, only: set[str] | None = None, accept_drift: bool = False) -> Rehearsal:
    """Rehearse ENV's pending migrations (or those in `only`, for promote) on a scratch copy of its data.
    A drifted target fails the rehearsal (migrate would refuse it) unless `accept_drift`; so does a lint error
    about lost data (fk-drop, destructive), after the files ran on the copy to show what they lose."""
    env = project.config.env(env_name)
    if env.is_remote and not credentials_source():
        raise D1OpsError(
            f"`d1ops rehearse {env.name}` copies {env.name}'s data first: it is remote, and this machine has "
            f"{NO_CREDENTIALS}. Nothing was read."
        )
    start = project.wrangler.processes
    migrations = project.migrations()
    migrations.raise_for_errors(except_rules=DATA_RULES)  # what those rules fear, the rehearsal shows
    state = read_state(project.wrangler, env, with_schema=True)
    plan = plan_migrations(env, state, migrations, only)
    result = Rehearsal(env=env.name, started_at=utc_now(), drift_accepted=accept_drift)
    result.lint = [f.to_dict() for f in migrations.errors if f.rule in DATA_RULES]
    recorded = lambda: read_recorded_schemas(project.wrangler, env, state.schema)  # noqa: E731
    drift = schema_drift(migrations, list(state.applied), state.schema, project.config.schema_cache, recorded)
    result.drift = None if drift is None else [d.to_dict() for d in drift]
    refused = (bool(drift) and not accept_drift) or bool(result.lint)  # migrate would refuse before applying
    if not plan.to_apply:
        result.ok = not refused
        result.wrangler_processes = project.wrangler.processes - start
        return result
    with work_dir("rehearse") as work:  # a killed rehearsal's copy is removed by the next run
        dump = work / "export.sql"
        schema = state.schema
        assert schema is not None, "read with the state"
        if schema.tables:  # every object, FTS5 tables and triggers included: a migration may need them
            export_database(project, env, schema, dump)
        else:
            dump.write_text("", encoding="utf-8")
        copy = copy_from_dump(ScratchD1(project.wrangler, work / "scratch"), dump, work, f"an export of {env.name}")
        result.copied_rows = copy.scratch.table_counts()
        result.migrations = rehearse_on(copy, plan.to_apply, work, row_guard_on=env.row_guard)
    result.ok = all(m.result == "applied" for m in result.migrations) and not refused
    result.wrangler_processes = project.wrangler.processes - start
    return result
