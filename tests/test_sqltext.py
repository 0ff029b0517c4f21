"""SQL text: the one tokenizer, literals, and statements bounded in UTF-8 bytes (no wrangler)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from d1ops.sql.text import (
    D1_STATEMENT_BYTES,
    StatementTooLarge,
    insert_statements,
    iter_statements,
    join_commands,
    multi_row,
    split_statements,
    sql_literal,
    utf8_len,
)


def test_tokenizer_keeps_trigger_bodies_quotes_and_comments_whole() -> None:
    sql = (
        "CREATE TRIGGER t AFTER INSERT ON a BEGIN\n  UPDATE b SET x = 1; -- not the end;\n  DELETE FROM c; END;\n"
        "SELECT 'a;b', \"c;d\", [e;f], `g;h`; /* ; */ SELECT 1; SELECT 'it''s;'"
    )
    assert list(iter_statements([sql])) == [
        "CREATE TRIGGER t AFTER INSERT ON a BEGIN\n  UPDATE b SET x = 1; -- not the end;\n  DELETE FROM c; END;",
        "\nSELECT 'a;b', \"c;d\", [e;f], `g;h`;",
        " /* ; */ SELECT 1;",
        " SELECT 'it''s;';",
    ]


def test_tokenizer_streams_pieces_split_anywhere() -> None:
    sql = "INSERT INTO t VALUES ('x;\ny');\nSELECT 2;\n"
    whole = list(iter_statements([sql]))
    for cut in range(1, len(sql)):
        assert [s.strip() for s in iter_statements([sql[:cut], sql[cut:]])] == [s.strip() for s in whole]


def test_tokenizer_refuses_a_truncated_statement() -> None:
    with pytest.raises(ValueError, match="middle of a statement"):
        list(iter_statements(["INSERT INTO t VALUES ('unterminated"]))


def test_split_statements_drops_comment_lines_and_empty_statements() -> None:
    assert split_statements("-- header\n\nBEGIN TRANSACTION;\n;\nCREATE TABLE x(a); COMMIT;") == [
        "BEGIN TRANSACTION;",
        "CREATE TABLE x(a);",
        "COMMIT;",
    ]


@pytest.mark.parametrize("value", [None, 0, -7, 2**62, 0.1 + 0.2, -1.5e-300, "it's", "a\x00b", b"\x00\xff", "€😀漢"])
def test_sql_literal_reads_back_exactly(value: object) -> None:
    conn = sqlite3.connect(":memory:")
    assert conn.execute(f"SELECT {sql_literal(value)}").fetchone()[0] == value


def test_multi_row_statements_stay_under_the_byte_limit_with_multibyte_text() -> None:
    # ~60 KB of CJK, € and emoji per row: 3-4 bytes a character, so characters would undercount by 2-4x.
    text = ("漢字€😀" * 5000)[:20000]
    rows = [(i, text) for i in range(12)]
    statements = list(insert_statements("posts", ["id", "body"], rows))
    assert all(utf8_len(s) < D1_STATEMENT_BYTES for s in statements)
    assert len(statements) == 12  # one ~65 KB row per statement: two would exceed 100,000 bytes
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE posts (id INTEGER PRIMARY KEY, body TEXT)")
    for statement in statements:
        conn.execute(statement)
    assert conn.execute("SELECT count(*), sum(body = ?) FROM posts", (text,)).fetchone() == (12, 12)


def test_a_row_too_large_for_one_statement_is_named() -> None:
    rows = [(1, "small"), (2, "€" * 40_000)]  # 120,000 bytes, 40,000 characters
    with pytest.raises(StatementTooLarge, match=r"table \"posts\": row number 2 \(\(2, .€€.*\) is 120,0.. bytes"):
        list(insert_statements("posts", ["id", "body"], rows))


def test_multi_row_caps_rows_per_statement() -> None:
    statements = list(multi_row("INSERT INTO t VALUES ", ";", (f"({i})" for i in range(450)), max_items=200))
    assert [s.count("(") for s in statements] == [200, 200, 50]


def test_join_commands_counts_bytes() -> None:
    statements = ["SELECT '" + "€" * 10_000 + "'"] * 10  # 30 KB each
    commands = list(join_commands(statements))
    assert all(utf8_len(c) <= 100_000 for c in commands)
    assert sum(c.count("SELECT") for c in commands) == 10


def test_literals_holding_begin_transaction_are_split_for_wrangler_and_read_back_the_same() -> None:
    value = "x BEGIN TRANSACTION; y 'q' BEGIN TRANSACTION COMMIT;"
    [statement] = multi_row("SELECT ", ";", [sql_literal(value)])
    assert "BEGIN TRANSACTION" not in statement
    assert sqlite3.connect(":memory:").execute(statement).fetchone()[0] == value


def test_load_dump_joins_one_row_inserts_without_touching_values_that_look_like_statements(tmp_path: Path) -> None:
    from d1ops.backups.dumpfile import load_dump

    dump = tmp_path / "dump.sql"
    dump.write_text(
        "PRAGMA defer_foreign_keys=TRUE;\n"
        'CREATE TABLE "a""b" (id INTEGER PRIMARY KEY, t TEXT, b BLOB);\nCREATE TABLE c (x);\n'
        """INSERT INTO "a""b" VALUES(1,'x);\nINSERT INTO "a""b" VALUES(9,''zz'');',NULL);\n"""
        "INSERT INTO \"a\"\"b\" VALUES(2,'multi\nline',X'00FF');\n"
        'INSERT INTO "c" VALUES(1);\nINSERT INTO "c" VALUES(2);\n'
        "CREATE TRIGGER tr AFTER INSERT ON c BEGIN INSERT INTO c VALUES (99); END;\n"
        + "".join(f'INSERT INTO "c" VALUES({i});\n' for i in range(3, 1203))  # more than one joined statement
        + 'INSERT INTO "a""b" VALUES(3,\'last\',NULL);',  # wrangler ends its dump without a newline
        encoding="utf-8",
    )
    load_dump(dump, tmp_path / "loaded.sqlite")
    conn = sqlite3.connect(tmp_path / "loaded.sqlite")
    assert conn.execute('SELECT * FROM "a""b" ORDER BY id').fetchall() == [
        (1, 'x);\nINSERT INTO "a""b" VALUES(9,\'zz\');', None),
        (2, "multi\nline", b"\x00\xff"),
        (3, "last", None),
    ]
    assert conn.execute("SELECT count(*), min(x), max(x) FROM c").fetchone() == (1202, 1, 1202)  # no trigger fired


def test_compact_dump_splits_begin_transaction_in_every_row_and_refuses_it_elsewhere(tmp_path: Path) -> None:
    import io

    from d1ops.backups.dumpfile import write_compact_dump

    dump = tmp_path / "dump.sql"
    rows = ["'a; b; c'", "'BEGIN TRANSACTION; x'", "'multi\nline BEGIN TRANSACTION'", "'BEGIN TRANSACTION'"]
    dump.write_text(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);\n"
        + "".join(f'INSERT INTO "t" VALUES({i},{v});\n' for i, v in enumerate(rows)),
        encoding="utf-8",
    )
    out = io.StringIO()
    write_compact_dump(dump, out)
    assert "BEGIN TRANSACTION" not in out.getvalue()
    assert out.getvalue().count("INSERT INTO") == 1  # rows after a statement the slow path cut are joined too
    conn = sqlite3.connect(":memory:")
    conn.executescript(out.getvalue())
    assert [r[0] for r in conn.execute("SELECT v FROM t ORDER BY id")] == [r[1:-1] for r in rows]

    dump.write_text("CREATE TABLE u(v TEXT DEFAULT 'BEGIN TRANSACTION');\n", encoding="utf-8")
    with pytest.raises(StatementTooLarge, match="BEGIN TRANSACTION"):
        write_compact_dump(dump, io.StringIO())
