"""A fake Cloudflare D1 REST API, good enough to drive the real ``wrangler`` binary in tests.

Point wrangler at it with ``CLOUDFLARE_API_BASE_URL=<server.base_url>``. Each database is one SQLite
file under ``data_dir``; time-travel bookmarks are saved copies of that file. Requests to different databases run
side by side (a lock per database); the account's list of databases is paginated as Cloudflare's is.

Run standalone: ``python -m tests.cloudflare.server --port 8787 --token T --account A --data DIR``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import secrets
import shutil
import sqlite3
import threading
import time
import uuid as uuidlib
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

API_PREFIX = "/client/v4"
REGION = "WEUR"
# What real D1 answers to BEGIN/COMMIT/SAVEPOINT (it already runs every request in a transaction).
TXN_MESSAGE = (
    "To execute a transaction, please use the state.storage.transaction() or "
    "state.storage.transactionSync() APIs instead of the SQL BEGIN TRANSACTION or SAVEPOINT statements. "
    "The JavaScript API is safer because it will automatically roll back on exceptions, and because it "
    "interacts correctly with Durable Objects' automatic atomic write coalescing.: SQLITE_AUTH"
)
_TXN_KEYWORDS = {"BEGIN", "COMMIT", "END", "ROLLBACK", "SAVEPOINT", "RELEASE"}
_TOKEN = re.compile(
    r"""'(?:[^']|'')*'?|"(?:[^"]|"")*"?|`[^`]*`?|\[[^\]]*\]?|--[^\n]*|/\*.*?(?:\*/|\Z)|;|\s+|[^'"`\[;\s\-/]+|.""",
    re.S,
)


class ApiError(Exception):
    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class DropConnection(Exception):
    """Close the connection without answering (a fault mode: the request's effect happened, the answer is lost)."""


def sql_error(message: str) -> ApiError:
    return ApiError(400, 7500, message)


# ---------------------------------------------------------------------------------------------- SQL helpers


def _is_code(token: str) -> bool:
    return not (token.isspace() or token.startswith(("--", "/*")))


def split_sql(sql: str) -> list[str]:
    """Split a script into statements (quotes, comments and CREATE TRIGGER ... END bodies respected)."""
    statements, buf = [], ""
    for token in _TOKEN.findall(sql):
        buf += token
        if token == ";" and sqlite3.complete_statement(buf):
            statements.append(buf)
            buf = ""
    statements.append(buf)
    return [s.strip() for s in statements if any(_is_code(t) and t != ";" for t in _TOKEN.findall(s))]


def _first_keyword(statement: str) -> str:
    return next((t for t in _TOKEN.findall(statement) if _is_code(t)), "").upper()


def _errname(exc: sqlite3.Error) -> str:
    name = getattr(exc, "sqlite_errorname", None) or "SQLITE_ERROR"
    return "_".join(name.split("_")[:2])  # D1 reports the primary code: SQLITE_CONSTRAINT, not ..._FOREIGNKEY


_CF_GUARDED = {
    sqlite3.SQLITE_READ,
    sqlite3.SQLITE_INSERT,
    sqlite3.SQLITE_UPDATE,
    sqlite3.SQLITE_DELETE,
    sqlite3.SQLITE_DROP_TABLE,
}


def _authorizer(action: int, table: str | None, *_: Any) -> int:
    """Like D1: user SQL may not read, write or drop the internal _cf_* tables."""
    denied = action in _CF_GUARDED and (table or "").lower().startswith("_cf_")
    return sqlite3.SQLITE_DENY if denied else sqlite3.SQLITE_OK


def _js_number(value: int | float) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    return re.sub(r"e([+-])0*(\d)", r"e\1\2", repr(value))


def _quote_string(value: str) -> str:
    out = "'" + value.replace("'", "''").replace("\n", "\\n").replace("\r", "\\r") + "'"
    if "\r" in value:
        out = f"replace({out},'\\r',char(13))"
    if "\n" in value:
        out = f"replace({out},'\\n',char(10))"
    return out


def _literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bytes):
        return f"X'{value.hex()}'"
    if isinstance(value, str):
        return _quote_string(value)
    return _js_number(value)


