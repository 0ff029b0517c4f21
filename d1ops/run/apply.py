"""The apply: the one place that builds and sends a batch that changes a database.

Every change (migrate, promote, rollback, execute, adopt, restore) hands the run what it wants applied, as a
`Batch`; `send_batch` alone wraps it and sends it:

    lease guard (fails the whole batch if this run no longer holds the lease) → row guard's counts
    → the change's statements and tracking rows → row guard's check (fails the batch on undeclared loss)
    → the lock's release → one `wrangler d1 execute --file`

D1 runs the file atomically. After a failed batch, whether the lease guard refused it is read from the lock
row itself (`lease_lost`), never from the text of an error. After a call whose outcome is unknown,
`read_back_state` reads what the database holds, with the same retries for every change.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

from d1ops.errors import LockHeld, MigrationFailed, OutcomeUnknown, WranglerError
from d1ops.project.config import Environment
from d1ops.run.lease import lease_guard_sql, read_lock_holder, release_lock_sql
from d1ops.run.tracking import EnvState, read_state
from d1ops.sql.rowguard import RowGuard, guard_failure, row_guard
from d1ops.sql.schema import DatabaseSchema
from d1ops.wrangler.runner import Statement

if TYPE_CHECKING:
    from d1ops.run.sequence import Run

READ_BACK_ATTEMPTS = 3


@dataclass
class Batch:
    """What a change wants applied: its statements (text, or a writer for batches too large to hold in memory)
    and tracking rows. The run adds the lease guard before and the release after."""

    name: str  # the batch file's name in the run's work folder, e.g. "migrate"
    body: str | Callable[[TextIO], None]
    keep_results: bool = True  # False: wrangler's per-statement results are not kept (large restores)
    release: bool = True  # False: the batch leaves the lock to the run (one-by-one migrations before the last)
    ends_lease: bool = False  # the body itself ends the lease (a whole restore drops and replaces the lock table)
    guard: list[tuple[str, str]] | None = None  # (name, SQL) of the changes the row guard watches (None: no guard)


def batch_text(owner: str, body: str, *, release: bool = True, guard: RowGuard | None = None) -> str:
    """The SQL of one apply batch as a string, in `send_batch`'s order: lease guard, row guard's counts, body,
    row guard's check, release (fleets send it over the D1 API; `send_batch` writes the same pieces to a file)."""
    start, end = (guard.start_sql, guard.end_sql) if guard else ("", "")
    return lease_guard_sql(owner) + start + body + end + (release_lock_sql(owner) if release else "")


def send_batch(run: Run, batch: Batch) -> list[Statement]:
    """Write the batch (guard first, release last) and send it in one wrangler process. Returns the results of
    the change's own statements (the guard's and the release's taken off).

    Raises OutcomeUnknown when the call may have reached D1 but did not finish; LockHeld when the lease guard
    refused the batch (nothing applied); WranglerError for any other failure (nothing applied)."""
    path = run.work / f"{batch.name}.sql"
    guard = row_guard_of(run, batch)
    with path.open("w", encoding="utf-8") as out:
        out.write(lease_guard_sql(run.owner))
        out.write(guard.start_sql if guard else "")
        if isinstance(batch.body, str):
            out.write(batch.body)
        else:
            batch.body(out)
        out.write(guard.end_sql if guard else "")
        if batch.release:
            out.write(release_lock_sql(run.owner))
    try:
        result = run.wrangler.execute(run.env, file=path, discard_results=not batch.keep_results)
    except WranglerError as exc:
        if not isinstance(exc, OutcomeUnknown):  # an answer from D1: the batch did nothing; why?
            refused = guard_failure(exc.detail) if guard else None
            if refused is not None:
                raise MigrationFailed(f"{refused}\nFix the migration, or declare the loss.") from exc
            lost = lease_lost(run, batch.name)
            if lost is not None:
                raise lost from exc
        raise
    if batch.release or batch.ends_lease:
        run.applied()
    if not batch.keep_results or len(result) < 2:
        return []
    first = 1 + (len(guard.start) if guard else 0)
    last = len(result) - (1 if batch.release else 0) - (len(guard.end) if guard else 0)
    return result[first:last]


def row_guard_of(run: Run, batch: Batch) -> RowGuard | None:
    """The row guard around this batch: each table's rows (and SET NULL / SET DEFAULT links) counted at its
    start and checked at its end, inside the same atomic batch (no extra process). None when the batch watches
    nothing, the environment turned it off (`row_guard: false`), or the schema was not read."""
    return row_guard_for(run.env, run.schema, batch.guard)


def row_guard_for(
    env: Environment, schema: DatabaseSchema | None, changes: list[tuple[str, str]] | None
) -> RowGuard | None:
    """The row guard of a batch applying `changes` ((name, SQL)) to a database of `schema` in `env`: None when
    it watches nothing, `row_guard: false`, or the schema was not read. (A fleet's batches use it too.)"""
    if changes is None or not env.row_guard or schema is None:
        return None
    return row_guard(schema, changes)


def lease_lost(run: Run, command: str) -> LockHeld | None:
    """After a failed batch: read the lock row (one process). If this run no longer holds the lease, the guard
    refused the batch as a whole; say so. Otherwise None (the change's own SQL failed)."""
    try:
        holder = read_lock_holder(run.wrangler, run.env)
    except WranglerError:
        return None  # cannot tell: the change's own failure message stands
    if holder == run.owner:
        return None
    run.locked = False  # not ours: nothing of ours to release
    name = run.env.name
    now = f"{holder} holds it now" if holder else "nobody holds it now"
    return LockHeld(
        f"This run no longer held the lease on {name} when it came to apply ({now}: it expired after "
        f"D1OPS_LEASE_MINUTES and another run took it over, or it was released with `d1ops unlock`). D1 refused "
        f"the {command} batch as a whole: nothing of it was applied. See `d1ops status {name}`; if runs need "
        "longer, raise D1OPS_LEASE_MINUTES."
    )


def read_back_state(run: Run) -> EnvState | None:
    """After an apply whose outcome is unknown: what the database holds now, read up to 3 times (1 s, 2 s
    apart); None if it could not be read. Nothing is re-applied."""
    run.wrangler.forget_remote_failure()
    for attempt in range(READ_BACK_ATTEMPTS):
        try:
            return read_state(run.wrangler, run.env)
        except WranglerError:
            if attempt < READ_BACK_ATTEMPTS - 1:
                time.sleep(1.0 * (attempt + 1))
    return None
