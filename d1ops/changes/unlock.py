"""unlock: release a lock left by a run that died. It shows the holder and, on a protected environment,
asks like any other change; it does not take the lock itself (someone else holds it)."""

from __future__ import annotations

from d1ops.project.project import Project
from d1ops.run.sequence import Change, Confirm, Run, RunReport, run_change
from d1ops.run.tracking import read_state, release_lock


class UnlockChange(Change):
    command = "unlock"
    holder: str | None = None
    since: str | None = None

    def read(self, run: Run) -> None:
        run.state = read_state(run.wrangler, self.env)

    def plan(self, run: Run) -> bool:
        assert run.state is not None
        self.holder, self.since = run.state.lock_owner, run.state.lock_acquired_at
        run.report.details = {"holder": self.holder, "held_since": self.since, "released": False}
        return self.holder is not None

    def describe(self) -> str:
        return (
            f"Release the lock on {self.env.name}, held by {self.holder} since {self.since}. Only do this if that "
            "run is dead: a live run would go on without its lock."
        )

    def backup_policy(self) -> str:
        return "skip"  # removing a lock row changes no data

    def wants_bookmark(self) -> bool:
        return False

    def apply(self, run: Run) -> None:
        release_lock(run.wrangler, self.env, self.holder)  # only that holder's row: a newer run's lock stays
        run.report.details["released"] = True


def run_unlock(project: Project, env_name: str, *, confirm: Confirm | None) -> RunReport:
    return run_change(project, UnlockChange(project.config.env(env_name)), confirm=confirm)
