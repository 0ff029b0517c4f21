"""What a fleet run reports: one outcome per database and the summary (`migrate FLEETENV --json`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from d1ops.errors import D1OpsError
from d1ops.project.config import Environment

RESULTS = ("applied", "up-to-date", "failed", "skipped")
Confirm = Callable[[Environment, str], None]
Progress = Callable[["FleetProgress"], None]


@dataclass
class DbOutcome:
    name: str
    id: str
    result: str  # applied | up-to-date | failed | skipped
    applied: list[str] = field(default_factory=list)
    bookmark: str | None = None
    error: str | None = None
    ms: int = 0
    failed_migration: str | None = None
    drift: list[str] = field(default_factory=list)  # schema objects unlike the migrations' (refused, or accepted)
    backup: dict[str, Any] | None = None  # --backup: the backup taken before the apply (path, verified, ...)
    sent_by: str | None = None  # how the batch went: "query", or "import" (over D1's limit for one request)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FleetProgress:
    done: int
    total: int
    failures: int
    started: float

    @property
    def rate(self) -> float:
        return self.done / max(1e-6, time.monotonic() - self.started)


@dataclass
class FleetReport:
    env: str
    databases: list[DbOutcome]
    api_calls: int = 0
    seconds: float = 0.0
    journal: str | None = None
    resumed: str | None = None  # the run id this run finished, if it resumed one
    interrupted: bool = False
    shard: str | None = None
    error: str | None = None
    report_path: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[DbOutcome]:
        return [d for d in self.databases if d.result == "failed"]

    def summary(self) -> dict[str, Any]:
        counts = {r: sum(1 for d in self.databases if d.result == r) for r in RESULTS}
        touched = sum(1 for d in self.databases if d.result != "skipped") or 1
        return {
            "total": len(self.databases),
            **counts,
            "api_calls": self.api_calls,
            "api_calls_per_database": round(self.api_calls / touched, 2),
            "seconds": round(self.seconds, 2),
            "journal": self.journal,
            "resumed": self.resumed,
            "interrupted": self.interrupted,
            "shard": self.shard,
        }

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "env": self.env,
            "databases": [d.to_dict() for d in self.databases],
            "summary": self.summary(),
        }
        if self.warnings:
            doc["warnings"] = self.warnings
        if self.error:
            doc["error"] = self.error
        if self.report_path:
            doc["report_path"] = self.report_path
        return doc


class FleetFailed(D1OpsError):
    """Some databases of a fleet failed (or the run stopped): the report says which, and what each holds."""

    def __init__(self, message: str, report: FleetReport) -> None:
        super().__init__(message)
        self.report = report
