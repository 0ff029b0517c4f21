"""Shell completion (Click's, for bash, zsh and fish): environment, database, migration and backup names.

Completing reads only environments.yaml and lists folders: no wrangler, no core modules beyond the config.
`d1ops completion SHELL` prints the script to source.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click
from click.shell_completion import CompletionItem, get_completion_class

from d1ops.cli.base import cli

if TYPE_CHECKING:
    from d1ops.project.config import Config

SHELLS = ("bash", "zsh", "fish")
COMPLETE_VAR = "_D1OPS_COMPLETE"


def _config(ctx: click.Context) -> Config | None:
    from d1ops.errors import D1OpsError
    from d1ops.project.config import load_config

    root = ctx.find_root()
    try:
        return load_config(root.params.get("config_path"))
    except (D1OpsError, OSError):
        return None  # no config here: nothing to complete, and never an error while typing


def _items(names: Any, incomplete: str) -> list[CompletionItem]:
    return [CompletionItem(n) for n in names if n.startswith(incomplete)]


def complete_env(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    config = _config(ctx)
    return _items(config.env_names if config else [], incomplete)


def complete_database(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """The project's databases (`database:`, or the names under `databases:`)."""
    from d1ops.errors import D1OpsError
    from d1ops.project.config import load_configs

    try:
        configs = load_configs(ctx.find_root().params.get("config_path"))
    except (D1OpsError, OSError):
        return []
    return _items([c.database for c in configs], incomplete)


def complete_migration(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    config = _config(ctx)
    folder = config.migrations_dir if config else None
    names = sorted(p.name for p in folder.glob("*.sql")) if folder and folder.is_dir() else []
    return _items(names, incomplete)


def complete_backup(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Backup folder names (what `restore` and `backups verify` accept), newest first; paths complete as paths."""
    if "/" in incomplete:
        return [CompletionItem(incomplete, type="file")]
    from d1ops.backups.catalog import backup_folders
    from d1ops.errors import D1OpsError
    from d1ops.project.config import load_configs

    try:
        configs = load_configs(ctx.find_root().params.get("config_path"))
    except (D1OpsError, OSError):
        return []
    names = {folder.name for config in configs for _, folder in backup_folders(config)}  # every database's
    return _items(sorted(names, reverse=True), incomplete)


def completion_script(shell: str, prog_name: str = "d1ops") -> str:
    cls = get_completion_class(shell)
    assert cls is not None
    return cls(cli, {}, prog_name, COMPLETE_VAR).source()


@cli.command("completion")
@click.argument("shell", type=click.Choice(SHELLS))
def completion_cmd(shell: str) -> None:
    """Print the shell completion script for SHELL (environments, migrations, backups complete too).

    \b
    Example (bash; zsh and fish alike):
      d1ops completion bash > ~/.local/share/bash-completion/completions/d1ops
      eval "$(d1ops completion zsh)"          # in ~/.zshrc
      d1ops completion fish > ~/.config/fish/completions/d1ops.fish
    """
    click.echo(completion_script(shell))
