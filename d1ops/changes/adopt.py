"""adopt: record history as it is (what Flyway calls baseline) — the migrations up to NAME are marked applied in
an environment without running them, in wrangler's `d1_migrations` and in `d1ops_migrations`, so `wrangler d1
migrations list` and `d1ops status` agree. For a database that must be built from scratch (a history that fails
on an empty database), `--schema-from ENV` first creates the schema another environment has.

It is a run like every other change: lock → plan → confirm on a protected environment → one atomic batch
(schema, both tracking rows of every migration, the schema adopted with them in `d1ops_schema`, the lock's
release) → report. That record is what drift holds the database to when its history does not replay on an
empty database (plus the migrations applied after it).
"""

from __future__ import annotations

import difflib

from d1ops.errors import GateRefused, OutcomeUnknown, UsageError, WranglerError
from d1ops.project.config import Environment
from d1ops.project.migrations import MigrationFile, MigrationSet
from d1ops.project.project import Project
from d1ops.run.apply import Batch, send_batch
from d1ops.run.report import RunReport
from d1ops.run.sequence import Change, Confirm, Run, run_change
from d1ops.run.tracking import TRACKING_TABLES, actor, adopted_rows, record_schema_sql
from d1ops.sql.schema import DatabaseSchema
from d1ops.wrangler.reads import read_schema

ADOPTED_BY = "adopted by"


class AdoptChange(Change):
    command = "adopt"

    def __init__(self, project: Project, env: Environment, through: str, schema_from: Environment | None) -> None:
        super().__init__(env)
        self.project = project
        self.through = through
        self.schema_from = schema_from
        self.record: list[MigrationFile] = []
        self.ddl: list[str] = []
        self.source_schema: DatabaseSchema | None = None

    def prepare(self, run: Run) -> None:
        migrations: MigrationSet = self.project.migrations()
        names = [m.name for m in migrations.files]
        if self.through not in names:
            close = [n for n in names if n == self.through + ".sql"] or difflib.get_close_matches(
                self.through, names, 1
            )
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise UsageError(
                f"--through {self.through}: not a migration in {self.project.config.migrations_dir.name}/.{hint} "
                f"adopt records files that are on disk only; the newest is {names[-1] if names else '(none)'}."
            )
        if self.schema_from is not None and self.schema_from.name == self.env.name:
            raise UsageError("--schema-from must name another environment than the one adopted.")
        self.files = migrations.files[: names.index(self.through) + 1]

    def read(self, run: Run) -> None:
        if self.schema_from is not None:
            try:
                source = read_schema(run.wrangler, self.schema_from)
            except WranglerError as exc:
                raise GateRefused(
                    f"--schema-from {self.schema_from.name}: could not read its schema ({exc.detail}). Nothing was "
                    f"changed in {self.env.name}."
                ) from exc
            self.ddl = schema_statements(source)
            self.source_schema = source
            if not self.ddl:
                raise GateRefused(f"--schema-from {self.schema_from.name}: it holds no tables. Nothing was changed.")
        if run.dry_run:
            run.schema = read_schema(run.wrangler, self.env)
        run.lock_and_read(
            with_schema=True
        )  # the schema in the same call: is there anything to adopt? (a dry run reads)

    def plan(self, run: Run) -> bool:
        assert run.state is not None
        applied = run.state.applied
        skipped = [m.name for m in self.files if m.name in self.env.skip and m.name not in applied]
        self.record = [m for m in self.files if m.name not in applied and m.name not in skipped]
        run.report.plan = [m.name for m in self.record]
        run.report.skipped = skipped
        own = [t for t in run.schema.tables if t not in TRACKING_TABLES] if run.schema is not None else None
        if self.schema_from is None and own == [] and self.record:
            others = [e.name for e in self.project.config.environments if e.name != self.env.name]
            source = others[-1] if others else "ENV"
            raise GateRefused(
                f"{self.env.name} holds no table: adopt records migrations as applied without running them, so "
                f"{self.env.name} would be tracked through {self.through} with none of their tables, and the next "
                f"migrate would fail on the file after it. Nothing was recorded. Either build the schema first from "
                f"an environment that has it: `d1ops adopt {self.env.name} --through {self.through} --schema-from "
                f"{source}`, or let migrate run the history from the start: `d1ops migrate {self.env.name}`."
            )
        if self.schema_from is not None and own is not None:
            if own:
                raise GateRefused(
                    f"--schema-from builds the schema into an empty database, and {self.env.name} already has "
                    f"tables ({', '.join(own[:5])}). Adopt without --schema-from, or start {self.env.name} afresh."
                )
        run.report.details = {
            "through": self.through,
            "schema_from": self.schema_from.name if self.schema_from else None,
            "schema_statements": len(self.ddl) if self.record else 0,
            "already_applied": [m.name for m in self.files if m.name in applied],
        }
        return bool(self.record)

    def describe(self) -> str:
        source = self.schema_from
        schema = f"create the schema of {source.name} ({len(self.ddl)} statements), then " if source else ""
        shown = "\n".join(f"  {m.name}" for m in self.record)
        return f"Adopt on {self.env.name}: {schema}record as applied without running them:\n{shown}"

    def backup_policy(self) -> str:
        return "skip"  # only tracking rows (and, with --schema-from, tables in an empty database)

    def wants_bookmark(self) -> bool:
        return False

    def untouched(self) -> str:
        return f"Nothing was recorded in {self.env.name}."

    def apply(self, run: Run) -> None:
        body = adopt_batch(self.record, self.ddl, f"{ADOPTED_BY} {actor()}")
        # the schema the history is adopted with: what drift holds the database to if that history does not replay
        adopted = self.source_schema if self.source_schema is not None else run.schema
        if adopted is not None:
            body += record_schema_sql(self.through, adopted)
        try:
            send_batch(run, Batch("adopt", body, keep_results=False))
        except OutcomeUnknown:
            raise
        except WranglerError as exc:
            raise GateRefused(
                f"Adopting on {self.env.name} failed: {exc.detail}\nThe batch is atomic: nothing was recorded."
            ) from exc


def schema_statements(schema: DatabaseSchema) -> list[str]:
    """The CREATE statements that rebuild a schema in an empty database: tables (virtual ones too, their shadow
    tables excepted: SQLite makes those), in restore's order; d1ops's and wrangler's own excluded."""
    return [f"{sql};" for sql in schema.restore_ddl(leave_out=TRACKING_TABLES)]


def adopt_batch(files: list[MigrationFile], ddl: list[str], applied_by: str) -> str:
    """The schema (with --schema-from) and both tracking rows of every adopted file; the run adds the lease
    guard and the release."""
    return "".join(f"{statement}\n" for statement in ddl) + adopted_rows(files, applied_by)


def run_adopt(
    project: Project,
    env_name: str,
    *,
    through: str,
    schema_from: str | None = None,
    dry_run: bool = False,
    confirm: Confirm | None = None,
) -> RunReport:
    env = project.config.env(env_name)
    source = project.config.env(schema_from) if schema_from else None
    return run_change(project, AdoptChange(project, env, through, source), dry_run=dry_run, confirm=confirm)
