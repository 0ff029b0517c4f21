"""The safety net before any change: the Time Travel bookmark (remote) and the verified backup the policy asks for."""

from __future__ import annotations

from typing import TYPE_CHECKING

from d1ops.backups.take import bookmark_restore_command, take_backup
from d1ops.errors import (
    BackupFailed,
    WranglerError,
)

if TYPE_CHECKING:
    from d1ops.run.sequence import Change, Run


def take_safety(run: Run, change: Change) -> None:
    """The Time Travel bookmark (remote) and the verified backup the policy asks for, before any change."""
    env, report = run.env, run.report
    policy = change.backup_policy()
    if change.wants_bookmark():
        try:
            info = run.wrangler.time_travel_info(env)
            report.bookmark = str(info.get("bookmark") or "") or None
        except WranglerError as exc:
            if policy == "required":
                raise BackupFailed(
                    f"Could not record a Time Travel bookmark of {env.name}: {exc.detail}. {change.untouched()}"
                ) from exc
            report.warnings.append(f"no Time Travel bookmark: {exc.detail}")
        if report.bookmark:
            report.restore_command = bookmark_restore_command(env, report.bookmark)
    if policy == "skip":
        return
    state = run.state
    try:
        result = take_backup(
            run.project,
            env,
            tables=change.backup_tables(),
            label=change.backup_label or change.command,
            verify=env.verify,
            head=state.applied_names[-1] if state and state.applied else None,
            bookmark=report.bookmark,
            schema=run.schema,
            export=change.backup_export(),
        )
    except BackupFailed as exc:
        if policy == "required":
            raise BackupFailed(f"{exc.message}\n{change.untouched()}") from exc
        report.warnings.append(f"backup failed (backup: optional, so the run went on): {exc.message}")
        return
    if result is None:
        report.backup = {"skipped": "the database holds no tables yet: nothing to back up"}
        return
    report.backup = result.summary()
    run.safety_backup = result
    if not result.verified:
        message = f"The backup {result.path} did not verify: {result.problem}."
        if policy == "required":
            raise BackupFailed(f"{message}\n{change.untouched()}")
        report.warnings.append(message)
