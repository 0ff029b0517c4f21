"""SQL text: quoting, the one statement tokenizer, and statements bounded in UTF-8 bytes.

Every statement d1ops builds goes through here. D1's limits are bytes, never characters: a statement is at most
100,000 bytes of UTF-8 (a joined INSERT of 74,906 characters of CJK and emoji text was 184,771 bytes and failed
with SQLITE_TOOBIG), and one `--command` argument must stay under the OS's 128 KiB per argument.
"""

from __future__ import annotations

import math
import re
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from d1ops.errors import D1OpsError

D1_STATEMENT_BYTES = 100_000  # D1's documented limit on one SQL statement
STATEMENT_BYTES = 95_000  # what d1ops fills a statement to, below D1's limit
ARGUMENT_BYTES = 100_000  # one --command argument (the OS allows 128 KiB per argument)
ROWS_PER_STATEMENT = 200  # local execute costs ~1 ms per statement: batch rows, but keep statements small
KEYS_PER_STATEMENT = 500


class StatementTooLarge(D1OpsError):
    """One row (or one statement) cannot be given to D1 as it is: over its statement limit, or holding text
    that wrangler would change on the way (see wrangler_safe_literals)."""


def utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))


def quote(value: str | None) -> str:
    """An SQL string literal ('…', quotes doubled); None is NULL."""
    if value is None:
        return "NULL"
    return "'" + value.replace("'", "''") + "'"


def ident(name: str) -> str:
    """An SQL identifier, double-quoted."""
    return '"' + name.replace('"', '""') + '"'


