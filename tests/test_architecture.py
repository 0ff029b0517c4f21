"""What may import what (docs/architecture.md), read from the code's own import statements. The behaviour this
layering protects is tested where it happens: every batch opens with the lease guard (test_apply_seam.py)."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

from d1ops.backups import layout
from d1ops.project import config
from d1ops.run import tracking

SOURCE = Path(__file__).resolve().parent.parent / "d1ops"


def imports() -> dict[str, set[str]]:
    """module path (e.g. 'cli/base.py') → every module it imports, top level or inside a function."""
    found: dict[str, set[str]] = {}
    for path in SOURCE.rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
                names.update(f"{node.module}.{a.name}" for a in node.names)
        found[path.relative_to(SOURCE).as_posix()] = names
    return found


def importers(prefix: str) -> set[str]:
    return {m for m, names in imports().items() if any(n == prefix or n.startswith(prefix + ".") for n in names)}


def test_the_top_of_the_package_holds_only_the_entry_point_and_the_errors() -> None:
    top = {p.name for p in SOURCE.glob("*.py")}
    assert top == {"__init__.py", "__main__.py", "errors.py"}


def test_only_the_wrangler_seam_starts_processes_and_only_the_cli_imports_click() -> None:
    assert importers("sh") | importers("subprocess") == {"wrangler/runner.py"}
    assert {m for m in importers("click") if not m.startswith("cli/")} == set()


def test_the_cli_calls_only_the_core_never_the_seam_nor_tracking() -> None:
    for module in importers("d1ops.wrangler") | importers("d1ops.run.tracking") | importers("d1ops.sql"):
        assert not module.startswith("cli/"), module


def test_the_sql_layer_starts_no_process() -> None:
    for module, names in imports().items():
        if module.startswith("sql/"):
            assert not {n for n in names if n.startswith("d1ops.wrangler.runner.Wrangler")}, module
            assert not {n for n in names if n.startswith(("d1ops.run", "d1ops.changes", "d1ops.backups"))}, module


def test_changes_send_nothing_themselves_the_run_sends_their_batches() -> None:
    # A change may read (its plan needs the schema), but only run/apply.py writes the lease guard around a batch
    # and sends it; no change builds the guard or the release itself.
    for module in importers("d1ops.run.lease.lease_guard_sql") | importers("d1ops.run.lease.release_lock_sql"):
        assert module in {"run/apply.py", "run/fleet.py"}, module
    assert {m for m in importers("d1ops.run.apply.send_batch")} >= {
        "changes/migrate.py",
        "changes/rollback.py",
        "changes/execute.py",
        "changes/adopt.py",
        "changes/restore.py",
    }


def test_the_four_questions_are_answered_by_file_names() -> None:
    # where the lock is taken, where the run report is written, where the backup before a migration happens,
    # where a restore is planned
    for path in ("run/lease.py", "run/report.py", "run/safety.py", "changes/restore.py"):
        assert (SOURCE / path).is_file(), path


# SQL that writes a tracking table: rows added or removed, the table created, dropped or altered.
TRACKING_WRITE = re.compile(
    r"\b(INSERT(\s+OR\s+\w+)?\s+INTO|REPLACE\s+INTO|DELETE\s+FROM|UPDATE|(CREATE|DROP|ALTER)\s+TABLE"
    r"(\s+IF\s+(NOT\s+)?EXISTS)?)\s+[\"`\[]?(?P<table>d1_migrations|d1ops_migrations|d1ops_lock)\b",
    re.IGNORECASE,
)
# The names the code spells the tables with, read from the module that owns them.
TABLE_NAMES = {
    "WRANGLER_TABLE": tracking.WRANGLER_TABLE,
    "CHECKSUM_TABLE": tracking.CHECKSUM_TABLE,
    "LOCK_TABLE": tracking.LOCK_TABLE,
}


def _text(node: ast.AST) -> str:
    """A string expression as the SQL it makes: literal parts as written, a tracking table's name constant as the
    name, anything else a placeholder."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(_text(v) for v in node.values)
    if isinstance(node, ast.FormattedValue):
        return _text(node.value)
    if isinstance(node, ast.Name | ast.Attribute):
        name = node.id if isinstance(node, ast.Name) else node.attr
        return TABLE_NAMES.get(name, "{…}")
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _text(node.left) + _text(node.right)
    return "{…}"


