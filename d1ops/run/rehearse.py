"""rehearse: apply an environment's pending migrations to a scratch copy of its data, never to it.

The copy is an export of the environment (remote or local) loaded into a scratch local D1 — the same
machinery an all-or-nothing run replays a failed batch on (`replay.py`). Each pending migration is applied
one by one; the report gives per migration its result, its time, the rows it changed per table, and the
result of its optional `-- d1ops: verify <SQL>` checks. The environment is only read (2 processes: the state,
the export), whatever happens.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from d1ops.backups.scratch import ScratchD1
from d1ops.backups.take import export_database
from d1ops.changes.migrate import plan_migrations
from d1ops.errors import D1OpsError
from d1ops.project.credentials import NO_CREDENTIALS, credentials_source
from d1ops.project.project import Project
from d1ops.run.replay import Rehearsed, copy_from_dump, rehearse_on
from d1ops.run.tracking import read_state
from d1ops.support.files import utc_now, work_dir
from d1ops.wrangler.reads import read_schema


@dataclass
class Rehearsal:
    env: str
    started_at: str
    copied_rows: dict[str, int] = field(default_factory=dict)
    migrations: list[Rehearsed] = field(default_factory=list)
    wrangler_processes: int = 0
    ok: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def rehearse(project: Project, env_name: str, *, only: set[str] | None = None) -> Rehearsal:
    """Rehearse ENV's pending migrations (or those in `only`, for promote) on a scratch copy of its data."""
    env = project.config.env(env_name)
    if env.is_remote and not credentials_source():
        raise D1OpsError(
            f"`d1ops rehearse {env.name}` copies {env.name}'s data first: it is remote, and this machine has "
            f"{NO_CREDENTIALS}. Nothing was read."
        )
    start = project.wrangler.processes
    migrations = project.migrations()
    migrations.raise_for_errors()
    state = read_state(project.wrangler, env)
    plan = plan_migrations(env, state, migrations, only)
    result = Rehearsal(env=env.name, started_at=utc_now())
    if not plan.to_apply:
        result.wrangler_processes = project.wrangler.processes - start
        return result
    with work_dir("rehearse") as work:  # a killed rehearsal's copy is removed by the next run
        dump = work / "export.sql"
        schema = read_schema(project.wrangler, env)
        if schema.tables:  # every object, FTS5 tables and triggers included: a migration may need them
            export_database(project, env, schema, dump)
        else:
            dump.write_text("", encoding="utf-8")
        copy = copy_from_dump(ScratchD1(project.wrangler, work / "scratch"), dump, work, f"an export of {env.name}")
        result.copied_rows = copy.scratch.table_counts()
        result.migrations = rehearse_on(copy, plan.to_apply, work)
    result.ok = all(m.result == "applied" for m in result.migrations)
    result.wrangler_processes = project.wrangler.processes - start
    return result
