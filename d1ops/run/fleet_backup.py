"""`migrate FLEET --backup`: before each database's apply, an export through the D1 API, written as a normal
d1ops backup of that database by `backups/take.py` (the same folder layout, manifest and quick verification as
any environment's backup), so `backups list` and `backups verify` know it.

The export is the one `wrangler d1 export --remote` takes (`D1Api.export_sql`: POST …/export until complete, then
the signed URL's download): 3 API calls per database on the emulator (one "active" answer, one "complete", the
download). The folder is `backups/<fleet env>/<UTC time>-migrate-<database>/`; its manifest names the database
(`database_name`, `database_id`) and the bookmark taken just before. A backup that cannot be written or does
not verify fails that database: nothing is applied there.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from d1ops.backups.take import take_backup
from d1ops.errors import BackupFailed
from d1ops.project.config import Environment
from d1ops.project.project import Project
from d1ops.run.tracking import EnvState
from d1ops.sql.schema import DatabaseSchema

if TYPE_CHECKING:
    from d1ops.api.client import D1Api
    from d1ops.run.fleet_targets import Target


class FleetBackups:
    def __init__(self, project: Project, env: Environment, api: D1Api) -> None:
        self.project, self.env, self.api = project, env, api

    def env_of(self, target: Target) -> Environment:
        """The fleet environment as one database: its backups go in the fleet's folder, named for the database."""
        binding = replace(self.env.binding, database_name=target.name, database_id=target.id)
        return replace(self.env, binding=binding)

    def take(
        self, target: Target, state: EnvState, schema: DatabaseSchema | None, bookmark: str | None
    ) -> dict[str, Any]:
        """Back up the whole database (quick-verified); raises BackupFailed (the database is then not touched)."""
        from d1ops.api.client import ApiError

        def export(output: Path, tables: list[str], whole: bool) -> None:
            if not whole:
                self.api.export_sql(target.id, output, tables=tables)
                return
            try:
                self.api.export_sql(target.id, output)
            except ApiError as exc:  # D1 refuses a whole export with FTS5 tables: export them by name, as wrangler
                if "virtual table" not in exc.detail.lower():
                    raise
                self.api.export_sql(target.id, output, tables=tables)

        untouched = f"Nothing was applied to {target.name}."
        try:
            result = take_backup(
                self.project,
                self.env_of(target),
                tables=None,
                label=f"migrate-{target.name}",
                verify="quick",
                head=state.applied_names[-1] if state.applied else None,
                bookmark=bookmark,
                schema=schema,
                exporter=export,
            )
        except BackupFailed as exc:
            raise BackupFailed(f"backup before the apply failed: {exc.message} {untouched}") from exc
        if result is None:
            return {"skipped": "the database holds no tables yet: nothing to back up"}
        if not result.verified:
            raise BackupFailed(f"the backup {result.path} did not verify: {result.problem}. {untouched}")
        summary = result.summary()
        return {k: summary[k] for k in ("path", "sha256", "verified", "verify_level", "tables")}
