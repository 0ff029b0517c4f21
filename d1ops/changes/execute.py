"""execute: ad-hoc SQL on an environment.

Read-only SQL (as SQLite itself decides, `readonly.py`) runs at once: one process, no lock, no confirmation.
A write is a change like any other: locked, confirmed on a protected environment, preceded by the Time Travel
bookmark (remote) and the verified backup when the environment's policy requires one, and reported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from d1ops.errors import UsageError
from d1ops.project.config import Environment
from d1ops.project.project import Project
from d1ops.run.apply import Batch, send_batch
from d1ops.run.sequence import Change, Confirm, Run, run_change
from d1ops.run.tracking import CHECKSUM_DDL, LOCK_DDL, WRANGLER_DDL
from d1ops.sql.readonly import is_read_only, scratch_schema
from d1ops.sql.text import UnfinishedStatement, sql_for_batch
from d1ops.wrangler.runner import Statement


class ExecuteChange(Change):
    command = "execute"

    def __init__(self, env: Environment, *, sql: str, from_file: bool) -> None:
        super().__init__(env)
        self.sql, self.from_file = sql, from_file
        self.results: list[Statement] = []

    def read(self, run: Run) -> None:
        run.lock_and_read(with_schema=True)  # the schema, for the row guard: in the same call

    def describe(self) -> str:
        shown = self.sql if len(self.sql) < 400 else self.sql[:400] + "…"
        return f"Execute on {self.env.name}:\n{shown}"

    def backup_policy(self) -> str:
        # An optional backup is not worth a whole export before every ad-hoc statement; a required one is.
        return "required" if self.env.backup == "required" else "skip"

    def untouched(self) -> str:
        return f"Nothing was executed on {self.env.name}."

    def apply(self, run: Run) -> None:
        # The user's SQL, then the release of our lock: one call, one atomic batch.
        self.results = send_batch(run, Batch("execute", sql_for_batch(self.sql), guard=[("execute", self.sql)]))
        run.report.details = {"results": [{"results": s.results, "meta": s.meta} for s in self.results]}


def run_execute(
    project: Project, env_name: str, *, command: str | None, file: Path | None, confirm: Confirm | None
) -> tuple[list[dict[str, Any]], bool]:
    """Run ad-hoc SQL: reads at once, writes through the run. Returns the statements' results and whether it
    was a read."""
    env = project.config.env(env_name)
    if file is not None and not file.is_file():
        raise UsageError(f"SQL file {file} does not exist.")
    try:
        sql = file.read_text(encoding="utf-8") if file is not None else (command or "")
    except UnicodeDecodeError as exc:
        raise UsageError(f"SQL file {file} is not UTF-8 (byte {exc.start}): re-save it as UTF-8.") from None
    migrations = project.migrations() if project.config.migrations_dir.is_dir() else None
    tracking = [WRANGLER_DDL, CHECKSUM_DDL, LOCK_DDL]
    readable = [m.path.read_text(encoding="utf-8", errors="replace") for m in (migrations.files if migrations else ())]
    schema = scratch_schema([*tracking, *readable])
    try:
        read_only = is_read_only(sql, schema)
    except UnfinishedStatement as exc:
        where = f"SQL file {file}" if file is not None else "--command"
        raise UsageError(f"{where}: {exc.message}. Nothing was executed on {env.name}.") from None
    if read_only:
        result = project.wrangler.execute(env, command=sql_for_batch(sql))  # protected like every change's SQL
        return [{"results": s.results, "meta": s.meta} for s in result], True
    change = ExecuteChange(env, sql=sql, from_file=file is not None)
    report = run_change(project, change, confirm=confirm)
    return list(report.details.get("results", [])), False
