"""A project: its config and the wrangler that serves it, opened once per command."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from d1ops.config import Config, load_config
from d1ops.migrations import MigrationSet, discover_migrations
from d1ops.wrangler import Wrangler


@dataclass
class Project:
    config: Config
    wrangler: Wrangler

    def migrations(self) -> MigrationSet:
        return discover_migrations(self.config.migrations_dir, self.config.baseline)


def open_project(config_path: str | os.PathLike[str] | None = None, *, cwd: Path | None = None) -> Project:
    config = load_config(config_path, cwd)
    return Project(config=config, wrangler=Wrangler(config.root, config.wrangler_config))
