"""The run report: one JSON document per run (what was planned, backed up, applied, read back); its one writer."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from d1ops import __version__
from d1ops.backups.layout import REPORTS
from d1ops.project.project import Project
from d1ops.support.files import unique_stamp, utc_now, write_private
from d1ops.support.secrets import mask_secrets


@dataclass
class MigrationOutcome:
    name: str
    checksum: str
    result: str  # applied | failed | not run | rolled back | unknown
    duration_ms: int | None = None
    error: str | None = None
    timing: str | None = None  # database: measured inside the batch; process: the wrangler call's wall time


@dataclass
class RunReport:
    """One JSON document per run: what was planned, backed up, applied, and read back."""

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
    details: Any = field(default_factory=dict)  # the command's own fields (a dict or a dataclass), at the top level

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(data.pop("details"))
        return data


def finish(project: Project, report: RunReport, start: int) -> RunReport:
    report.finished_at = utc_now()
    report.wrangler_processes = project.wrangler.processes - start
    if not report.dry_run:
        report.report_path = str(write_report(project, report))
    return report


def write_report(project: Project, report: RunReport) -> Path:
    """The one report writer: backups/<env>/[<database>/]reports/<time>-<id>-<command>.json, and a copy in the
    run's backup folder. Names are unique even for two runs in the same millisecond."""
    path = project.config.env_dir(report.env) / REPORTS / f"{unique_stamp()}-{report.command}.json"
    report.report_path = str(path)
    text = mask_secrets(json.dumps(report.to_dict(), indent=2, default=str)) + "\n"  # error: redacted already
    backup = (report.backup or {}).get("path")
    try:
        write_private(path, text)
        if backup and Path(backup).is_dir():
            write_private(Path(backup) / "report.json", text)
    except OSError as exc:
        report.warnings.append(f"could not write the run report ({exc.strerror or exc})")
    return path


def elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
