"""The lease: the lock a run takes (taking over an expired one) in the call that reads state, the guard that
opens every batch, and its release."""

from __future__ import annotations

import os
import uuid
from dataclasses import replace

from d1ops.errors import ConfigError, LockHeld, WranglerError
from d1ops.project.config import Environment
from d1ops.project.migrations import MigrationFile
from d1ops.run.tracking import (
    _LOCK_QUERY,
    _STATE_QUERY,
    CHECKSUM_DDL,
    LOCK_DDL,
    LOCK_TABLE,
    NOW,
    WRANGLER_DDL,
    EnvState,
    _state_from,
    actor,
    adopt_checksums_sql,
)
from d1ops.sql.schema import SCHEMA_READ, DatabaseSchema, schema_from
from d1ops.sql.text import quote
from d1ops.wrangler.runner import Wrangler

# A lock table from before leases lacks expires_at (SQLite has no ADD COLUMN IF NOT EXISTS). The lock call then
# fails as a whole (nothing done) and is sent again with this first: once in a database's life.
LOCK_UPGRADE = f"ALTER TABLE {LOCK_TABLE} ADD COLUMN expires_at TEXT;"


LEASE_ENV_VAR = "D1OPS_LEASE_MINUTES"


DEFAULT_LEASE_MINUTES = 120.0  # far past the slowest run: 5-minute wrangler timeouts for lock, backup, verify, apply


def lease_minutes() -> float:
    """How long a run's lease lasts: $D1OPS_LEASE_MINUTES, else 120 minutes."""
    raw = os.environ.get(LEASE_ENV_VAR)
    if not raw:
        return DEFAULT_LEASE_MINUTES
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise ConfigError(f"{LEASE_ENV_VAR}={raw!r} is not a number of minutes (e.g. 120). Fix or unset it.")
    return value


def _expiry_sql(minutes: float) -> str:
    return f"strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '+{minutes * 60:.3f} seconds')"


# A lock taken before leases existed (expires_at NULL) does not expire: it is held until `d1ops unlock`, as it
# was when it was taken.
_EXPIRED = f"expires_at IS NOT NULL AND expires_at <= {NOW}"


def new_lock_owner() -> str:
    return f"{actor()} run {uuid.uuid4().hex[:12]}"


def lock_and_read_state(
    wrangler: Wrangler,
    env: Environment,
    owner: str,
    files: tuple[MigrationFile, ...],
    *,
    with_schema: bool = False,
) -> tuple[EnvState, DatabaseSchema | None]:
    """Create the tracking tables, take the lease (taking over an expired one), adopt checksums of
    wrangler-applied files, read state (and, `with_schema`, the schema): one wrangler process, one atomic batch.

    Raises LockHeld (naming the holder and the lease's age) when another run holds a live lease. A migration
    applied by plain wrangler gets the checksum of the file on disk recorded, once. A lock table from before
    leases makes the call fail (atomically: nothing done); it is sent again with LOCK_UPGRADE first, one more
    process once in the database's life.
    """
    statements = [
        WRANGLER_DDL,
        CHECKSUM_DDL,
        LOCK_DDL,
        _LOCK_QUERY + ";",  # the holder before: named if its expired lease is taken over
        f"DELETE FROM {LOCK_TABLE} WHERE id = 1 AND {_EXPIRED};",
        f"INSERT OR IGNORE INTO {LOCK_TABLE}(id, owner, acquired_at, expires_at) "
        f"VALUES (1, {quote(owner)}, {NOW}, {_expiry_sql(lease_minutes())});",
    ]
    if files:
        statements.append(adopt_checksums_sql(files, owner))
    statements += [_STATE_QUERY + ";", _LOCK_QUERY + ";"]
    if with_schema:
        statements.append(SCHEMA_READ)
    try:
        result = wrangler.execute(env, command="\n".join(statements))
    except WranglerError as exc:
        if "expires_at" not in exc.detail or "duplicate column" in exc.detail:
            raise
        statements.insert(3, LOCK_UPGRADE)  # a lock table from before leases: the batch did nothing; upgrade it
        result = wrangler.execute(env, command="\n".join(statements))
    at = -4 if with_schema else -2
    before_at = at - 3 - (1 if files else 0)
    state = _state_from(env, result[at].results, result[at + 1].results)
    if state.lock_owner != owner:
        age = state.lock_age()
        held = f" ({age} ago)" if age else ""
        expires = (
            f"; its lease expires at {state.lock_expires_at}"
            if state.lock_expires_at
            else "; taken before leases existed, it does not expire"
        )
        raise LockHeld(
            f"Environment '{env.name}' is locked by {state.lock_owner} since {state.lock_acquired_at}{held}{expires}. "
            f"Wait for that run to finish; if it died, release the lock now with `d1ops unlock {env.name}`"
            + (" (or run again once its lease has expired: it is then taken over)." if state.lock_expires_at else ".")
        )
    before = result[before_at].results[0] if result[before_at].results else {}
    if before.get("owner") and before.get("owner") != owner:
        since, until = before.get("acquired_at"), before.get("expires_at")
        state = replace(state, taken_over=f"{before['owner']} (held since {since}, lease expired at {until})")
    return state, schema_from(result) if with_schema else None


# The first statement of every apply batch: if this run no longer holds the lease (it expired and another run
# took it over, or someone ran `d1ops unlock`), it fails on NOT NULL (checked before the key) and D1 rejects the
# whole batch: a run never changes a database under a lease that is not its own. (Which it was is read from the
# lock row after a failed batch, never from the error's text: run/apply.py's `lease_lost`.)


def lease_guard_sql(owner: str) -> str:
    return (
        f"INSERT INTO {LOCK_TABLE}(id, owner, acquired_at) SELECT 1, NULL, NULL "
        f"WHERE NOT EXISTS (SELECT 1 FROM {LOCK_TABLE} WHERE id = 1 AND owner = {quote(owner)});\n"
    )


def release_lock_sql(owner: str) -> str:
    return f"DELETE FROM {LOCK_TABLE} WHERE id = 1 AND owner = {quote(owner)};\n"


def read_lock_holder(wrangler: Wrangler, env: Environment) -> str | None:
    """Who holds the lease now (None: nobody): one wrangler process."""
    rows = wrangler.execute(env, command=f"{LOCK_DDL}\n{_LOCK_QUERY};")[-1].results
    return str(rows[0]["owner"]) if rows and rows[0].get("owner") else None


def release_lock(wrangler: Wrangler, env: Environment, owner: str | None = None) -> None:
    """Release the lock (only `owner`'s lease; None, only from `d1ops unlock` of an unheld lock, any)."""
    where = "" if owner is None else f" AND owner = {quote(owner)}"
    wrangler.execute(env, command=f"{LOCK_DDL}\nDELETE FROM {LOCK_TABLE} WHERE id = 1{where};")


def clear_lock_sql() -> str:
    """Every lease deleted: a whole restore's dump brings back the lock row of the run that took the backup."""
    return f"DELETE FROM {LOCK_TABLE};\n"


def release_stale_lock_sql(owner: str, acquired_at: str) -> str:
    """After a Time Travel restore: delete our own lease, and a lease taken before ours (it came back from
    the past with the restore: while we held the lease, nobody else could take one). A lease taken after ours
    belongs to a run that started after the restore, and stays."""
    return f"DELETE FROM {LOCK_TABLE} WHERE id = 1 AND (owner = {quote(owner)} OR acquired_at < {quote(acquired_at)});"
