"""Read-only views of applied state: one environment, or the matrix of migrations × environments."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from d1ops.config import Environment
from d1ops.plans.migrate import find_drift
from d1ops.project import Project
from d1ops.tracking import EnvState, read_states

APPLIED, PENDING, SKIPPED, DRIFTED, MISSING_FILE = "applied", "pending", "skipped", "drifted", "missing-file"


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

    def count(self, status: str, env: str | None = None) -> int:
        return sum(
            1 for m in self.migrations for name, c in m.envs.items() if c.status == status and env in (None, name)
        )

    @property
    def needs_attention(self) -> bool:
        return bool(self.count(PENDING) or self.count(DRIFTED))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["summary"] = {
            env: {s: self.count(s, env) for s in (APPLIED, PENDING, SKIPPED, DRIFTED, MISSING_FILE)}
            for env in self.envs
        }
        return data


def status_of(project: Project, envs: list[Environment]) -> StatusReport:
    """Status of these environments: one wrangler process each, read concurrently."""
    start = project.wrangler.processes
    migrations = project.migrations()
    states = read_states(project.wrangler, envs)
    drifted = {d.name for d in find_drift(migrations, states)}
    rows: dict[str, MigrationRow] = {m.name: MigrationRow(m.name, m.checksum) for m in migrations.files}
    for env in envs:
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
            row.envs.setdefault(env.name, Cell(PENDING if row.file_checksum else "-"))
    warnings = [f"{f.file}: {f.message}" for f in migrations.findings]
    return StatusReport(
        envs=[e.name for e in envs],
        migrations=list(rows.values()),
        warnings=warnings,
        wrangler_processes=project.wrangler.processes - start,
        locks={name: state.lock_owner for name, state in states.items()},
    )
