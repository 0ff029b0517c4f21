"""Secrets never leave d1ops: the API tokens it knows by name are masked in every message, log and report."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

SECRET_VARS = ("CLOUDFLARE_API_TOKEN", "CLOUDFLARE_API_KEY", "CF_API_TOKEN", "CF_API_KEY")
_SECRET_PATTERNS = (
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"(?i)((?:api[_-]?token|api[_-]?key|authorization)[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]{8,}"),
)


def mask_secrets(text: str, environ: Mapping[str, str] | None = None) -> str:
    """Replace the values of the secrets d1ops knows (SECRET_VARS) and nothing else: safe on user data, so it is
    what whole documents (query results, run reports) go through."""
    values = os.environ if environ is None else environ
    for var in SECRET_VARS:
        value = values.get(var)
        if value and len(value) >= 4:
            text = text.replace(value, "[REDACTED]")
    return text


def redact(text: str, environ: Mapping[str, str] | None = None) -> str:
    """For messages (errors, wrangler's output): the known secrets, and bearer/token patterns too. Never applied
    to query results: a column named api_key or a value 'Bearer …' is the user's data."""
    text = mask_secrets(text, environ)
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + "[REDACTED]", text)
    return text