def sql_literal(value: Any) -> str:
    """An SQL literal that reads back as exactly `value` (integers, reals via repr, text, NULL, blobs)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NULL"  # SQLite stores NaN as NULL
        if math.isinf(value):
            return "9e999" if value > 0 else "-9e999"
        return repr(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return "X'" + bytes(value).hex().upper() + "'"
    text = str(value)
    if "\x00" in text:  # a literal cannot hold NUL
        return "CAST(X'" + text.encode("utf-8").hex().upper() + "' AS TEXT)"
    return quote(text)


def row_values(row: Sequence[Any]) -> str:
    """`(v1, v2, …)` as SQL literals."""
    return "(" + ", ".join(sql_literal(v) for v in row) + ")"


# -- the tokenizer ------------------------------------------------------------------------------------------------
_INTERESTING = re.compile(r"[;'\"`\[]|--|/\*")
_CLOSERS = {"'": "'", '"': '"', "`": "`", "[": "]", "--": "\n", "/*": "*/"}


class _Scanner:
    """Finds the ends of statements in streamed text: a `;` outside quotes and comments that completes a
    statement for SQLite itself (so `;` inside a CREATE TRIGGER … BEGIN … END body does not end it)."""

    def __init__(self) -> None:
        self.buffer: list[str] = []
        self.state = ""  # "" outside quotes and comments, else the text that closes them

    def feed(self, text: str) -> Iterator[str]:
        start = 0
        i = 0
        n = len(text)
        while i < n:
            state = self.state
            if state == "":
                match = _INTERESTING.search(text, i)
                if match is None:
                    break
                token = match.group()
                i = match.end()
                if token == ";":
                    self.buffer.append(text[start:i])
                    start = i
                    candidate = "".join(self.buffer)
                    if sqlite3.complete_statement(candidate):
                        self.buffer = []
                        yield candidate
                    else:
                        self.buffer = [candidate]
                else:
                    self.state = _CLOSERS[token]
            else:
                end = text.find(state, i)
                if end < 0:
                    break
                self.state = ""  # a doubled quote reopens it at the next character
                i = end + len(state)
        if start < n:
            self.buffer.append(text[start:])

    def blank(self) -> bool:
        """Between statements: nothing but blanks since the last one (the fast path may take the next line)."""
        return not self.buffer or (self.state == "" and not "".join(self.buffer).strip())

    def rest(self) -> str:
        return "".join(self.buffer)


def iter_statements(chunks: Iterable[str]) -> Iterator[str]:
    """Stream complete statements, each with its `;`, out of text given in pieces (e.g. a file's lines).

    Text after the last `;` that holds more than comments and blanks is yielded with a `;` added; if it is
    not a whole statement even then (a truncated dump), ValueError.
    """
    scanner = _Scanner()
    complete = sqlite3.complete_statement
    for chunk in chunks:
        # The fast path for a dump's lines: one whole statement per line, with its only `;` at the end.
        if scanner.blank() and chunk.count(";") == 1 and chunk.rstrip().endswith(";") and complete(chunk):
            scanner.buffer = []  # only the blank after the previous statement
            yield chunk
        else:
            yield from scanner.feed(chunk)
    rest = scanner.rest()
    if strip_comments(rest):
        if not sqlite3.complete_statement(rest + "\n;"):
            raise UnfinishedStatement.of(rest)
        yield rest + ("\n;" if scanner.state == "\n" else ";")


_OPENERS = {"'": "a string literal (')", '"': 'a quoted name (")', "`": "a quoted name (`)", "[": "a quoted name ([)"}
_OPENERS["/*"] = "a comment (/*)"


class UnfinishedStatement(D1OpsError, ValueError):
    """The SQL ends in the middle of a statement: a quote or comment never closed, or a statement SQLite cannot
    complete (a CREATE TRIGGER without END). `line` is counted from the start of the text given to
    split_statements (1-based); a ValueError too, for the callers that read dumps."""

    def __init__(self, what: str, rest: str, offset: int, line: int | None = None) -> None:
        self.what, self.rest, self.offset = what, rest, offset
        self.line = line if line is not None else rest[:offset].count("\n") + 1
        super().__init__(
            f"line {self.line}: {what} opened here is never closed, so the SQL ends in the middle of a statement"
            if what
            else f"line {self.line}: the statement that starts here is unfinished (a CREATE TRIGGER without END?)"
        )

    @classmethod
    def of(cls, rest: str) -> UnfinishedStatement:
        """What is left open in `rest` (the text after the last complete statement), and where."""
        i, state, opened = 0, "", 0
        while i < len(rest):
            if state == "":
                match = _INTERESTING.search(rest, i)
                if match is None:
                    break
                token, i = match.group(), match.end()
                if token != ";":
                    state, opened = _CLOSERS[token], match.start()
            else:
                end = rest.find(state, i)
                if end < 0:
                    break
                state, i = "", end + len(state)
        if state and state != "\n":
            token = next(t for t, closer in _CLOSERS.items() if closer == state)
            return cls(_OPENERS[token], rest, opened)
        start = len(rest) - len(rest.lstrip())
        return cls("", rest, start)

    def in_text(self, text: str) -> UnfinishedStatement:
        """The same error, its line counted in the whole `text` whose tail is `rest`."""
        before = text[: len(text) - len(self.rest)].count("\n")
        return UnfinishedStatement(self.what, self.rest, self.offset, before + self.rest[: self.offset].count("\n") + 1)


def strip_comments(statement: str) -> str:
    """The statement without leading comment lines and blank lines (what lint and the checks look at)."""
    lines = [ln for ln in statement.splitlines() if ln.strip() and not ln.strip().startswith("--")]
    text = "\n".join(lines).strip()
    while text.startswith("/*"):
        end = text.find("*/")
        if end < 0:
            return ""
        text = text[end + 2 :].strip()
    return text


def split_statements(sql: str) -> list[str]:
    """Complete statements of a text, each without its leading comments and blank lines.

    A text that ends in the middle of a statement raises UnfinishedStatement, which names the line."""
    try:
        return [s for s in (strip_comments(st) for st in iter_statements([sql])) if s and s != ";"]
    except UnfinishedStatement as exc:
        raise exc.in_text(sql) from None


_ROWS_ONLY = re.compile(r"(INSERT|UPDATE|DELETE|REPLACE|SELECT|WITH|VALUES)\b", re.IGNORECASE)


def replay_statement(conn: sqlite3.Connection, statement: str) -> None:
    """One statement of a replay where only the schema counts (lint, drift, the row guard's effects, the
    read-only check). A statement that changes the schema runs; one that only reads or writes rows is compiled
    (EXPLAIN: every name checked, an authorizer told each table it touches) and not run. A migration that
    generates 10,000,000 rows by a recursive CTE replayed for minutes and took a GB of memory before each
    migrate's batch; it now replays in a millisecond."""
    if rows_only(statement):
        conn.execute("EXPLAIN " + strip_comments(statement).rstrip().rstrip(";"))
    else:
        conn.execute(statement)


def rows_only(statement: str) -> bool:
    """Whether a statement only reads or writes rows (never the schema), by its first word."""
    return _ROWS_ONLY.match(strip_comments(statement)) is not None


_KINDS = {"'": "string", '"': "identifier", "`": "identifier", "[": "identifier", "--": "comment", "/*": "comment"}
_OPENER_RE = re.compile(r"'|\"|`|\[|--|/\*")


def code_and_text(sql: str) -> Iterator[tuple[str, str]]:
    """The SQL cut into ("code" | "string" | "identifier" | "comment", text) parts, quotes and comment marks
    kept with their part; joined again they are the SQL."""
    i, n = 0, len(sql)
    while i < n:
        match = _OPENER_RE.search(sql, i)
        if match is None:
            yield "code", sql[i:]
            return
        if match.start() > i:
            yield "code", sql[i : match.start()]
        opener = match.group()
        closer = _CLOSERS[opener]
        end = match.end()
        while True:
            found = sql.find(closer, end)
            if found < 0:
                end = n
                break
            end = found + len(closer)
            if opener in ("'", '"', "`") and sql.startswith(opener, end):  # a doubled quote
                end += 1
                continue
            break
        yield _KINDS[opener], sql[match.start() : end]
        i = end


def protect_transaction_text(sql: str) -> str:
    """The SQL with no "BEGIN TRANSACTION" left for wrangler to find: in a string literal it is sent as
    ('…BEGIN TRANSACT' || 'ION…') (the same TEXT), in a comment it is spelled BEGIN_TRANSACTION. Statements
    that are transactions themselves are left alone (lint refuses them)."""
    if WRANGLER_TRANSACTION not in sql:
        return sql
    parts = []
    for kind, part in code_and_text(sql):
        if WRANGLER_TRANSACTION in part and kind == "string":
            part = "(" + part.replace(WRANGLER_TRANSACTION, "BEGIN TRANSACT' || 'ION") + ")"
        elif WRANGLER_TRANSACTION in part and kind == "comment":
            part = part.replace(WRANGLER_TRANSACTION, "BEGIN_TRANSACTION")
        parts.append(part)
    return "".join(parts)


def sql_for_batch(sql: str) -> str:
    """A change's SQL made safe to send: text wrangler would rewrite protected (protect_transaction_text), a
    final newline, and a final `;` to append statements to."""
    text = protect_transaction_text(sql).rstrip("\n") + "\n"
    if text.strip() and not sqlite3.complete_statement(text):
        text += ";\n"
    return text


# -- statements bounded in bytes ----------------------------------------------------------------------------------
WRANGLER_TRANSACTION = "BEGIN TRANSACTION"


def wrangler_safe_literals(item: str) -> str:
    """SQL literals (a row's values, a list of keys) that wrangler passes on unchanged.

    `wrangler d1 execute --file` deletes the first `BEGIN TRANSACTION;` and the first `COMMIT;` of any file
    that holds the text "BEGIN TRANSACTION" (case-sensitive), string literals included, and refuses a file
    that holds it twice: a restored row reading 'BEGIN TRANSACTION; …' would lose text silently. In literals
    the text can only sit inside a '…' string, so it is split there: 'BEGIN TRANSACT' || 'ION' is the same TEXT.
    """
    if WRANGLER_TRANSACTION not in item:
        return item
    return item.replace(WRANGLER_TRANSACTION, "BEGIN TRANSACT' || 'ION")


def multi_row(
    head: str,
    tail: str,
    items: Iterable[str],
    *,
    max_items: int = ROWS_PER_STATEMENT,
    max_bytes: int = STATEMENT_BYTES,
    what: str = "a row",
) -> Iterator[str]:
    """`head item,\\nitem … tail` statements of at most `max_items` items and `max_bytes` UTF-8 bytes each.

    Items are SQL literals (a row's values, keys), made safe for wrangler (`wrangler_safe_literals`).
    An item that cannot fit in a statement on its own raises StatementTooLarge naming `what` and its position.
    """
    fixed = utf8_len(head) + utf8_len(tail)
    chunk: list[str] = []
    size = fixed
    for position, item in enumerate(items, 1):
        item = wrangler_safe_literals(item)
        length = utf8_len(item) + 2
        if fixed + length > max_bytes:
            raise StatementTooLarge(
                f"{what} number {position} ({_preview(item)}) is {utf8_len(item):,} bytes as SQL: with the "
                "statement around it, "
                f"it exceeds D1's limit of {D1_STATEMENT_BYTES:,} bytes per statement. Store values this large "
                "in R2 (or split them) and keep a reference in D1."
            )
        if chunk and (len(chunk) >= max_items or size + length > max_bytes):
            yield head + ",\n".join(chunk) + tail
            chunk, size = [], fixed
        chunk.append(item)
        size += length
    if chunk:
        yield head + ",\n".join(chunk) + tail


def _preview(item: str, limit: int = 40) -> str:
    return item if len(item) <= limit else item[: limit - 1] + "…"


def insert_statements(
    table: str, columns: Sequence[str] | None, rows: Iterable[Sequence[Any]], *, tail: str = ";\n"
) -> Iterator[str]:
    """Multi-row `INSERT INTO table (columns) VALUES …` statements, each within D1's statement limit."""
    cols = f" ({', '.join(ident(c) for c in columns)})" if columns else ""
    yield from multi_row(
        f"INSERT INTO {ident(table)}{cols} VALUES\n",
        tail,
        (row_values(r) for r in rows),
        what=f"table {ident(table)}: row",
    )


def join_commands(statements: Iterable[str], *, max_bytes: int = ARGUMENT_BYTES) -> Iterator[str]:
    """Join statements (without their `;`) into as few `--command` arguments as the OS's size limit allows."""
    batch: list[str] = []
    size = 0
    for statement in statements:
        length = utf8_len(statement) + 2
        if batch and size + length > max_bytes:
            yield ";\n".join(batch) + ";"
            batch, size = [], 0
        batch.append(statement)
        size += length
    if batch:
        yield ";\n".join(batch) + ";"
