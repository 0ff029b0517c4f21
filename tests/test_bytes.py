"""D1's limits are bytes: 60 KB texts of CJK, € and emoji round-trip exactly through backup (quick and full,
SQL and JSON) and restore; a row too large for one statement is a clear error naming the table and the row."""

from __future__ import annotations

import json
from pathlib import Path

from d1ops.sql.text import quote, utf8_len
from tests.conftest import Proj

UNIT = "日本語テキスト€😀abc "  # 12 characters, 32 bytes of UTF-8


def text(i: int, units: int = 1875) -> str:
    return f"post {i}: " + UNIT * units  # ~60,000 bytes, ~24,400 characters


def execute(proj: Proj, sql: str, env: str = "dev") -> None:
    """The data, written behind d1ops' back (conftest's Proj.sql): what is tested is its way through d1ops."""
    proj.sql(sql, env)


def backup(proj: Proj, *args: str) -> dict[str, object]:
    result = proj.run("backup", *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_sixty_kilobyte_multibyte_posts_round_trip_through_backup_and_restore(proj: Proj) -> None:
    posts = {i: text(i) for i in range(1, 17)}  # 16 posts, 960 KB of UTF-8: each statement holds one
    assert 60_000 < utf8_len(posts[1]) < 61_000 and len(posts[1]) < 25_000
    inserts = "".join(f"INSERT INTO big_posts VALUES ({i}, {quote(t)});\n" for i, t in posts.items())
    execute(proj, "CREATE TABLE big_posts (id INTEGER PRIMARY KEY, body TEXT NOT NULL);\n" + inserts)
    sql_full = backup(proj, "big_posts", "--verify", "full")
    json_full = backup(proj, "big_posts", "--format", "json", "--verify", "full")
    for summary in (sql_full, json_full):
        assert summary["verified"] and summary["verify_level"] == "full"
        assert summary["tables"] == {"big_posts": 16}
    json_rows = json.loads((Path(str(json_full["path"])) / "big_posts.json").read_text(encoding="utf-8"))
    assert {r["id"]: r["body"] for r in json_rows} == posts
    for summary in (sql_full, json_full):
        execute(proj, "DELETE FROM big_posts WHERE id > 8; UPDATE big_posts SET body = 'x';")
        restore = proj.run("restore", str(summary["path"]), "--env", "dev", "--json")
        assert restore.exit_code == 0, restore.output
        assert dict(proj.query("SELECT id, body FROM big_posts")) == posts
    assert proj.query("SELECT count(*) FROM big_posts WHERE body <> CAST(CAST(body AS BLOB) AS TEXT)") == [(0,)]


def test_a_row_too_large_for_one_statement_is_a_clear_error_naming_table_and_row(proj: Proj) -> None:
    piece = "€" * 30_000  # 90,000 bytes: two pieces make a 180 KB value, built in statements under the limit
    execute(
        proj,
        "CREATE TABLE huge (id INTEGER PRIMARY KEY, body TEXT);\n"
        "INSERT INTO huge VALUES (1, 'small'), (2, 'small'), (3, 'small');\n"
        f"UPDATE huge SET body = {quote(piece)} WHERE id = 2;\n"
        f"UPDATE huge SET body = body || {quote(piece)} WHERE id = 2;\n",
    )
    full = proj.run("backup", "huge", "--verify", "full")
    assert full.exit_code == 1
    assert 'NOT verified: D1 cannot load it: table "huge": row number 2 ((2,\'€€€' in full.output
    assert "exceeds D1's limit of 100,000 bytes per statement" in full.output

    quick = backup(proj, "huge")
    assert quick["verified"] and quick["tables"] == {"huge": 3}
    execute(proj, "DELETE FROM huge;")
    restore = proj.run("restore", str(quick["path"]), "--env", "dev")
    assert restore.exit_code == 1
    assert "huge" in restore.output and "number 2 ((2, '€€€" in restore.output and "180,007 bytes" in restore.output
    assert "Nothing was restored." in restore.output
    assert proj.query("SELECT count(*) FROM huge") == [(0,)]  # nothing restored


def test_backup_of_a_table_with_a_quote_in_its_name_as_json_verified_in_full(proj: Proj) -> None:
    execute(proj, """CREATE TABLE "it's" (id INTEGER PRIMARY KEY, "a""b" TEXT); INSERT INTO "it's" VALUES (1, 'x');""")
    summary = backup(proj, "it's", "--format", "json", "--verify", "full")
    assert summary["verified"] and summary["verify_level"] == "full" and summary["tables"] == {"it's": 1}


def test_text_that_reads_begin_transaction_and_commit_round_trips_through_full_verify_and_restore(proj: Proj) -> None:
    # wrangler's `execute --file` deletes the first "BEGIN TRANSACTION;" and "COMMIT;" of a file holding that
    # text anywhere (string values included) and refuses a file holding it twice: restores would change rows.
    notes = {
        1: "BEGIN TRANSACTION; UPDATE accounts SET x = 1; COMMIT;",
        2: "twice: BEGIN TRANSACTION; … BEGIN TRANSACTION; and COMMIT; COMMIT;",
        3: "it's 'quoted' BEGIN TRANSACTION€😀",
    }
    # Written through wrangler too, so the setup itself splits the text ('BEGIN TRANS' || 'ACTION').
    split = "BEGIN TRANS' || 'ACTION"
    rows = ", ".join(f"({i}, {quote(t).replace('BEGIN TRANSACTION', split)})" for i, t in notes.items())
    execute(proj, f"CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);\nINSERT INTO notes VALUES {rows};\n")
    assert dict(proj.query("SELECT id, body FROM notes")) == notes
    summary = backup(proj, "notes", "--verify", "full")
    assert summary["verified"] and summary["verify_level"] == "full"
    execute(proj, "UPDATE notes SET body = 'changed';")
    restore = proj.run("restore", str(summary["path"]), "--env", "dev", "--json")
    assert restore.exit_code == 0, restore.output
    assert dict(proj.query("SELECT id, body FROM notes")) == notes
    assert proj.query("SELECT typeof(body) FROM notes GROUP BY 1") == [("text",)]
