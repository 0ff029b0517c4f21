"""d1ops's command line (the only package that imports click)."""

from d1ops.cli import databases, migrations, project  # noqa: F401 - registers the commands
from d1ops.cli.base import cli, main

__all__ = ["cli", "main"]
