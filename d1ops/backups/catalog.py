"""The backup catalogue: manifests, what is on disk (list), what may go (prune), and finding one backup.

Layout: `backups/<env>/<UTC time>-<label>/` holds the dump and `manifest.json`; `backups/<env>/reports/` holds
the run reports. With several databases (`databases:` in environments.yaml) each has its own folder one level down,
`backups/<env>/<database>/`, so list, prune and find work per database and never touch another's backups.
A folder whose name starts with `.` is a backup being written (or one a killed run left).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from d1ops.backups.layout import MANIFEST, REPORTS, format_of
from d1ops.errors import BackupFailed, D1OpsError, UsageError
from d1ops.project.config import Config, Environment
from d1ops.project.migrations import sha256_file
from d1ops.project.project import Project
from d1ops.support.files import write_private_json


def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(
            f"{folder} is not a d1ops backup (no {MANIFEST}). Pick one from `d1ops backups list`."
        ) from None
    except (OSError, ValueError) as exc:
        raise BackupFailed(f"{path} cannot be read ({exc}).") from exc
    if not isinstance(manifest, dict) or "tables" not in manifest or "files" not in manifest:
        raise BackupFailed(f"{path} is not a d1ops manifest.")
    return manifest


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    write_private_json(folder / MANIFEST, manifest)


def checksum_problems(folder: Path, manifest: dict[str, Any]) -> list[str]:
    """Files of the backup that are missing or differ from the sha256 the manifest vouches for."""
    problems = []
    for entry in manifest["files"]:
        path = folder / entry["name"]
        if not path.is_file():
            problems.append(f"{entry['name']} is missing")
        elif sha256_file(path) != entry["sha256"]:
            problems.append(f"{entry['name']}: sha256 does not match the manifest (file changed or corrupted)")
    return problems


@dataclass(frozen=True)
class BackupEntry:
    env: str
    database: str
    path: Path
    name: str
    label: str
    started_at: str
    tables: list[str]
    rows: int
    size: int
    verified: bool
    verify_level: str | None
    format: str
    manifest: dict[str, Any] = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "env": self.env,
            "database": self.database,
            "path": str(self.path),
            "name": self.name,
            "label": self.label,
            "started_at": self.started_at,
            "tables": self.tables,
            "rows": self.rows,
            "size": self.size,
            "verified": self.verified,
            "verify_level": self.verify_level,
            "format": self.format,
        }


def backup_folders(config: Config, env_name: str | None = None) -> list[tuple[str, Path]]:
    """(environment, folder) of each of this database's backups on disk; hidden (partial) folders and reports
    are not backups. What list, prune, restore and shell completion all read."""
    found = []
    for name in [env_name] if env_name else config.env_names:
        folder = config.env_dir(name)
        if folder.is_dir():
            found += [(name, c) for c in folder.iterdir() if not c.name.startswith(".") and (c / MANIFEST).is_file()]
    return found


def list_backups(project: Project, env_name: str | None = None) -> list[BackupEntry]:
    """This database's backups on disk, newest first."""
    entries = []
    for name, child in backup_folders(project.config, env_name):
        try:
            manifest = read_manifest(child)
        except D1OpsError:
            continue
        entries.append(
            BackupEntry(
                env=name,
                database=str(manifest.get("database") or project.config.database),
                path=child,
                name=child.name,
                label=str(manifest.get("label", "")),
                started_at=str(manifest.get("started_at", "")),
                tables=[t["name"] for t in manifest["tables"]],
                rows=sum(int(t["rows"]) for t in manifest["tables"]),
                size=sum(int(f["size"]) for f in manifest["files"]),
                verified=bool(manifest.get("verified")),
                verify_level=manifest.get("verify_level"),
                format=format_of(manifest),
                manifest=manifest,
            )
        )
    return sorted(entries, key=lambda e: e.name, reverse=True)


def of_database(manifest: dict[str, Any], env: Environment) -> bool:
    """Whether a backup's manifest names the database `env` reaches: by its name in environments.yaml, its
    binding or its database_name (a manifest that names none is taken to be of the folder's own database)."""
    recorded = str(manifest.get("database") or "")
    return not recorded or recorded in (env.database, env.binding.binding, env.binding.database_name)


def prune_backups(project: Project, env_name: str, keep: int, *, dry_run: bool = False) -> list[BackupEntry]:
    """Delete all but the newest `keep` backups of this database in an environment (of each of its databases,
    for a fleet); the newest verified one is always kept. Another database's backups are never looked at: not
    those in its own folder (`databases:`), nor those a second config file writes into the same folder (its
    manifests name its database)."""
    if keep < 1:
        raise UsageError("--keep must be at least 1.")
    env = project.config.env(env_name)
    entries = [e for e in list_backups(project, env_name) if of_database(e.manifest, env)]
    doomed = []
    for group in _per_database(entries, env):
        newest_verified = next((e for e in group if e.verified), None)
        doomed += [e for e in group[keep:] if e is not newest_verified]
    if not dry_run:
        for entry in doomed:
            shutil.rmtree(entry.path)
    return doomed


def _per_database(entries: list[BackupEntry], env: Environment) -> list[list[BackupEntry]]:
    """The backups of one database together (newest first): a fleet's folder holds one set per database of
    the fleet (its manifest's database_id), kept and pruned apart; any other environment's is one set."""
    if not env.is_fleet:
        return [entries]
    groups: dict[str, list[BackupEntry]] = {}
    for entry in entries:
        key = str(entry.manifest.get("database_id") or entry.manifest.get("database_name") or "")
        groups.setdefault(key, []).append(entry)
    return list(groups.values())


def resolve_backup(project: Project, spec: str) -> Path:
    """A backup folder from a path, a manifest path, or a folder name under backups/<env>/."""
    path = Path(spec)
    if path.is_file() and path.name == MANIFEST:
        path = path.parent
    if path.is_dir():
        return path
    for entry in list_backups(project):
        if entry.name == spec:
            return entry.path
    raise UsageError(f"No backup '{spec}'. Give a backup folder, or a name from `d1ops backups list`.")


def run_reports(project: Project, env_name: str) -> list[dict[str, Any]]:
    """The run reports filed for an environment, oldest first (unreadable ones skipped)."""
    folder = project.config.env_dir(env_name) / REPORTS
    reports = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            reports.append(data)
    return reports


def safety_before(project: Project, env_name: str, migration: str) -> dict[str, Any] | None:
    """The newest run that applied `migration` to the environment: its backup and Time Travel bookmark.

    Returns {"backup": path or None, "bookmark": bookmark or None, "report": report path} or None when no
    report says the migration was applied by d1ops.
    """
    for report in reversed(run_reports(project, env_name)):
        applied = [m.get("name") for m in report.get("migrations") or [] if m.get("result") == "applied"]
        if migration in applied and report.get("command") in ("migrate", "promote"):
            backup = report.get("backup") or {}
            path = backup.get("path") if backup.get("verified") else None
            return {"backup": path, "bookmark": report.get("bookmark"), "report": report.get("report_path")}
    return None
