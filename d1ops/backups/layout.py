"""The names of the backup layout and its choices, defined once: the manifest's file name, the reports folder, the
backup formats, the verification levels. This module imports nothing, so the CLI's options and shell completion
use it before any core module loads."""

from __future__ import annotations

from typing import Any

MANIFEST = "manifest.json"  # in every backup folder: what it holds, its checksums, its verification
REPORTS = "reports"  # backups/<env>/[<database>/]reports/: the run reports

SQL = "sql"  # one dump.sql, as `wrangler d1 export` writes it
JSON = "json"  # one <table>.json per table, and schema.sql
FORMATS = (SQL, JSON)
DEFAULT_FORMAT = SQL

VERIFY_LEVELS = ("quick", "full")  # the checksums and a load into SQLite; and a load into a scratch local D1


def format_of(manifest: dict[str, Any]) -> str:
    """A backup's format (a manifest written before formats existed holds a SQL dump)."""
    return str(manifest.get("format", SQL))
