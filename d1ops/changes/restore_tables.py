"""Restore some tables in place, keeping every other table's rows (D1 always enforces foreign keys).

Dropping or replacing a parent row fires ON DELETE CASCADE / SET NULL in the tables that reference it, so rows
the backup lacks are deleted by key and the rest upserted (`tablediff.py`). All of it is planned before the
confirmation: the plan exports the live tables once (the pre-restore backup then keeps that export as its dump),
compares them with the backup (what each table gains, changes and loses), counts the rows of other tables those
deletes would change (one process), and refuses unless --allow-cascade. Triggers of the restored tables are
dropped and recreated in the same batch, so they do not fire for restored rows.

Processes: lock + state + schema 1, export 1, dependent rows 1 (when rows are deleted or re-keyed), the batch 1;
a dry run reads the schema instead of locking, and sends no batch.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

from d1ops.backups.dumpfile import load_dump
from d1ops.backups.take import Export, export_sql
from d1ops.changes.restore import BackupRestore, RestoreResult, rows_table
from d1ops.changes.restore_database import warn_virtual
from d1ops.errors import RestoreFailed, WranglerError
from d1ops.project.config import Environment
from d1ops.project.project import Project
from d1ops.run.apply import Batch
from d1ops.run.sequence import Run
from d1ops.run.tracking import LOCK_TABLE
from d1ops.sql.schema import (
    FOREIGN_KEY_QUERY,
    ForeignKey,
    SchemaObject,
    ddl_of,
    foreign_keys_from,
    lower,
    parents_first,
    referencing,
    table_shape,
)
from d1ops.sql.tablediff import Dependent, TablePlan, delete_statements, in_list, key_literals, upsert_statements
from d1ops.sql.text import KEYS_PER_STATEMENT, ident, join_commands, multi_row
from d1ops.support.files import utc_now


class TablesRestore(BackupRestore):
    def __init__(
        self,
        project: Project,
        env: Environment,
        result: RestoreResult,
        folder: Path,
        manifest: dict[str, Any],
        source_db: Path,
        *,
        allow_cascade: bool,
    ) -> None:
        super().__init__(project, env, result, folder, manifest, source_db)
        self.allow_cascade = allow_cascade

    def plan(self, run: Run) -> bool:
        """Read the live rows of the tables (one export, that the pre-restore backup then keeps as its dump), work
        out what each table gains, changes and loses and which rows of other tables change with it, and refuse
        here, before any confirmation, a restore that would change other tables without --allow-cascade."""
        schema = self.schema
        names = [str(t["name"]) for t in self.manifest["tables"]]
        if LOCK_TABLE in names:
            names.remove(LOCK_TABLE)
            run.report.warnings.append(f"{LOCK_TABLE} (d1ops' lock) is never restored; it was skipped")
        self.live = {t.lower(): t for t in schema.tables}
        other = {o.name.lower(): o.type for o in schema.of_type("view")}
        other.update({t.lower(): "virtual table" for t in schema.virtual_tables + schema.shadow_tables})
        clashes = [f"{n} is a {other[n.lower()]} in {self.env.name}" for n in names if n.lower() in other]
        if clashes:
            raise RestoreFailed(f"Cannot restore {', '.join(clashes)}. Nothing was touched.")
        self.names = names
        self.existing = [self.live[n.lower()] for n in names if n.lower() in self.live]
        self.missing = [n for n in names if n.lower() not in self.live]
        with closing(sqlite3.connect(self.source_db)) as conn:  # the foreign keys of the tables to recreate
            conn.row_factory = sqlite3.Row
            source_fks = foreign_keys_from(dict(r) for r in conn.execute(FOREIGN_KEY_QUERY))
        self.fks = list(schema.foreign_keys) + [fk for fk in source_fks if fk.child in self.missing]
        self.order = parents_first(names, self.fks)
        current = run.work / "current.sqlite"
        self.export: Export | None = None
        if self.existing:  # the tables the pre-restore backup holds: one export, read here once
            dump, tables = run.work / "current.sql", tuple(dict.fromkeys(self.backup_tables() or []))
            started = utc_now()
            try:
                export_sql(self.project, self.env, dump, tables=list(tables), whole=False)
            except WranglerError as exc:
                raise RestoreFailed(
                    f"Cannot plan the restore of {self.env.name}: exporting {', '.join(tables)} failed "
                    f"({exc.detail}). Nothing was touched; retry once `d1ops status {self.env.name}` reads it."
                ) from exc
            load_dump(dump, current)
            self.export = Export(dump, tables, started)
        else:
            sqlite3.connect(current).close()
        self.plans = plan_tables(self.source_db, current, self.order, self.live, self.fks, run.report.warnings)
        self.result.tables = [p.outcome for p in self.plans]
        self.result.dependents = count_dependents(run, self.source_db, current, self.plans, self.fks, self.names)
        refuse_changes_outside(self.result, self.env, self.allow_cascade, run)
        return True

    def describe(self) -> str:
        lines = [
            f"Restore {len(self.order)} table(s) of {self.env.name} in place from backup {self.folder}{self.taken()}; "
            "the rows each table gains (INSERTED), changes (UPDATED) and loses (DELETED):",
            rows_table([asdict(t) for t in self.result.tables]),
        ]
        if self.missing:
            lines.append(f"Missing tables are recreated: {', '.join(self.missing)}.")
        if self.result.dependents:  # only with --allow-cascade: without it, the plan refused
            lines.append("Rows of other tables that change with them (--allow-cascade, foreign keys):")
            lines += [f"  {d.describe()}" for d in self.result.dependents]
        else:
            lines.append("No row of another table changes.")
        lines.append("A verified pre-restore backup is taken first.")
        return "\n".join(lines)

    def backup_policy(self) -> str:
        return "required" if self.existing else "skip"  # nothing of them exists: nothing to keep

    def backup_tables(self) -> list[str] | None:
        extra = referencing(self.existing, self.fks) if self.allow_cascade else []
        return self.existing + [t for t in extra if t.lower() not in lower(self.existing)]

    def backup_export(self) -> Export | None:
        return self.export

    def apply(self, run: Run) -> None:
        self.record_safety(run)
        if run.safety_backup is not None:
            run.report.warnings.append(
                f"in place, {', '.join(self.names)} got the backup's rows, compared with {self.env.name} as the "
                f"pre-restore backup {run.safety_backup.path.name} read it: rows an app wrote after that export "
                "were not compared and are still there. For an exact restore, stop the writers first, then check "
                "the counts (`d1ops execute ENV --command 'SELECT count(*) FROM …'`)."
            )
        triggers = [o for o in self.schema.of_type("trigger") if o.sql and o.tbl_name.lower() in lower(self.names)]
        if triggers:
            run.report.warnings.append(
                f"triggers {', '.join(t.name for t in triggers)} did not fire for the restored rows "
                "(dropped and recreated in the same batch)"
            )
        if triggers or self.missing:
            warn_virtual(run, self.schema, self.manifest, always=False)
        plans = self.plans
        batch = Batch(
            "restore", lambda out: write_table_batch(out, self.source_db, plans, triggers), keep_results=False
        )
        self.run_batch(run, batch)


def plan_tables(
    source_db: Path,
    current_db: Path,
    order: list[str],
    live: dict[str, str],
    fks: list[ForeignKey],
    warnings: list[str],
) -> list[TablePlan]:
    """How each table is restored: its key, the rows to delete, insert and update (pure sqlite3)."""
    with closing(sqlite3.connect(source_db)) as conn:
        conn.execute("ATTACH DATABASE ? AS cur", (str(current_db),))
        plans, problems = [], []
        for name in order:
            plan = TablePlan(name, live.get(name.lower()), table_shape(conn, name))
            if plan.live_name:
                current = table_shape(conn, plan.live_name, "cur")
                lacking = [c for c in plan.source.columns if c.lower() not in lower(current.columns)]
                if lacking:
                    problems.append(f"the backup's {name} has columns the table lacks now: {', '.join(lacking)}")
                extra = [c for c in current.columns if c.lower() not in lower(plan.source.columns)]
                if extra:
                    warnings.append(
                        f"{name}.{', '.join(extra)} not in the backup: kept rows keep their value, "
                        "re-inserted rows get the column default"
                    )
                plan.key = current.key
                if plan.key and not lower(plan.key) <= lower(plan.source.columns):
                    problems.append(f"the backup's {name} lacks primary key column(s) {', '.join(plan.key)}")
            else:
                plan.key = plan.source.key
            children = sorted({fk.child for fk in fks if fk.parent.lower() == name.lower()})
            if not plan.key and children:
                problems.append(
                    f"{name} has no primary key and {', '.join(children)} reference(s) it, so its rows "
                    "cannot be matched in place"
                )
            plans.append(plan)
        if problems:
            raise RestoreFailed(
                "Cannot restore in place: " + "; ".join(problems) + ". Nothing was changed. Restore a "
                "whole-database backup instead, or bring the schema back first (`d1ops rollback`)."
            )
        for plan in plans:
            plan.diff(conn)
        return plans


def count_dependents(
    run: Run, source_db: Path, current_db: Path, plans: list[TablePlan], fks: list[ForeignKey], names: list[str]
) -> list[Dependent]:
    """Count the rows outside the backup that reference rows the restore deletes or re-keys (0–n processes)."""
    inside = lower(names)
    by_name = {p.name.lower(): p for p in plans}
    checks: list[tuple[ForeignKey, str, str, list[tuple[Any, ...]]]] = []
    with closing(sqlite3.connect(source_db)) as conn:
        conn.execute("ATTACH DATABASE ? AS cur", (str(current_db),))
        for fk in fks:
            plan = by_name.get(fk.parent.lower())
            if plan is None or fk.child.lower() in inside or not plan.live_name or not plan.key:
                continue
            for event, values in plan.vanishing(conn, list(fk.refs or plan.key)):
                if values:
                    checks.append((fk, event, fk.on_delete if event == "delete" else fk.on_update, values))
    statements: list[str] = []
    for i, (fk, _, _, values) in enumerate(checks):
        head = f"SELECT {i} AS k, count(*) AS n FROM {ident(fk.child)} WHERE {in_list(fk.columns)}"
        statements += multi_row(head, ")", key_literals(fk.columns, values), max_items=KEYS_PER_STATEMENT)
    found = [0] * len(checks)
    for command in join_commands(statements):
        for statement in run.wrangler.execute(run.env, command=command):
            for row in statement.results:
                found[int(row["k"])] += int(row["n"])
    dependents = [
        Dependent(fk.child, fk.parent, fk.columns, event, action, n)
        for (fk, event, action, _), n in zip(checks, found, strict=True)
        if n
    ]
    for d in dependents:
        further = [t for t in referencing([d.table], fks) if t.lower() not in inside]
        if d.action == "CASCADE" and d.event == "delete" and further:
            run.report.warnings.append(
                f"deleting those {d.table} rows can cascade further into {', '.join(further)} (not counted)"
            )
    return dependents


def refuse_changes_outside(result: RestoreResult, env: Environment, allow_cascade: bool, run: Run) -> None:
    """Refuse when rows outside the backup would block the restore, or change without --allow-cascade."""
    blocking = [d for d in result.dependents if d.blocks]
    changing = [d for d in result.dependents if not d.blocks]
    if not blocking and (allow_cascade or not changing):
        if changing and run.dry_run:
            run.report.warnings.append("with --allow-cascade, the dependent rows listed would be changed")
        return
    if blocking:
        advice = (
            f"Delete or re-point the rows of {', '.join(sorted({d.table for d in blocking}))} first "
            "(--allow-cascade cannot override RESTRICT / NO ACTION), or restore a backup that holds those "
            "tables too, or a whole-database backup."
        )
    else:
        advice = (
            "Pass --allow-cascade to restore anyway (the pre-restore backup then also holds those tables), "
            "or restore a backup that holds those tables too."
        )
    raise RestoreFailed(
        f"Restoring {', '.join(t.name for t in result.tables)} into {env.name} would change rows of "
        "tables outside the backup (D1 enforces foreign keys):\n"
        + "\n".join(f"  {d.describe()}" for d in [*blocking, *changing])
        + f"\nNothing was changed. {advice}"
    )


def write_table_batch(out: TextIO, source_db: Path, plans: list[TablePlan], triggers: list[SchemaObject]) -> None:
    out.write("PRAGMA defer_foreign_keys=TRUE;\n")
    with closing(sqlite3.connect(source_db)) as conn:
        created = [p for p in plans if not p.live_name]
        for plan in created:
            out.writelines(f"{sql};\n" for sql in ddl_of(conn, plan.name, ("table",)))
        for trigger in triggers:
            out.write(f"DROP TRIGGER IF EXISTS {ident(trigger.name)};\n")
        for plan in reversed(plans):  # children first
            if plan.deleted_keys is None:
                out.write(f"DELETE FROM {ident(plan.target)};\n")
            else:
                out.writelines(delete_statements(plan.target, plan.key, plan.deleted_keys))
        for plan in plans:  # parents first
            columns = plan.source.columns
            rows = conn.execute(f"SELECT {', '.join(ident(c) for c in columns)} FROM main.{ident(plan.name)}")
            key = plan.key if plan.deleted_keys is not None else []
            out.writelines(upsert_statements(plan.target, columns, key, rows))
        for plan in created:
            out.writelines(f"{sql};\n" for sql in ddl_of(conn, plan.name, ("index", "trigger")))
        for trigger in triggers:
            out.write(f"{trigger.sql};\n")
