"""A project: the config of one of its databases and the wrangler that serves it, opened once per command."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from d1ops.project.config import Config, load_configs, pick_database
from d1ops.project.migrations import MigrationSet, discover_migrations
from d1ops.wrangler.runner import Wrangler


@dataclass
class Project:
    config: Config
    wrangler: Wrangler

    def migrations(self) -> MigrationSet:
        return discover_migrations(self.config.migrations_dir, self.config.baseline)


def open_projects(
    config_path: str | os.PathLike[str] | None = None, *, cwd: Path | None = None, database: str | None = None
) -> list[Project]:
    """One Project per database (just `database` when given), sharing one Wrangler (one process count)."""
    configs = load_configs(config_path, cwd)
    if database is not None:
        configs = [pick_database(configs, database)]
    wrangler = Wrangler(configs[0].root, configs[0].wrangler_config)
    return [Project(config=config, wrangler=wrangler) for config in configs]
