"""Lint that knows D1: SQLite's authorizer and foreign-key graph decide, never words in strings or comments."""

from __future__ import annotations

import json
from pathlib import Path

from d1ops.project.migrations import discover_migrations, lint_errors
from d1ops.sql.lint import lint_history
from tests.conftest import Proj
from tests.test_rowguard import PARENT_AND_CHILDREN, REBUILD

MARK = "-- d1ops: destructive rebuild of accounts\n"


def rules(findings: list) -> list[tuple[str, str, int | None]]:
    return [(f.rule, f.file, f.line) for f in findings]


def test_the_drizzle_rebuild_fails_naming_the_children() -> None:
    found = lint_history([("0001_init.sql", PARENT_AND_CHILDREN), ("0002_rebuild.sql", REBUILD)], judged_from=1)
    drop = [f for f in found if f.rule == "fk-drop"]
    assert len(drop) == 1 and drop[0].level == "error" and drop[0].line == 5
    assert "DROP TABLE accounts" in drop[0].message
    assert "members (ON DELETE CASCADE); notes (ON DELETE SET NULL)" in drop[0].message
    assert "Safe order on D1" in drop[0].message
    assert {f.rule for f in found} == {"fk-drop", "foreign-keys-pragma", "destructive"}
    assert [f.line for f in found if f.rule == "foreign-keys-pragma"] == [1, 7]


def test_a_declared_loss_and_a_destructive_mark_leave_only_the_pragma() -> None:
    sql = "-- d1ops: loses rows in members, notes they are rebuilt next\n" + MARK + REBUILD
    found = lint_history([("0001_init.sql", PARENT_AND_CHILDREN), ("0002_rebuild.sql", sql)], judged_from=1)
    assert {f.rule for f in found} == {"foreign-keys-pragma"}


def test_a_child_the_same_file_drops_is_not_at_risk() -> None:
    sql = MARK + "DROP TABLE accounts;\nDROP TABLE members;\nDROP TABLE notes;\n"
    assert rules(lint_history([("0001.sql", PARENT_AND_CHILDREN), ("0002.sql", sql)], judged_from=1)) == []


def test_a_child_rebuilt_in_the_same_file_onto_the_parent_is_at_risk() -> None:
    sql = MARK + (
        "CREATE TABLE __new_members (id INTEGER PRIMARY KEY, account_id INTEGER NOT NULL "
        "REFERENCES accounts(id) ON DELETE CASCADE, role TEXT);\n"
        "INSERT INTO __new_members (id, account_id) SELECT id, account_id FROM members;\n"
        "DROP TABLE members;\n"
        "ALTER TABLE __new_members RENAME TO members;\n"
        "CREATE TABLE __new_accounts (id INTEGER PRIMARY KEY, name TEXT NOT NULL);\n"
        "INSERT INTO __new_accounts SELECT id, name FROM accounts;\n"
        "DROP TABLE accounts;\n"
        "ALTER TABLE __new_accounts RENAME TO accounts;\n"
    )
    found = lint_history([("0001.sql", PARENT_AND_CHILDREN), ("0002.sql", sql)], judged_from=1)
    assert rules(found) == [("fk-drop", "0002.sql", 8)]
    assert "members (ON DELETE CASCADE); notes (ON DELETE SET NULL)" in found[0].message


def test_a_child_copied_after_the_parent_drop_is_still_at_risk() -> None:
    sql = MARK + (
        "DROP TABLE accounts;\n"
        "CREATE TABLE __new_members (id INTEGER PRIMARY KEY, account_id INTEGER);\n"
        "INSERT INTO __new_members SELECT id, account_id FROM members;\n"
        "DROP TABLE members;\nDROP TABLE notes;\n"
    )
    found = lint_history([("0001.sql", PARENT_AND_CHILDREN), ("0002.sql", sql)], judged_from=1)
    assert [f.rule for f in found] == ["fk-drop"]
    assert "members (ON DELETE CASCADE)" in found[0].message and "notes" not in found[0].message.split(":")[0]


def test_an_explicit_delete_where_is_not_flagged_but_a_bare_delete_or_update_is() -> None:
    history = [("0001.sql", PARENT_AND_CHILDREN)]
    assert lint_history([*history, ("0002.sql", "DELETE FROM notes WHERE id < 10;\n")], judged_from=1) == []
    assert lint_history([*history, ("0002.sql", "UPDATE notes SET body = 'x' WHERE id = 1;\n")], judged_from=1) == []
    bare = "DELETE FROM notes;\nUPDATE members SET account_id = 1;\nALTER TABLE notes DROP COLUMN body;\n"
    found = lint_history([*history, ("0002.sql", bare)], judged_from=1)
    assert rules(found) == [
        ("destructive", "0002.sql", 1),
        ("destructive", "0002.sql", 2),
        ("destructive", "0002.sql", 3),
    ]
    assert "DELETE FROM notes without WHERE" in found[0].message and "DROP COLUMN in notes" in found[2].message


def test_never_fooled_by_words_in_strings_or_comments() -> None:
    sql = (
        "-- DROP TABLE accounts; DELETE FROM notes; PRAGMA foreign_keys=OFF;\n"
        "/* UPDATE members SET account_id = 1; */\n"
        "INSERT INTO notes (body) VALUES ('DROP TABLE accounts; DELETE FROM notes; PRAGMA foreign_keys=OFF');\n"
        "UPDATE notes SET body = 'no WHERE here' WHERE id = 2;\n"
    )
    assert lint_history([("0001.sql", PARENT_AND_CHILDREN), ("0002.sql", sql)], judged_from=1) == []
    tricky = "UPDATE notes SET body = 'WHERE';\n"  # the WHERE is in a string: this UPDATE has none
    assert rules(lint_history([("0001.sql", PARENT_AND_CHILDREN), ("0002.sql", tricky)], judged_from=1)) == [
        ("destructive", "0002.sql", 1)
    ]


