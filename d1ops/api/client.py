"""A small client of the Cloudflare D1 REST API: the endpoints wrangler itself calls, over stdlib http.client.

Why not a library (measured on this machine, Python 3.11, against the loopback emulator): importing httpx takes
190-240 ms and pulls in ~4 MB (httpx, httpcore, anyio, h11, certifi, idna); the official `cloudflare` SDK 5.9.0
is 105 MB and ~0.25 s to import. http.client + json + ssl import in 40-60 ms, are already installed, and a
keep-alive connection per thread serves the same calls: see bench/benchmark.py's fleet row.

Configured as wrangler is: CLOUDFLARE_API_BASE_URL (default https://api.cloudflare.com/client/v4),
CLOUDFLARE_API_TOKEN, CLOUDFLARE_ACCOUNT_ID. The token goes only into the Authorization header: never into an
error, a log line or a report. Thread-safe: each thread keeps its own connection. 429 and 5xx answers are retried
with exponential backoff (Retry-After honoured); a call that may have changed the database (`idempotent=False`)
is retried only on 429 (D1 did not run it), and raises ApiOutcomeUnknown when its answer is lost.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from d1ops.errors import ConfigError, D1OpsError

DEFAULT_BASE_URL = "https://api.cloudflare.com/client/v4"
RETRIES = 5
TIMEOUT_S = 60.0
POLLS = 600  # export and import polls before giving up (D1 answers each after a wait of its own)
POLL_WAIT_S = 0.05  # between polls: D1 holds each poll's answer a while; the emulator answers at once


class ApiError(D1OpsError):
    """The API answered with an error (an SQL error, a 4xx, or a 5xx after every retry)."""

    def __init__(self, status: int, code: int | None, detail: str, what: str) -> None:
        self.status, self.code, self.detail = status, code, detail
        super().__init__(f"{what}: {detail} (HTTP {status}{f', code {code}' if code else ''})")


class ApiOutcomeUnknown(ApiError):
    """A call that may have changed the database got no answer: read the state back to know what it did."""


@dataclass(frozen=True)
class QueryResult:
    """One statement's rows (the shape of wrangler's `execute --json` element, so tracking code reads both)."""

    results: list[dict[str, Any]]
    meta: dict[str, Any]


class D1Api:
    def __init__(self, base_url: str, token: str, account_id: str, *, timeout: float = TIMEOUT_S) -> None:
        url = urlsplit(base_url.rstrip("/"))
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ConfigError(f"CLOUDFLARE_API_BASE_URL={base_url!r} is not an http(s) URL. Fix or unset it.")
        self.scheme, self.host, self.port = url.scheme, url.hostname, url.port
        self.prefix = url.path
        self.account_id = account_id
        self._auth = f"Bearer {token}"
        self.timeout = timeout
        self._local = threading.local()
        self._count_lock = threading.Lock()
        self.calls = 0  # requests sent, retries included

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> D1Api:
        env = os.environ if environ is None else environ
        token, account = env.get("CLOUDFLARE_API_TOKEN"), env.get("CLOUDFLARE_ACCOUNT_ID")
        missing = [n for n, v in (("CLOUDFLARE_API_TOKEN", token), ("CLOUDFLARE_ACCOUNT_ID", account)) if not v]
        if missing:
            raise ConfigError(
                f"A fleet talks to the D1 API directly and needs {' and '.join(missing)} (as wrangler does in CI). "
                "Create an API token with D1 Edit permission and export both."
            )
        return cls(env.get("CLOUDFLARE_API_BASE_URL") or DEFAULT_BASE_URL, str(token), str(account))

    # -- endpoints --------------------------------------------------------------------------------------------

    def list_databases(self, per_page: int = 1000) -> list[dict[str, Any]]:
        """Every database of the account, page by page."""
        out: list[dict[str, Any]] = []
        page = 1
        while True:
            body = self.call("GET", "/d1/database", query={"page": page, "per_page": per_page}, what="listing")
            items = body.get("result") or []
            out += items
            info = body.get("result_info") or {}
            total = info.get("total_count")
            if not items or len(items) < per_page or (isinstance(total, int) and len(out) >= total):
                return out
            page += 1

    def query(self, database_id: str, sql: str, *, idempotent: bool = True, what: str = "query") -> list[QueryResult]:
        """POST …/query {sql}: the statements run as one batch (atomically). A result per statement."""
        body = self.call("POST", f"/d1/database/{quote(database_id)}/query", {"sql": sql}, idempotent, what)
        return [QueryResult(r.get("results") or [], r.get("meta") or {}) for r in body.get("result") or []]

    def bookmark(self, database_id: str) -> str:
        """GET …/time_travel/bookmark: the bookmark of the database's current state."""
        body = self.call("GET", f"/d1/database/{quote(database_id)}/time_travel/bookmark", what="bookmark")
        return str((body.get("result") or {}).get("bookmark") or "")

    def export_sql(self, database_id: str, output: Path, *, tables: list[str] | None = None) -> None:
        """The database as an SQL dump in `output`, as `wrangler d1 export --remote` takes it: POST …/export
        `{output_format: "polling", dump_options, current_bookmark}` until `status` is `complete` (each answer
        names the bookmark to poll with), then GET `result.signed_url` (no token sent there). 3 calls when
        D1 answers "active" once (the emulator does); raises ApiError on an export error."""
        options: dict[str, Any] = {"no_schema": False, "no_data": False}
        if tables:
            options["tables"] = list(tables)
        bookmark: str | None = None
        for _ in range(POLLS):
            payload = {"output_format": "polling", "dump_options": options, "current_bookmark": bookmark}
            body = self.call("POST", f"/d1/database/{quote(database_id)}/export", payload, what="export")
            job = body.get("result") or {}
            if job.get("status") == "complete":
                url = str((job.get("result") or {}).get("signed_url") or "")
                if not url:
                    raise ApiError(200, None, "the export completed without a download URL", "export")
                self._download(url, output)
                return
            if job.get("status") == "error":
                raise ApiError(200, None, str(job.get("error") or "the export failed"), "export")
            bookmark = str(job.get("at_bookmark") or "") or None
            time.sleep(POLL_WAIT_S)
        raise ApiError(0, None, f"the export did not complete after {POLLS} polls", "export")

    def import_sql(self, database_id: str, sql: str, *, what: str = "import") -> dict[str, Any]:
        """Run an SQL file as `wrangler d1 execute --remote --file` does, atomically (a failed import leaves the
        database as it was): POST …/import `{action: "init", etag: md5}`, PUT the file to `upload_url` (its ETag
        must be the md5), POST `{action: "ingest", filename, etag}`, then `{action: "poll", current_bookmark}`
        until `complete` (its `result`: num_queries, final_bookmark, meta) or `error` (ApiError). For batches
        too large for one `/query` request. A lost answer to ingest or to the polls raises ApiOutcomeUnknown."""
        data = sql.encode("utf-8")
        etag = hashlib.md5(data, usedforsecurity=False).hexdigest()
        path = f"/d1/database/{quote(database_id)}/import"
        job = self.call("POST", path, {"action": "init", "etag": etag}, what=f"{what} (init)").get("result") or {}
        if "upload_url" in job:
            status, headers, answer = self._fetch(str(job["upload_url"]), "PUT", data)
            if status != 200:
                raise ApiError(status, None, f"the upload was refused: {answer[:200].decode('utf-8', 'replace')}", what)
            if (headers.get("etag") or "").strip('"') != etag:
                raise ApiError(status, None, "the uploaded file's ETag does not match its md5: retry", what)
            payload = {"action": "ingest", "filename": job.get("filename"), "etag": etag}
            job = self.call("POST", path, payload, idempotent=False, what=f"{what} (ingest)").get("result") or {}
        for _ in range(POLLS):
            if job.get("status") == "complete":
                return dict(job.get("result") or {})
            if job.get("status") == "error":
                errors = job.get("errors") or [job.get("error") or "the import failed"]
                raise ApiError(200, None, "; ".join(str(e) for e in errors), what)
            time.sleep(POLL_WAIT_S if job.get("status") else 0)
            payload = {"action": "poll", "current_bookmark": job.get("at_bookmark")}
            try:
                job = self.call("POST", path, payload, what=f"{what} (poll)").get("result") or {}
            except ApiError as exc:
                raise ApiOutcomeUnknown(
                    exc.status, exc.code, f"the import's outcome could not be read: {exc.detail}", what
                ) from exc
        raise ApiOutcomeUnknown(0, None, f"the import did not complete after {POLLS} polls", what)

    # -- transport --------------------------------------------------------------------------------------------

    def call(
        self,
        method: str,
        path: str,
        payload: Any = None,
        idempotent: bool = True,
        what: str = "API call",
        query: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        url = f"{self.prefix}/accounts/{quote(self.account_id)}{path}" + (f"?{urlencode(query)}" if query else "")
        data = None if payload is None else json.dumps(payload).encode()
        headers = {"Authorization": self._auth, "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        for attempt in range(RETRIES + 1):
            last = attempt == RETRIES
            with self._count_lock:
                self.calls += 1
            try:
                status, reason, retry_after, raw = self._send(method, url, data, headers)
            except (OSError, http.client.HTTPException) as exc:
                self._drop()
                detail = f"no answer ({type(exc).__name__}: {exc})"
                if not idempotent:
                    raise ApiOutcomeUnknown(0, None, detail, what) from exc
                if last:
                    raise ApiError(0, None, detail, what) from exc
                self._backoff(attempt, None)
                continue
            body = _decode(raw)
            if status == 429 or (status >= 500 and idempotent):
                if not last:
                    self._backoff(attempt, retry_after)
                    continue
            if status >= 500 and not idempotent:
                raise ApiOutcomeUnknown(status, _code(body), _message(body, reason), what)
            if status >= 400 or not body.get("success", False):
                raise ApiError(status, _code(body), _message(body, reason), what)
            return body
        raise AssertionError("unreachable")

    def _fetch(
        self, url: str, method: str = "GET", data: bytes | None = None, output: Path | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """A request to a signed URL (upload or download: another host, no Authorization header), on its own
        connection. With `output`, a 200's body is streamed into that file (written beside it, then renamed)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ApiError(0, None, "the API gave a URL that is not http(s)", "transfer")
        kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        with self._count_lock:
            self.calls += 1
        conn = kind(parts.hostname, parts.port, timeout=self.timeout)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        try:
            headers = {"Content-Length": str(len(data))} if data is not None else {}
            conn.request(method, target or "/", body=data, headers=headers)
            response = conn.getresponse()
            found = {k.lower(): v for k, v in response.getheaders()}
            if output is None or response.status != 200:
                return response.status, found, response.read()
            partial = output.with_name(f".{output.name}.download")
            try:
                with partial.open("wb") as out:
                    while chunk := response.read(1 << 20):
                        out.write(chunk)
                os.chmod(partial, 0o600)
                os.replace(partial, output)
            finally:
                partial.unlink(missing_ok=True)
            return response.status, found, b""
        except (OSError, http.client.HTTPException) as exc:
            raise ApiError(0, None, f"no answer from the transfer URL ({type(exc).__name__})", "transfer") from exc
        finally:
            conn.close()

    def _download(self, url: str, output: Path) -> None:
        for attempt in range(RETRIES + 1):
            try:
                status, _, answer = self._fetch(url, output=output)
            except ApiError:
                if attempt == RETRIES:
                    raise
                self._backoff(attempt, None)
                continue
            if status == 200:
                return
            if status < 500 or attempt == RETRIES:
                raise ApiError(
                    status, None, f"the download failed: {answer[:200].decode('utf-8', 'replace')}", "export"
                )
            self._backoff(attempt, None)

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            kind = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
            conn = self._local.conn = kind(self.host, self.port, timeout=self.timeout)
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _send(
        self, method: str, url: str, data: bytes | None, headers: dict[str, str]
    ) -> tuple[int, str, str | None, bytes]:
        conn = self._connection()
        conn.request(method, url, body=data, headers=headers)
        response = conn.getresponse()
        raw = response.read()
        if response.getheader("Connection", "").lower() == "close":
            self._drop()
        return response.status, response.reason, response.getheader("Retry-After"), raw

    @staticmethod
    def _backoff(attempt: int, retry_after: str | None) -> None:
        try:
            wait = float(retry_after) if retry_after else 0.0
        except ValueError:
            wait = 0.0
        time.sleep(min(30.0, max(wait, 0.2 * 2**attempt * (0.5 + random.random()))))  # noqa: S311 - jitter


def _decode(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except ValueError:
        return {"success": False, "errors": [{"message": raw[:200].decode("utf-8", "replace")}]}
    return body if isinstance(body, dict) else {"success": False, "errors": [{"message": "not a JSON object"}]}


def _code(body: dict[str, Any]) -> int | None:
    errors = body.get("errors") or []
    code = errors[0].get("code") if errors and isinstance(errors[0], dict) else None
    return code if isinstance(code, int) else None


def _message(body: dict[str, Any], reason: str) -> str:
    errors = body.get("errors") or []
    texts = [str(e.get("message")) for e in errors if isinstance(e, dict) and e.get("message")]
    return "; ".join(texts) or reason or "error"