def _qid(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def dump_sql(conn: sqlite3.Connection, tables: list[str], no_schema: bool, no_data: bool) -> Iterator[str]:
    """The dump D1 (and `wrangler d1 export --local`, via miniflare's dumpSql) produces, line by line."""
    yield "PRAGMA defer_foreign_keys=TRUE;"
    wanted = set(tables)
    rows = conn.execute(
        "SELECT name, sql FROM sqlite_schema WHERE type = 'table' AND sql NOT NULL "
        "ORDER BY tbl_name = 'sqlite_sequence', rowid"
    ).fetchall()
    for table, sql in rows:
        if wanted and table not in wanted:
            continue
        if table == "sqlite_sequence":
            if not no_schema:
                yield "DELETE FROM sqlite_sequence;"
        elif re.match(r"sqlite_stat.", table):
            if not no_schema:
                yield "ANALYZE sqlite_schema;"
        else:
            if sql.startswith("CREATE VIRTUAL TABLE"):
                raise ApiError(400, 7500, "D1 Export error: cannot export databases with Virtual Tables (fts5)")
            if table.startswith(("_cf_", "sqlite_")):
                continue
            if not no_schema:
                yield (
                    f"CREATE TABLE IF NOT EXISTS {sql[13:]};" if re.search(r"CREATE TABLE ['\"]", sql) else f"{sql};"
                )
        if no_data:
            continue
        columns = ", ".join(_qid(c[1]) for c in conn.execute(f"PRAGMA table_info={_qid(table)}"))
        for row in conn.execute(f"SELECT {columns} FROM {_qid(table)};"):
            yield f"INSERT INTO {_qid(table)} VALUES({','.join(_literal(v) for v in row)});"
    if not no_schema:
        for name, sql in conn.execute(
            "SELECT name, sql FROM sqlite_schema WHERE sql NOT NULL AND type IN ('index', 'trigger', 'view') "
            "ORDER BY type COLLATE NOCASE"
        ):
            if not wanted or name in wanted:
                yield f"{sql};"


# ---------------------------------------------------------------------------------------------- state


@dataclass
class Database:
    uuid: str
    name: str
    created_at: str
    path: Path
    bookmarks: list[tuple[str, float, Path]] = field(default_factory=list)  # (id, unix time, snapshot)
    import_job: dict[str, Any] | None = None
    export_job: dict[str, Any] | None = None
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)  # one request at a time on it

    @property
    def bookmark(self) -> str:
        return self.bookmarks[-1][0]


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_time(value: str) -> float:
    if value.isdigit():
        return int(value) / (1000 if len(value) > 10 else 1)
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class FakeD1Server:
    """Fake D1 REST API on 127.0.0.1. Thread-safe: a request on a database holds that database's lock; the
    account-wide lock (`_lock`) guards only the table of databases, uploads and counters, never a query."""

    def __init__(self, data_dir: Path, token: str, account_id: str, port: int = 0) -> None:
        self.data_dir = Path(data_dir)
        self.token = token
        self.account_id = account_id
        self.requests: list[dict[str, Any]] = []  # appended under _lock; list.append is atomic anyway
        self._requested_port = port
        self._lock = threading.RLock()
        self._dbs: dict[str, Database] = {}
        self._uploads: dict[str, dict[str, Any]] = {}  # upload token -> {filename, data, etag}
        self._downloads: dict[str, bytes] = {}
        self._seq = 0x85
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        # Fault modes, each fired once then cleared: "drop-after-import" runs an import's SQL on `ingest`, then
        # closes the connection without an answer (the client cannot know the import happened); "export-error"
        # makes the next export end in status "error".
        self.faults: set[str] = set()

    # -- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> FakeD1Server:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self._requested_port), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.fake = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-d1", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.origin + API_PREFIX

    # -- helpers for tests ---------------------------------------------------------------------------------

    def create_database(self, name: str) -> str:
        with self._lock:
            if any(db.name == name for db in self._dbs.values()):
                raise ApiError(400, 7502, "A database with that name already exists.")
            uuid = str(uuidlib.uuid4())
            db = Database(uuid, name, _now_iso(), self.data_dir / f"{uuid}.sqlite3")
            with closing(sqlite3.connect(db.path, isolation_level=None)) as conn:  # real D1 has this table
                conn.execute("PRAGMA synchronous=OFF")
                conn.execute("CREATE TABLE _cf_KV (key TEXT PRIMARY KEY, value BLOB) WITHOUT ROWID")
            self._dbs[uuid] = db
            self._new_bookmark(db)
            return uuid

    def database_path(self, uuid: str) -> Path:
        return self._get_db(uuid).path

    def databases(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self._describe(db) for db in self._dbs.values()]

    def execute(self, uuid: str, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        """Run SQL exactly as the /query endpoint does (atomic; a write records a new bookmark)."""
        db = self._get_db(uuid)
        with db.lock:
            return self._execute(db, sql, params)

    def bookmarks(self, uuid: str) -> list[str]:
        db = self._get_db(uuid)
        with db.lock:
            return [b[0] for b in db.bookmarks]

    # -- internals -----------------------------------------------------------------------------------------

    def _get_db(self, id_or_name: str) -> Database:
        with self._lock:
            db = self._dbs.get(id_or_name) or next((d for d in self._dbs.values() if d.name == id_or_name), None)
            if db is None:
                raise ApiError(404, 7404, f"The database {id_or_name} could not be found")
            return db

    def _new_bookmark(self, db: Database) -> str:
        with self._lock:
            self._seq += 1
            seq = self._seq
        digest = hashlib.md5(f"{db.uuid}:{seq}".encode()).hexdigest()
        bookmark = f"{seq:08x}-0000024c-00004c6d-{digest}"
        snapshot = self.data_dir / "bookmarks" / db.uuid / f"{bookmark}.sqlite3"
        snapshot.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(db.path, snapshot)
        db.bookmarks.append((bookmark, time.time(), snapshot))
        return bookmark

    def _describe(self, db: Database) -> dict[str, Any]:
        with closing(sqlite3.connect(db.path)) as conn:
            num_tables = conn.execute(
                "SELECT count(*) FROM sqlite_schema WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name NOT LIKE '\\_cf\\_%' ESCAPE '\\'"
            ).fetchone()[0]
        return {
            "uuid": db.uuid,
            "name": db.name,
            "created_at": db.created_at,
            "version": "production",
            "num_tables": num_tables,
            "file_size": db.path.stat().st_size,
            "jurisdiction": None,
        }

    def _execute(
        self, db: Database, sql: str, params: list[Any] | None = None, raw: bool = False
    ) -> list[dict[str, Any]]:
        """Run a script atomically (like D1: all statements commit together or none do)."""
        return self._execute_batch(db, [(sql, params)], raw=raw)

    def _execute_batch(
        self, db: Database, items: list[tuple[str, list[Any] | None]], raw: bool = False
    ) -> list[dict[str, Any]]:
        """Run queries (each a script with its own params) as one transaction: a result per statement."""
        statements = [(s, params) for sql, params in items for s in split_sql(sql)]
        if not statements:
            raise sql_error("No SQL statements detected.")
        if any(_first_keyword(s) in _TXN_KEYWORDS for s, _ in statements):
            raise sql_error(TXN_MESSAGE)
        conn = sqlite3.connect(db.path, isolation_level=None)
        results, changed = [], False
        try:
            # No fsync: a test's data dies with the test, and a fleet of 1,000 must measure d1ops, not the disk.
            conn.execute("PRAGMA synchronous=OFF")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.set_authorizer(_authorizer)
            conn.execute("BEGIN IMMEDIATE")
            for statement, params in statements:
                start, before = time.perf_counter(), conn.total_changes
                schema_before = conn.execute("PRAGMA schema_version").fetchone()[0]
                cur = conn.execute(statement, params or [])
                columns = [d[0] for d in cur.description or ()]
                rows = [[list(v) if isinstance(v, bytes) else v for v in row] for row in cur.fetchall()]
                changes = conn.total_changes - before
                duration = (time.perf_counter() - start) * 1000
                changed_db = changes > 0 or conn.execute("PRAGMA schema_version").fetchone()[0] != schema_before
                changed |= changed_db
                page_count, page_size = (conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "page_size"))
                meta = {
                    "served_by": "v3-prod",
                    "served_by_region": REGION,
                    "served_by_primary": True,
                    "timings": {"sql_duration_ms": duration},
                    "duration": duration,
                    "changes": changes,
                    "last_row_id": cur.lastrowid or 0,
                    "changed_db": changed_db,
                    "size_after": page_count * page_size,
                    "rows_read": len(rows) + changes,
                    "rows_written": changes,
                }
                objects = [dict(zip(columns, row, strict=False)) for row in rows]
                results.append(
                    {
                        "results": {"columns": columns, "rows": rows} if raw else objects,
                        "success": True,
                        "meta": meta,
                    }
                )
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise sql_error(f"{exc}: {_errname(exc)}") from exc
        finally:
            conn.close()
        if changed:
            self._new_bookmark(db)
        return results

    # -- endpoint handlers (called with the database's lock held; create, list and delete with `_lock`) -----

    def api_create(self, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise ApiError(400, 7400, "The request is malformed: name is required")
        db = self._dbs[self.create_database(name)]
        return {**self._describe(db), "created_in_region": REGION}

    def api_list(self, query: dict[str, str], **_: Any) -> tuple[list[dict[str, Any]], dict[str, int]]:
        """Cloudflare's list: `name` filters (exact here), `page` from 1, `per_page` up to 10000 (default 1000);
        result_info gives page, per_page, count and total_count."""
        try:
            page, per_page = int(query.get("page") or 1), int(query.get("per_page") or 1000)
        except ValueError as exc:
            raise ApiError(400, 7400, f"The request is malformed: {exc}") from exc
        if page < 1 or not 1 <= per_page <= 10000:
            raise ApiError(400, 7400, "The request is malformed: page must be >= 1 and per_page 1..10000")
        with self._lock:
            dbs = [db for db in self._dbs.values() if db.name == query.get("name", db.name)]
        chosen = dbs[(page - 1) * per_page : page * per_page]
        items = [self._describe(db) for db in chosen]
        return items, {"page": page, "per_page": per_page, "count": len(items), "total_count": len(dbs)}

    def api_info(self, db: Database, **_: Any) -> dict[str, Any]:
        info = self._describe(db)
        del info["jurisdiction"]
        return {**info, "running_in_region": REGION, "read_replication": {"mode": "disabled"}}

    def api_delete(self, db: Database, **_: Any) -> None:
        del self._dbs[db.uuid]
        db.path.unlink(missing_ok=True)
        shutil.rmtree(self.data_dir / "bookmarks" / db.uuid, ignore_errors=True)

    def api_query(self, db: Database, body: dict[str, Any], **_: Any) -> list[dict[str, Any]]:
        return self._execute_batch(db, _sized(_query_items(body)))

    def api_raw(self, db: Database, body: dict[str, Any], **_: Any) -> list[dict[str, Any]]:
        return self._execute_batch(db, _sized(_query_items(body)), raw=True)

    def api_import(self, db: Database, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        action = body.get("action")
        if action == "init":
            token = secrets.token_hex(12)
            filename = f"{body.get('etag', token)}.sql"
            self._uploads[token] = {"filename": filename, "data": None, "etag": None}
            return {
                "success": True,
                "messages": [],
                "upload_url": f"{self.origin}/upload/{token}",
                "filename": filename,
            }
        if action == "ingest":
            with self._lock:
                upload = next((u for u in self._uploads.values() if u["filename"] == body.get("filename")), None)
            if upload is None or upload["data"] is None or upload["etag"] != body.get("etag"):
                raise ApiError(400, 7400, "The uploaded file could not be found or its etag does not match")
            db.import_job = self._run_import(db, upload["data"])
            if "drop-after-import" in self.faults:
                self.faults.discard("drop-after-import")
                raise DropConnection
            return {
                "success": True,
                "type": "import",
                "status": "active",
                "at_bookmark": db.bookmark,
                "messages": ["Starting import..."],
            }
        if action == "poll":
            if db.import_job is None:
                raise ApiError(400, 7400, "No import is in progress for this database")
            return db.import_job
        raise ApiError(400, 7400, f"The request is malformed: unknown import action {action!r}")

    def _run_import(self, db: Database, data: bytes) -> dict[str, Any]:
        start = time.perf_counter()
        try:
            results = self._execute(db, data.decode("utf-8"))
        except (ApiError, UnicodeDecodeError) as exc:
            message = exc.message if isinstance(exc, ApiError) else f"The file is not valid UTF-8: {exc}"
            return {
                "success": True,
                "type": "import",
                "status": "error",
                "at_bookmark": db.bookmark,
                "error": message,
                "errors": [message],
                "messages": [],
            }
        metas = [r["meta"] for r in results]
        meta = {
            "served_by": "v3-prod",
            "duration": (time.perf_counter() - start) * 1000,
            "changes": sum(m["changes"] for m in metas),
            "last_row_id": metas[-1]["last_row_id"],
            "changed_db": any(m["changed_db"] for m in metas),
            "size_after": metas[-1]["size_after"],
            "rows_read": sum(m["rows_read"] for m in metas),
            "rows_written": sum(m["rows_written"] for m in metas),
        }
        result = {"success": True, "num_queries": len(results), "final_bookmark": db.bookmark, "meta": meta}
        return {
            "success": True,
            "type": "import",
            "status": "complete",
            "at_bookmark": db.bookmark,
            "messages": [f"Processed {len(results)} queries."],
            "result": result,
        }

    def api_export(self, db: Database, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        """The first call starts an export ("active"); polling with its at_bookmark returns the outcome."""
        job = db.export_job
        if job is not None and body.get("current_bookmark") == job["at_bookmark"]:
            return job
        opts = body.get("dump_options") or {}
        tables, no_schema, no_data = (
            opts.get("tables") or [],
            bool(opts.get("no_schema")),
            bool(opts.get("no_data")),
        )
        filename = f"{db.name}-{db.bookmark}.sql"
        job = {"success": True, "type": "export", "at_bookmark": db.bookmark, "messages": []}
        try:
            with closing(sqlite3.connect(db.path)) as conn:
                dump = "\n".join(dump_sql(conn, tables, no_schema, no_data))
            token = secrets.token_hex(12)
            self._downloads[token] = dump.encode()
            result = {"filename": filename, "signed_url": f"{self.origin}/download/{token}/{filename}"}
            db.export_job = {**job, "status": "complete", "messages": ["Uploaded part 1"], "result": result}
        except ApiError as exc:
            db.export_job = {**job, "status": "error", "error": exc.message}
        if "export-error" in self.faults:
            self.faults.discard("export-error")
            db.export_job = {**job, "status": "error", "error": "D1 Export error: the export could not be completed"}
        return {**job, "status": "active", "messages": [f"Generating {filename}"]}

    def api_bookmark(self, db: Database, query: dict[str, str], **_: Any) -> dict[str, str]:
        if "timestamp" not in query:
            return {"bookmark": db.bookmark}
        return {"bookmark": self._bookmark_at(db, query["timestamp"])}

    def _bookmark_at(self, db: Database, timestamp: str) -> str:
        try:
            when = _parse_time(timestamp)
        except ValueError as exc:
            raise ApiError(400, 7400, f"Invalid timestamp '{timestamp}'") from exc
        before = [b for b, t, _ in db.bookmarks if t <= when]
        return before[-1] if before else db.bookmarks[0][0]

    def api_restore(self, db: Database, query: dict[str, str], **_: Any) -> dict[str, str]:
        target = query.get("bookmark") or (self._bookmark_at(db, query["timestamp"]) if "timestamp" in query else None)
        snapshot = next((p for b, _, p in db.bookmarks if b == target), None)
        if snapshot is None:
            raise ApiError(400, 7400, f"Invalid bookmark: {target}")
        previous = db.bookmark
        shutil.copyfile(snapshot, db.path)
        self._new_bookmark(db)
        return {
            "bookmark": target,
            "previous_bookmark": previous,
            "message": "Database restored successfully",
        }


QUERY_BYTES = 100_000  # D1's limit on the SQL of one query (its documented statement limit); /import has none


def _sized(items: list[tuple[str, list[Any] | None]]) -> list[tuple[str, list[Any] | None]]:
    """Like D1: the SQL of a /query or /raw request over 100,000 bytes of UTF-8 is refused, nothing run."""
    for sql, _ in items:
        if len(sql.encode("utf-8")) > QUERY_BYTES:
            raise sql_error("statement too long: SQLITE_TOOBIG")
    return items


def _query_items(body: dict[str, Any]) -> list[tuple[str, list[Any] | None]]:
    """The body of /query and /raw: `{sql, params}` (a script, several statements allowed) or
    `{batch: [{sql, params}, ...]}`; either runs as one transaction, as D1 runs a batch."""
    items = body.get("batch") if "batch" in body else [body]
    if not isinstance(items, list) or not items:
        raise ApiError(400, 7400, "The request is malformed: batch must be a non-empty list of {sql, params}")
    out = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("sql"), str):
            raise ApiError(400, 7400, "The request is malformed: sql is required")
        params = item.get("params")
        if params is not None and not isinstance(params, list):
            raise ApiError(400, 7400, "The request is malformed: params must be a list")
        out.append((item["sql"], params))
    return out


# ---------------------------------------------------------------------------------------------- HTTP


_DB = r"/accounts/(?P<account>[^/]+)/d1/database"
ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    (method, re.compile(f"{pattern}$"), handler)
    for method, pattern, handler in [
        ("POST", _DB, "api_create"),
        ("GET", _DB, "api_list"),
        ("GET", _DB + r"/(?P<db>[^/]+)", "api_info"),
        ("DELETE", _DB + r"/(?P<db>[^/]+)", "api_delete"),
        ("POST", _DB + r"/(?P<db>[^/]+)/query", "api_query"),
        ("POST", _DB + r"/(?P<db>[^/]+)/raw", "api_raw"),
        ("POST", _DB + r"/(?P<db>[^/]+)/import", "api_import"),
        ("POST", _DB + r"/(?P<db>[^/]+)/export", "api_export"),
        ("GET", _DB + r"/(?P<db>[^/]+)/time_travel/bookmark", "api_bookmark"),
        ("POST", _DB + r"/(?P<db>[^/]+)/time_travel/restore", "api_restore"),
    ]
]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-cloudflare"

    @property
    def fake(self) -> FakeD1Server:
        return self.server.fake  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:  # keep the test output quiet
        pass

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                data += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
            return data
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, payload: bytes, content_type: str = "application/json", **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _envelope(
        self,
        status: int,
        result: Any = None,
        errors: list[dict[str, Any]] | None = None,
        result_info: dict[str, int] | None = None,
    ) -> None:
        body: dict[str, Any] = {
            "result": result,
            "success": not errors,
            "errors": errors or [],
            "messages": [],
        }
        if result_info is not None:
            body["result_info"] = result_info
        self._send(status, json.dumps(body).encode())

    def _handle(self) -> None:
        url = urlsplit(self.path)
        raw = self._read_body()
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        body: Any = None
        if raw and "json" in self.headers.get("Content-Type", "json"):
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
        headers = {k: v for k, v in self.headers.items() if k.lower() != "authorization"}
        record = {"method": self.command, "path": url.path, "query": query, "json": body, "headers": headers}
        record["authorized"] = "Authorization" in self.headers  # the token itself is never recorded
        with self.fake._lock:
            self.fake.requests.append(record)
        try:
            if url.path.startswith("/upload/") and self.command == "PUT":
                return self._upload(url.path.removeprefix("/upload/"), raw)
            if url.path.startswith("/download/") and self.command in ("GET", "HEAD"):
                return self._download(url.path.removeprefix("/download/").split("/")[0])
            if not url.path.startswith(API_PREFIX + "/"):
                raise ApiError(404, 7003, f"No route for {url.path}")
            self._api(url.path.removeprefix(API_PREFIX), query, body if isinstance(body, dict) else {})
        except ApiError as exc:
            self._envelope(exc.status, errors=[{"code": exc.code, "message": exc.message}])
        except DropConnection:
            self.close_connection = True
        except (BrokenPipeError, ConnectionResetError):  # the client went away (killed, interrupted): no answer
            self.close_connection = True
        except Exception as exc:  # a bug in the fake: answer like an API outage rather than hang wrangler
            self._envelope(500, errors=[{"code": 10001, "message": f"fake server error: {exc!r}"}])
            raise

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle

    def _upload(self, token: str, data: bytes) -> None:
        with self.fake._lock:
            upload = self.fake._uploads.get(token)
            if upload is None:
                return self._send(404, b"<Error><Code>NoSuchUpload</Code></Error>", "application/xml")
            upload["data"], upload["etag"] = data, hashlib.md5(data).hexdigest()
        self._send(200, b"", "text/plain", ETag=f'"{upload["etag"]}"')

    def _download(self, token: str) -> None:
        data = self.fake._downloads.get(token)
        if data is None:
            return self._send(404, b"<Error><Code>NoSuchKey</Code></Error>", "application/xml")
        self._send(200, data, "application/sql")

    def _api(self, path: str, query: dict[str, str], body: dict[str, Any]) -> None:
        fake = self.fake
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            raise ApiError(401, 10000, "Authentication error")
        if auth.removeprefix("Bearer ").strip() != fake.token:
            if path == "/user/tokens/verify":
                raise ApiError(401, 1000, "Invalid API Token")
            if path in ("/user", "/accounts", "/memberships"):
                raise ApiError(403, 9109, "Invalid access token")
            raise ApiError(403, 10000, "Authentication error")
        if path == "/graphql" and self.command == "POST":  # `wrangler d1 info` asks for 24h metrics
            data = {"viewer": {"accounts": [{"d1AnalyticsAdaptiveGroups": [], "d1QueriesAdaptiveGroups": []}]}}
            return self._send(200, json.dumps({"data": data, "errors": None}).encode())
        account = {"id": fake.account_id, "name": "Fake D1 Account"}
        whoami: dict[str, Any] = {  # wrangler runs `whoami` after any auth error (code 10000)
            "/user/tokens/verify": {"id": "fake-token", "status": "active"},
            "/user": {"id": "fake-user", "email": "d1ops@example.com"},
            "/accounts": [account],
            "/memberships": [{"id": "fake-membership", "account": account, "roles": ["Administrator"]}],
        }
        if self.command == "GET" and path in whoami:
            one_page = {"page": 1, "per_page": 20, "count": 1, "total_count": 1}
            return self._envelope(200, whoami[path], result_info=one_page if path[1] in "am" else None)
        for method, pattern, name in ROUTES:
            match = pattern.match(path)
            if match is None or method != self.command:
                continue
            if match["account"] != fake.account_id:
                raise ApiError(403, 10000, "Authentication error")
            kwargs: dict[str, Any] = {"query": query, "body": body}
            if name == "api_list":  # takes `_lock` only to copy the table: describing a page runs beside queries
                result = fake.api_list(**kwargs)
            elif "db" not in match.groupdict():
                with fake._lock:
                    result = getattr(fake, name)(**kwargs)
            else:
                db = kwargs["db"] = fake._get_db(match["db"])
                with db.lock:
                    if name == "api_delete":
                        with fake._lock:
                            result = getattr(fake, name)(**kwargs)
                    else:
                        result = getattr(fake, name)(**kwargs)
            if name == "api_list":
                return self._envelope(200, result[0], result_info=result[1])
            return self._envelope(200, result)
        if any(pattern.match(path) for _, pattern, _ in ROUTES):
            raise ApiError(405, 10405, f"Method {self.command} not allowed for this route")
        raise ApiError(404, 7003, f"Could not route to {path}, perhaps your object identifier is invalid?")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake Cloudflare D1 REST API for wrangler")
    parser.add_argument("--port", type=int, default=8787)
    parser.add_argument("--token", required=True)
    parser.add_argument("--account", required=True)
    parser.add_argument("--data", type=Path, required=True)
    args = parser.parse_args(argv)
    server = FakeD1Server(args.data, args.token, args.account, port=args.port).start()
    print(f"CLOUDFLARE_API_BASE_URL={server.base_url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
