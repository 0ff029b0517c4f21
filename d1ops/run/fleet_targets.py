"""Which databases a fleet is: the account's paginated list, narrowed by pattern or file, --only/--except and
--shard; and the seam that sends tracking.py's SQL to one of them through the D1 API."""

from __future__ import annotations

import fnmatch
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from d1ops.errors import ConfigError, UsageError, WranglerError
from d1ops.project.config import Environment

if TYPE_CHECKING:
    from d1ops.api.client import D1Api


@dataclass(frozen=True)
class Target:
    name: str
    id: str


def resolve_fleet(api: D1Api, env: Environment, root: Path) -> list[Target]:
    """The fleet's databases, from the account's paginated list: names matching `fleet`, or those `fleet_file`
    lists (by name or id). Sorted by name."""
    listed = [Target(str(d["name"]), str(d["uuid"])) for d in api.list_databases()]
    if env.fleet:
        found = [t for t in listed if fnmatch.fnmatchcase(t.name, env.fleet)]
    else:
        path = root / str(env.fleet_file)
        try:
            wanted = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
        except OSError as exc:
            raise ConfigError(f"environment '{env.name}': fleet_file {path} cannot be read ({exc}).") from exc
        wanted = [w for w in wanted if w and not w.startswith("#")]
        by_key = {t.name: t for t in listed} | {t.id: t for t in listed}
        missing = [w for w in wanted if w not in by_key]
        if missing:
            shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
            raise ConfigError(
                f"environment '{env.name}': {path.name} lists databases the account does not have: {shown}. "
                "Create them or remove them from the file."
            )
        found = list({by_key[w].id: by_key[w] for w in wanted}.values())
    return sorted(found, key=lambda t: t.name)


def parse_shard(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        k, n = (int(p) for p in text.split("/"))
    except ValueError:
        k = n = 0
    if not 1 <= k <= n:
        raise UsageError(f"--shard {text!r}: give K/N with 1 <= K <= N, e.g. --shard 2/4.")
    return k, n


def in_shard(name: str, shard: tuple[int, int] | None) -> bool:
    """Deterministic: the same name is in the same shard on every runner (a hash, not the list's order)."""
    if shard is None:
        return True
    k, n = shard
    return int(hashlib.sha256(name.encode()).hexdigest()[:12], 16) % n == k - 1


def select(
    targets: list[Target], only: tuple[str, ...], exclude: tuple[str, ...], shard: tuple[int, int] | None
) -> list[Target]:
    """Narrow the fleet: --only / --except take names or globs; then this runner's shard."""

    def hit(t: Target, patterns: tuple[str, ...]) -> bool:
        return any(fnmatch.fnmatchcase(t.name, p) or t.id == p for p in patterns)

    chosen = [t for t in targets if (not only or hit(t, only)) and not hit(t, exclude) and in_shard(t.name, shard)]
    return chosen


class ApiSeam:
    """What tracking.py asks of wrangler (`execute(env, command=...)`), answered by one API query on one
    database: the lock and read statements are the same text, sent to `/query`."""

    def __init__(self, api: D1Api, target: Target) -> None:
        self.api, self.target = api, target

    def execute(self, env: Environment, *, command: str | None = None, file: Path | None = None) -> list[Any]:
        from d1ops.api.client import ApiError

        text = command if command is not None else Path(str(file)).read_text(encoding="utf-8")
        try:
            return self.api.query(self.target.id, text, what=f"query on {self.target.name}")  # type: ignore[return-value]
        except ApiError as exc:
            raise WranglerError(["d1-api", "query", self.target.name], exc.status, exc.detail) from exc
