"""status of a fleet: every database read (no lease, one query each, side by side) and summarised."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from d1ops.changes.migrate import find_drift
from d1ops.errors import WranglerError
from d1ops.project.config import Environment
from d1ops.project.migrations import schema_drift
from d1ops.project.project import Project
from d1ops.project.status import APPLIED, NOT_READ, PENDING, SKIPPED, Cell, StatusReport
from d1ops.run.fleet_journal import failed_in_last_run
from d1ops.run.fleet_targets import ApiSeam, Target, resolve_fleet
from d1ops.run.tracking import EnvState, read_state
from d1ops.sql.drift import DriftItem

if TYPE_CHECKING:
    from d1ops.api.client import D1Api


@dataclass
class FleetDbState:
    name: str
    id: str
    applied: list[str]
    behind: int  # migrations of the head it lacks
    state: str  # at-head | behind | drifted | failed | unreadable
    error: str | None = None


@dataclass
class FleetStatus:
    env: str
    head: list[str]  # the migrations a database of this fleet should hold (the folder minus the skip list)
    databases: list[FleetDbState]
    api_calls: int = 0

    def names(self, state: str) -> list[str]:
        return [d.name for d in self.databases if d.state == state]

    def summary(self) -> dict[str, Any]:
        behind: dict[str, int] = {}
        for d in self.databases:
            if d.state == "behind":
                behind[str(d.behind)] = behind.get(str(d.behind), 0) + 1
        return {
            "databases": len(self.databases),
            "at_head": len(self.names("at-head")),
            "behind": dict(sorted(behind.items(), key=lambda kv: int(kv[0]))),
            "failed": len(self.names("failed")),
            "drifted": len(self.names("drifted")),
            "unreadable": len(self.names("unreadable")),
        }

    def describe(self) -> str:
        s = self.summary()
        parts = [f"{s['at_head']} at head"]
        parts += [f"{n} behind by {k}" for k, n in s["behind"].items()]
        bad = s["failed"] + s["drifted"] + s["unreadable"]
        parts.append(f"{bad} failed or drifted" + (f" ({s['unreadable']} unreadable)" if s["unreadable"] else ""))
        return f"{self.env}: {s['databases']} databases: " + ", ".join(parts) + "."

    def applied_count(self, migration: str) -> int:
        return sum(1 for d in self.databases if migration in d.applied)

    def to_dict(self) -> dict[str, Any]:
        return {
            "env": self.env,
            "head": self.head,
            "fleet": self.summary(),
            "databases": [asdict(d) for d in self.databases],
            "api_calls": self.api_calls,
        }


def fleet_status(project: Project, env: Environment, api: D1Api | None = None, concurrency: int = 16) -> FleetStatus:
    """Read every database of the fleet (no lease: one read query each, side by side) and summarise: at head,
    behind by k, failed in the last run (its journal), drifted."""
    from d1ops.api.client import D1Api

    api = api or D1Api.from_env()
    calls0 = api.calls
    migrations = project.migrations()
    head = [m.name for m in migrations.files if m.name not in env.skip]
    failed_last = failed_in_last_run(project.config.env_dir(env.name) / "fleet")
    targets = resolve_fleet(api, env, project.config.root)

    verdicts: dict[tuple[Any, ...], list[DriftItem] | None] = {}  # tenants share schemas: one replay each

    def schema_drift_of(state: EnvState) -> list[DriftItem] | None:
        key = (tuple(state.applied), state.schema)
        if key not in verdicts:
            verdicts[key] = schema_drift(migrations, list(state.applied), state.schema, project.config.schema_cache)
        return verdicts[key]

    def read(target: Target) -> FleetDbState:
        try:
            seam = ApiSeam(api, target)
            state = read_state(seam, replace(env, name=target.name), with_schema=True)  # type: ignore[arg-type]
        except WranglerError as exc:
            return FleetDbState(target.name, target.id, [], len(head), "unreadable", exc.detail)
        behind = sum(1 for n in head if n not in state.applied)
        drift = find_drift(migrations, {target.name: state})
        objects = schema_drift_of(state)
        if drift:
            kind, error = "drifted", "; ".join(d.describe() for d in drift)
        elif objects:
            kind, error = "drifted", "schema: " + "; ".join(d.describe() for d in objects)
        elif behind and target.name in failed_last:
            kind, error = "failed", failed_last[target.name]
        else:
            kind, error = ("behind" if behind else "at-head"), None
        return FleetDbState(target.name, target.id, list(state.applied), behind, kind, error)

    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(targets) or 1))) as pool:
        states = list(pool.map(read, targets))
    return FleetStatus(env.name, head, states, api.calls - calls0)


def add_fleet_column(report: StatusReport, fleet: FleetStatus, env: Environment, order: list[str]) -> None:
    """`status --all`: the fleet as one column of the matrix. A cell is applied (every database has it), pending
    (none has it), skipped, or 'K/N' (K of the N databases have it); the summary goes with the column."""
    total = len(fleet.databases)
    for row in report.migrations:
        n = fleet.applied_count(row.name)
        if total and n == total:
            kind = APPLIED
        elif n == 0:
            kind = SKIPPED if row.name in env.skip else PENDING
        else:
            kind = f"{n}/{total}"
        row.envs[env.name] = Cell(kind)
    report.fleets[env.name] = {**fleet.summary(), "describe": fleet.describe()}
    report.envs = [name for name in order if name in report.envs or name == env.name]


def add_unread_fleet(report: StatusReport, env: Environment, why: str, order: list[str]) -> None:
    for row in report.migrations:
        row.envs[env.name] = Cell(NOT_READ)
    report.unavailable[env.name] = why
    report.envs = [name for name in order if name in report.envs or name == env.name]