def test_transaction_text_in_a_value_is_a_warning_and_down_files_need_no_mark() -> None:
    value = "INSERT INTO notes (body) VALUES ('BEGIN TRANSACTION; keep COMMIT; this');\n"
    found = lint_history(
        [("0001.sql", PARENT_AND_CHILDREN), ("0002.sql", "\n" + value)],
        judged_from=1,
        downs=[("down/0002.sql", "DROP TABLE notes;\n")],
    )
    assert [(f.level, f.rule, f.line) for f in found] == [("warning", "transaction-text", 2)]


def test_lint_json_lists_file_line_rule_message_and_migrate_refuses(empty_proj: Proj, tmp_path: Path) -> None:
    empty_proj.write("migrations/0003_accounts.sql", PARENT_AND_CHILDREN)
    empty_proj.write("migrations/0004_rebuild.sql", MARK + REBUILD.replace("PRAGMA foreign_keys=OFF;\n", ""))
    result = empty_proj.run("lint", "--json")
    assert result.exit_code == 1
    findings = [f for f in json.loads(result.output) if f["level"] == "error"]
    assert findings == [
        {
            "level": "error",
            "file": "0004_rebuild.sql",
            "line": 5,
            "rule": "fk-drop",
            "message": findings[0]["message"],
        },
    ]
    assert [f.rule for f in lint_errors(discover_migrations(empty_proj.migrations))] == ["fk-drop"]
    migrate = empty_proj.run("migrate", "dev")
    assert migrate.exit_code == 2, migrate.output
    assert "0004_rebuild.sql: DROP TABLE accounts on D1 deletes its rows first" in migrate.output
    assert not (empty_proj.root / ".wrangler").exists()  # refused before any wrangler process


def test_baseline_keeps_lint_off_the_adopted_history(tmp_path: Path) -> None:
    (tmp_path / "0001_init.sql").write_text(PARENT_AND_CHILDREN)
    (tmp_path / "0002_rebuild.sql").write_text(REBUILD)
    (tmp_path / "0003_more.sql").write_text("CREATE TABLE more (id INTEGER PRIMARY KEY);\n")
    found = discover_migrations(tmp_path, baseline="0002_rebuild.sql")
    assert not [f for f in found.findings if f.rule]


def test_a_backfill_of_columns_the_same_file_added_needs_no_mark() -> None:
    sql = "ALTER TABLE notes ADD COLUMN preview TEXT;\nUPDATE notes SET preview = substr(body, 1, 10);\n"
    assert lint_history([("0001.sql", PARENT_AND_CHILDREN), ("0002.sql", sql)], judged_from=1) == []
    old = "ALTER TABLE notes ADD COLUMN preview TEXT;\nUPDATE notes SET preview = body, body = NULL;\n"
    found = lint_history([("0001.sql", PARENT_AND_CHILDREN), ("0002.sql", old)], judged_from=1)
    assert rules(found) == [("destructive", "0002.sql", 2)]


GENERATOR = """\
CREATE TABLE slow (id INTEGER PRIMARY KEY, v TEXT);
WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 1000000000000)
INSERT INTO slow SELECT i, printf('%0100d', i) FROM c;
CREATE INDEX slow_v ON slow(v);
"""


def test_replays_compile_rows_but_never_generate_them() -> None:
    """lint, drift, the row guard and the read-only check replay migrations for their schema only: a statement
    that writes rows is compiled (its names checked) and not run, so a generator of 10^12 rows replays at once
    (it ran for minutes and took a GB before each migrate's batch)."""
    import sqlite3

    from d1ops.sql.drift import replay_schema
    from d1ops.sql.text import replay_statement, split_statements

    conn = sqlite3.connect(":memory:")
    for statement in split_statements(GENERATOR):
        replay_statement(conn, statement)
    assert conn.execute("SELECT count(*) FROM slow").fetchone() == (0,)
    assert conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'").fetchall() == [("slow_v",)]
    try:
        replay_statement(conn, "INSERT INTO nosuch VALUES (1)")
    except sqlite3.OperationalError as exc:
        assert "no such table: nosuch" in str(exc)
    else:
        raise AssertionError("a statement naming a missing table must still fail when compiled")
    schema = replay_schema([("0001_slow.sql", GENERATOR)])
    assert schema is not None and {o.name for o in schema.objects} >= {"slow", "slow_v"}
    assert lint_history([("0001_slow.sql", GENERATOR)]) == []


def test_a_scratch_table_the_file_made_drops_freely_and_an_fts5_drop_is_destructive() -> None:
    """Found by linting public histories: a sentinel table created and dropped in the same file lost nothing
    that was there before (it was flagged); a DROP of an FTS5 table loses its rows (it was not)."""
    history = [
        (
            "0001_init.sql",
            "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);\n"
            "CREATE VIRTUAL TABLE notes_fts USING fts5(body);\n",
        ),
        ("0002_check.sql", "CREATE TABLE _guard (n INTEGER);\nINSERT INTO _guard VALUES (1);\nDROP TABLE _guard;\n"),
        ("0003_drop_fts.sql", "DROP TABLE notes_fts;\n"),
        ("0004_drop_notes.sql", "CREATE TABLE _copy AS SELECT * FROM notes;\nDROP TABLE notes;\n"),
    ]
    found = [(f.file, f.line, f.rule) for f in lint_history(history)]
    assert ("0003_drop_fts.sql", 1, "destructive") in found
    assert ("0004_drop_notes.sql", 2, "destructive") in found  # notes was there before this file
    assert not [f for f in found if f[0] == "0002_check.sql"]
