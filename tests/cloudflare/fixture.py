"""The ``cloudflare_api`` pytest fixture: a fresh fake D1 API per test, plus the env wrangler needs."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cloudflare.server import FakeD1Server


@dataclass(frozen=True)
class CloudflareAPI:
    base_url: str
    token: str
    account_id: str
    server: FakeD1Server
    env: dict[str, str]  # merge into os.environ for a wrangler subprocess (and give it stdin=DEVNULL)


def wrangler_env(base_url: str, token: str, account_id: str, log_dir: Path | None = None) -> dict[str, str]:
    """Environment for running the real wrangler non-interactively against ``base_url``."""
    env = {
        "CLOUDFLARE_API_BASE_URL": base_url,
        "CLOUDFLARE_API_TOKEN": token,
        "CLOUDFLARE_ACCOUNT_ID": account_id,
        "WRANGLER_SEND_METRICS": "false",
        "WRANGLER_SEND_ERROR_REPORTS": "false",
        "WRANGLER_HIDE_BANNER": "true",
        "CLOUDFLARE_CF_FETCH_ENABLED": "false",
        "CI": "true",
    }
    if log_dir is not None:
        env["WRANGLER_LOG_PATH"] = str(log_dir)
    return env


@pytest.fixture
def cloudflare_api(tmp_path: Path) -> Iterator[CloudflareAPI]:
    token = "test-token-" + secrets.token_hex(16)
    account_id = uuid.uuid4().hex
    server = FakeD1Server(tmp_path / "fake-d1", token, account_id).start()
    try:
        env = wrangler_env(server.base_url, token, account_id, tmp_path / "wrangler-logs")
        yield CloudflareAPI(server.base_url, token, account_id, server, env)
    finally:
        server.stop()


@pytest.fixture
def api(cloudflare_api: CloudflareAPI, monkeypatch: pytest.MonkeyPatch) -> CloudflareAPI:
    """The fake API with its variables in this process's environment (a fleet's d1ops talks to it in-process)."""
    for key, value in cloudflare_api.env.items():
        monkeypatch.setenv(key, value)
    return cloudflare_api