def strings_of(source: str) -> Iterator[tuple[int, str]]:
    """(line, text) of every string in the code (docstrings left out), f-strings and concatenations rendered."""
    tree = ast.parse(source)
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    for node in ast.walk(tree):
        if id(node) not in docstrings and isinstance(node, ast.Constant | ast.JoinedStr | ast.BinOp):
            yield node.lineno, _text(node)


def tracking_writes(source: str) -> Iterator[tuple[int, str]]:
    """(line, table) of every string in the code (docstrings left out) that writes a tracking table."""
    for line, text in strings_of(source):
        for match in TRACKING_WRITE.finditer(text):
            yield line, match["table"].lower()


def test_tracking_table_sql_is_written_only_where_tracking_and_the_lease_live() -> None:
    # d1_migrations and d1ops_migrations: only run/tracking.py; the lock table: its DDL there, its lease in
    # run/lease.py. Every other module asks them for the SQL (adopted_rows, rolled_back_rows, migration_batch …).
    allowed = {
        "d1_migrations": {"run/tracking.py"},
        "d1ops_migrations": {"run/tracking.py"},
        "d1ops_lock": {"run/tracking.py", "run/lease.py"},
    }
    found: dict[str, set[str]] = {table: set() for table in allowed}
    for path in SOURCE.rglob("*.py"):
        module = path.relative_to(SOURCE).as_posix()
        for line, table in tracking_writes(path.read_text(encoding="utf-8")):
            assert module in allowed[table], f"{module}:{line} writes {table}: ask run/tracking.py (or run/lease.py)"
            found[table].add(module)
    assert found == allowed  # the check sees the SQL where it is: it would see it anywhere else


def test_the_tracking_sql_check_reads_f_strings_concatenation_and_skips_docstrings() -> None:
    source = (
        '"""INSERT INTO d1_migrations is how wrangler records a file (a docstring, not SQL)."""\n'
        'a = f"DELETE FROM {WRANGLER_TABLE} WHERE name = {name};"\n'
        'b = "INSERT OR REPLACE INTO " + tracking.CHECKSUM_TABLE + " VALUES (1)"\n'
        "c = 'update \"d1ops_lock\" SET owner = NULL'\n"
        'd = f"SELECT * FROM {WRANGLER_TABLE}"\n'
    )
    assert sorted(set(tracking_writes(source))) == [(2, "d1_migrations"), (3, "d1ops_migrations"), (4, "d1ops_lock")]


def code_strings(path: Path) -> Iterator[tuple[int, str]]:
    """(line, text) of every string of a module's code, as `strings_of` reads them."""
    return strings_of(path.read_text(encoding="utf-8"))


def test_the_manifest_name_and_the_environment_name_pattern_are_spelled_once() -> None:
    # Every other module uses layout.MANIFEST and config.NAME_PATTERN (messages included).
    pattern = config.NAME_PATTERN.pattern
    manifests, patterns = set(), set()
    for path in SOURCE.rglob("*.py"):
        module = path.relative_to(SOURCE).as_posix()
        for line, text in code_strings(path):
            if layout.MANIFEST in text:
                manifests.add(f"{module}:{line}")
            if text.removeprefix("^").removesuffix("$") == pattern:
                patterns.add(f"{module}:{line}")
    assert {m.split(":")[0] for m in manifests} == {"backups/layout.py"}, manifests
    assert {p.split(":")[0] for p in patterns} == {"project/config.py"}, patterns


def test_exit_codes_are_numbered_only_in_errors_py() -> None:
    # sys.exit(1), ctx.exit(3), SystemExit(130), exit_code = 2: a number that means an exit code is errors.py's
    # EXIT_* (0, success, excepted); os._exit of a forked child is not d1ops's exit code.
    numbered = []
    for path in SOURCE.rglob("*.py"):
        module = path.relative_to(SOURCE).as_posix()
        if module == "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            value: ast.expr | None = None
            if isinstance(node, ast.Call) and node.args:
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
                value = node.args[0] if name in ("exit", "SystemExit") else None
            elif isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                named = [t.attr if isinstance(t, ast.Attribute) else getattr(t, "id", "") for t in targets]
                value = node.value if "exit_code" in named else None
            elif isinstance(node, ast.keyword) and node.arg == "exit_code":
                value = node.value
            if isinstance(value, ast.Constant) and isinstance(value.value, int) and value.value != 0:
                numbered.append(f"{module}:{node.lineno}: {value.value}")
    assert numbered == []
