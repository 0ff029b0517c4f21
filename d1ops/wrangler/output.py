"""What wrangler prints, read: JSON results, error messages, and secrets taken out of all of it."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from d1ops.errors import WranglerError
from d1ops.support.secrets import SECRET_VARS, mask_secrets, redact  # noqa: F401 - the seam redacts with them

DEFAULT_API_BASE_URL = "https://api.cloudflare.com/client/v4"
_NO_CREDENTIALS = re.compile(
    r"necessary to set a CLOUDFLARE_API_TOKEN|not logged in|wrangler login|unable to select one in non-interactive|"
    r"CLOUDFLARE_ACCOUNT_ID environment variable",
    re.I,
)
NO_CREDENTIALS_FIX = (
    "Set CLOUDFLARE_API_TOKEN (a token with D1 edit permission) and CLOUDFLARE_ACCOUNT_ID, or run `wrangler login`, "
    "then retry."
)
_AUTH_FAILURE = re.compile(r"Authentication error|Invalid API Token|Invalid access token|Unable to authenticate", re.I)
UNREACHABLE = re.compile(
    r"fetch failed|connectivity issue|ECONNREFUSED|ECONNRESET|ENOTFOUND|EAI_AGAIN|ETIMEDOUT|EHOSTUNREACH|"
    r"UND_ERR_CONNECT|socket hang up",
    re.I,
)
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@dataclass(frozen=True)
class Statement:
    """One element of `d1 execute --json`: the rows of one statement."""

    results: list[dict[str, Any]]
    meta: dict[str, Any]


def api_base_url(environ: dict[str, str]) -> str:
    return environ.get("CLOUDFLARE_API_BASE_URL") or DEFAULT_API_BASE_URL


def explain_remote_failure(message: str, environ: dict[str, str]) -> str | None:
    """Missing credentials, a refused token or an unreachable API, said plainly with what to do; None for any other
    failure."""
    if _NO_CREDENTIALS.search(message):
        account = "CLOUDFLARE_ACCOUNT_ID" in message or "account" in message.lower()
        what = "which Cloudflare account to use" if account and "API_TOKEN" not in message else "Cloudflare credentials"
        return f"wrangler has no {what} for the remote database on this machine. {NO_CREDENTIALS_FIX}"
    if _AUTH_FAILURE.search(message):
        return (
            f"{message}\nThe Cloudflare API at {api_base_url(environ)} refused the API token. Check "
            "CLOUDFLARE_API_TOKEN (a token with D1 edit permission) and CLOUDFLARE_ACCOUNT_ID, then retry."
        )
    if UNREACHABLE.search(message):
        return (
            f"Could not reach the Cloudflare API at {api_base_url(environ)} ({message}). Check the network "
            "(and CLOUDFLARE_API_BASE_URL if set), then retry."
        )
    return None


# workerd of a newer wrangler adds columns to the tables it keeps beside the local D1 files (metadata.sqlite's
# `_cf_ALARM`: 2 columns from wrangler 4.86.0's workerd, 3 once 4.164.0's has opened it); an older workerd then
# fails to start on it ("table _cf_ALARM has 3 columns but 2 values were supplied"). The databases' own files
# are unchanged: without metadata.sqlite (Durable Object alarms, which D1 does not use) 4.86.0 reads them again.
_NEWER_LOCAL_STATE = re.compile(r"table _cf_\w+ has \d+ columns but \d+ values were supplied")
NEWER_LOCAL_STATE_NOTE = "the local state was written by a newer wrangler"


def explain_local_failure(stderr: str) -> str | None:
    """Local state an older workerd cannot open, said plainly with what to do; None for any other failure."""
    match = _NEWER_LOCAL_STATE.search(stderr)
    if match is None:
        return None
    return (
        f"This wrangler cannot open .wrangler/state: {NEWER_LOCAL_STATE_NOTE} (its workerd: {match.group()}). "
        "Run that newer wrangler again (`d1ops --version` shows the one d1ops found), or move "
        ".wrangler/state/v3/d1/miniflare-D1DatabaseObject/metadata.sqlite away: it holds Durable Object alarms, "
        "which D1 does not use, and the local databases keep their rows."
    )


def first_json(text: str) -> Any:
    """Parse the first JSON document in wrangler's stdout (it may be preceded by log lines)."""
    text = _ANSI.sub("", text)
    for match in re.finditer(r"^[\[{]", text, re.MULTILINE):
        try:
            value, _ = json.JSONDecoder().raw_decode(text[match.start() :])
            return value
        except json.JSONDecodeError:
            continue
    raise ValueError("no JSON document in output")


def parse_json(out: str, args: list[str]) -> Any:
    try:
        return first_json(out)
    except ValueError:
        raise WranglerError(
            ["wrangler", *args], 0, f"wrangler printed no JSON where JSON was expected: {out.strip()[:300]}"
        ) from None


def parse_statements(out: str, args: list[str]) -> list[Statement]:
    data = parse_json(out, args)
    if isinstance(data, dict) and "error" in data:
        raise WranglerError(["wrangler", *args], 0, _error_from_json(data))
    if not isinstance(data, list):
        data = [data]
    return [Statement(results=list(d.get("results") or []), meta=dict(d.get("meta") or {})) for d in data]


def _error_from_json(data: dict[str, Any]) -> str:
    error = data.get("error")
    if isinstance(error, dict):
        text = error.get("text") or error.get("message") or json.dumps(error)
        notes = [n.get("text", "") for n in error.get("notes") or [] if isinstance(n, dict)]
        return " ".join([str(text), *[n for n in notes if n]])
    return str(error)


def error_text(stdout: str, stderr: str) -> str:
    """wrangler's own error message: the JSON `error.text` when --json, else its ✘ [ERROR] lines."""
    try:
        data = first_json(stdout)
        if isinstance(data, dict) and "error" in data:
            return _error_from_json(data)
    except ValueError:
        pass
    lines = [_ANSI.sub("", line).strip() for line in (stderr + "\n" + stdout).splitlines()]
    errors = [line for line in lines if "[ERROR]" in line]
    if errors:
        index = lines.index(errors[0])
        tail = [line for line in lines[index + 1 : index + 6] if line and not line.startswith("🪵")]
        return " ".join([errors[0].split("[ERROR]", 1)[1].strip(), *tail]).strip()
    meaningful = [line for line in lines if line and not line.startswith("🪵")]
    return " ".join(meaningful[-5:]) or "wrangler failed without printing an error"
