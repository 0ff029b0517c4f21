"""Whether this machine has Cloudflare credentials for remote environments (never their values)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from d1ops.errors import GateRefused
from d1ops.project.config import Environment

NO_CREDENTIALS = "no credentials (set CLOUDFLARE_API_TOKEN and CLOUDFLARE_ACCOUNT_ID, or run `wrangler login`)"


def wrangler_login_files(environ: Mapping[str, str]) -> list[Path]:
    """Where `wrangler login` keeps its OAuth token (wrangler 4: the XDG config dir; older: ~/.wrangler)."""
    home = Path(environ.get("HOME") or Path.home())
    xdg = Path(environ.get("XDG_CONFIG_HOME") or home / ".config")
    return [xdg / ".wrangler" / "config" / "default.toml", home / ".wrangler" / "config" / "default.toml"]


def credentials_source(environ: Mapping[str, str] | None = None) -> str | None:
    """Which credentials wrangler would use (a name, never the secret), or None when there are none."""
    environ = os.environ if environ is None else environ
    if environ.get("CLOUDFLARE_API_TOKEN"):
        return "CLOUDFLARE_API_TOKEN"
    if environ.get("CLOUDFLARE_API_KEY") and environ.get("CLOUDFLARE_EMAIL"):
        return "CLOUDFLARE_API_KEY + CLOUDFLARE_EMAIL"
    for path in wrangler_login_files(environ):
        if path.is_file():
            return f"wrangler login ({path})"
    return None


def require_for_gate(command: str, env: Environment, others: list[Environment]) -> None:
    """A gate that must read other environments says which and why before wrangler fails on missing credentials."""
    remote = [e.name for e in others if e.is_remote and e.name != env.name]
    if not remote or credentials_source():
        return
    names = ", ".join(remote)
    raise GateRefused(
        f"`d1ops {command} {env.name}` must read {names} first: the promotion-order gate checks that every "
        f"migration it would apply to {env.name} is already applied to the environment before it, with the same "
        f"checksum. {names} {'is' if len(remote) == 1 else 'are'} remote and this machine has {NO_CREDENTIALS}."
    )
