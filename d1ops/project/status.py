"""Read-only views of applied state: one environment, or the matrix of migrations × environments."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from d1ops.changes.migrate import find_drift
from d1ops.errors import WranglerError
from d1ops.project.config import Environment
from d1ops.project.credentials import NO_CREDENTIALS, credentials_source
from d1ops.project.migrations import schema_drift
from d1ops.project.project import Project
from d1ops.run.tracking import EnvState, read_recorded_schemas, read_state, read_states
from d1ops.sql.drift import DriftItem
from d1ops.sql.schema import DatabaseSchema

APPLIED, PENDING, SKIPPED, DRIFTED, MISSING_FILE = "applied", "pending", "skipped", "drifted", "missing-file"
NOT_READ, NO_CREDENTIALS_CELL = (
    "not read",
    "no credentials",
)  # the cell of an environment that could not be read (see StatusReport.unavailable)


@dataclass
class Cell:
    status: str
    applied_at: str | None = None
    checksum: str | None = None


@dataclass
class MigrationRow:
    name: str
    file_checksum: str | None
    envs: dict[str, Cell] = field(default_factory=dict)


@dataclass
class StatusReport:
    envs: list[str]
    migrations: list[MigrationRow]
    warnings: list[str]
    wrangler_processes: int
    locks: dict[str, str | None] = field(default_factory=dict)
    database: str = ""
    unavailable: dict[str, str] = field(default_factory=dict)  # env → why it could not be read
    fleets: dict[str, dict[str, Any]] = field(default_factory=dict)  # a fleet's column: its summary (run/fleet_status)
    schema_drift: dict[str, list[DriftItem]] = field(default_factory=dict)  # env → objects unlike the migrations'

    @property
    def complete(self) -> bool:
        return not self.unavailable

    def count(self, status: str, env: str | None = None) -> int:
        return sum(
            1 for m in self.migrations for name, c in m.envs.items() if c.status == status and env in (None, name)
        )

    @property
    def needs_attention(self) -> bool:
        return bool(self.count(PENDING) or self.count(DRIFTED) or any(self.schema_drift.values()))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["summary"] = {
            env: {s: self.count(s, env) for s in (APPLIED, PENDING, SKIPPED, DRIFTED, MISSING_FILE)}
            for env in self.envs
        }
        return data


def status_of(project: Project, envs: list[Environment]) -> StatusReport:
    """Status of these environments: one wrangler process each, read concurrently.

    A remote environment is not read without credentials (no process started), nor shown as pending: its column
    says why it could not be read, and every other column is still shown (so does one whose read fails, when
    several are shown; a single environment's failure is raised)."""
    start = project.wrangler.processes
    migrations = project.migrations()
    unavailable: dict[str, str] = {}
    if not credentials_source():
        unavailable = {e.name: NO_CREDENTIALS for e in envs if e.is_remote}

    def guarded(env: Environment) -> EnvState:
        try:
            return read_state(project.wrangler, env, with_schema=True)
        except WranglerError as exc:
            if len(envs) == 1:  # the one environment asked for: its error is the answer
                raise
            unavailable[env.name] = exc.detail.splitlines()[0] if exc.detail else "could not be read"
            return EnvState(env=env.name, applied={})

    readable = [e for e in envs if e.name not in unavailable]
    states = read_states(project.wrangler, readable, readers={e.name: _bind(guarded, e) for e in readable})
    states = {name: state for name, state in states.items() if name not in unavailable}
    drifted = {d.name for d in find_drift(migrations, states)}
    rows: dict[str, MigrationRow] = {m.name: MigrationRow(m.name, m.checksum) for m in migrations.files}
    for env in envs:
        if env.name not in states:
            for m in migrations.files:
                rows[m.name].envs[env.name] = Cell(
                    NO_CREDENTIALS_CELL if unavailable[env.name] == NO_CREDENTIALS else NOT_READ
                )
            continue
        state: EnvState = states[env.name]
        for m in migrations.files:
            applied = state.applied.get(m.name)
            if applied is None:
                cell = Cell(SKIPPED if m.name in env.skip else PENDING)
            elif m.name in drifted and applied.checksum not in (None, m.checksum):
                cell = Cell(DRIFTED, applied.applied_at, applied.checksum)
            else:
                cell = Cell(APPLIED, applied.applied_at, applied.checksum)
            rows[m.name].envs[env.name] = cell
        for name, applied in state.applied.items():
            if name not in rows:
                rows[name] = MigrationRow(name, None)
            if name not in migrations.by_name():
                rows[name].envs[env.name] = Cell(MISSING_FILE, applied.applied_at, applied.checksum)
    for row in rows.values():
        for env in envs:
            row.envs.setdefault(
                env.name, Cell(NOT_READ if env.name in unavailable else PENDING if row.file_checksum else "-")
            )
    warnings = [f"{f.file}: {f.message}" for f in migrations.findings]
    drifted_schemas: dict[str, list[DriftItem]] = {}
    for name, state in states.items():
        recorded = _recorded(project, project.config.env(name), state)
        items = schema_drift(migrations, list(state.applied), state.schema, project.config.schema_cache, recorded)
        if items is None:
            warnings.append(f"{name}: schema drift not checked: its applied migrations do not replay here.")
        else:
            drifted_schemas[name] = items
    return StatusReport(
        envs=[e.name for e in envs],
        migrations=list(rows.values()),
        warnings=warnings,
        wrangler_processes=project.wrangler.processes - start,
        locks={name: state.lock_owner for name, state in states.items()},
        database=project.config.database,
        unavailable=unavailable,
        schema_drift=drifted_schemas,
    )


def empty_report(project: Project) -> StatusReport:
    """The matrix with no column yet (a project whose every environment is a fleet: their columns are added)."""
    rows = [MigrationRow(m.name, m.checksum) for m in project.migrations().files]
    return StatusReport(envs=[], migrations=rows, warnings=[], wrangler_processes=0, database=project.config.database)


def _recorded(project: Project, env: Environment, state: EnvState) -> Callable[[], dict[str, DatabaseSchema]]:
    return lambda: read_recorded_schemas(project.wrangler, env, state.schema)


def _bind(read: Callable[[Environment], EnvState], env: Environment) -> Callable[[], EnvState]:
    return lambda: read(env)


def diff_envs(project: Project, first: Environment, second: Environment) -> list[DriftItem]:
    """How the live schema of `second` differs from that of `first` (missing: only in first; extra: only in
    second): two wrangler processes, side by side."""
    from d1ops.sql.drift import check_drift

    readers = {
        e.name: _bind(lambda env: read_state(project.wrangler, env, with_schema=True), e) for e in (first, second)
    }
    states = read_states(project.wrangler, [first, second], readers=readers)
    a, b = states[first.name].schema, states[second.name].schema
    assert a is not None and b is not None
    return check_drift(a, b)
