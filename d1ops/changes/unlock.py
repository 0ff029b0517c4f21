"""unlock: release a lock left by a run that died. It shows the holder and, on a protected environment,
asks like any other change; it does not take the lock itself (someone else holds it)."""

from __future__ import annotations

from d1ops.errors import GateRefused
from d1ops.project.config import Environment
from d1ops.project.project import Project
from d1ops.run.lease import release_lock
from d1ops.run.report import RunReport
from d1ops.run.sequence import Change, Confirm, Run, run_change
from d1ops.run.tracking import read_state


class UnlockChange(Change):
    command = "unlock"
    holder: str | None = None
    since: str | None = None

    def __init__(self, env: Environment, confirm: Confirm | None = None) -> None:
        super().__init__(env)
        self.confirm = confirm
        self.live = False
        self.age = ""
        self.expires: str | None = None

    def read(self, run: Run) -> None:
        run.state = read_state(run.wrangler, self.env)

    def plan(self, run: Run) -> bool:
        state = run.state
        assert state is not None
        self.holder, self.since = state.lock_owner, state.lock_acquired_at
        self.live, self.age, self.expires = state.lease_live(), state.lock_age(), state.lock_expires_at
        run.report.details = {
            "holder": self.holder,
            "held_since": self.since,
            "held_for": self.age or None,
            "lease_live": self.live,
            "lease_expires_at": self.expires,
            "released": False,
        }
        if self.holder is not None and self.live and not self.env.protected:  # protected ones: the run asks
            try:
                if self.confirm is None:
                    raise GateRefused("Nothing was released.")
                self.confirm(self.env, self.describe())
            except GateRefused as exc:
                raise GateRefused(f"{self.describe()}\n{exc.message}") from None
        return self.holder is not None

    def describe(self) -> str:
        held = f"held by {self.holder} since {self.since}" + (f" ({self.age} ago)" if self.age else "")
        if self.live:
            until = f"until {self.expires}" if self.expires else "with no expiry"
            return (
                f"The lock on {self.env.name} is {held}, and its lease is live ({until}): that run may still be "
                "going. Release it only if you know it is dead (a live run would go on without its lock); "
                "otherwise wait for it, or for the lease to expire (the next run then takes it over)."
            )
        lease = f"its lease expired at {self.expires}" if self.expires else "it has no lease (no expiry)"
        return (
            f"Release the lock on {self.env.name}, {held}; {lease}. Only do this if that run is dead: a live run "
            "would go on without its lock."
        )

    def backup_policy(self) -> str:
        return "skip"  # removing a lock row changes no data

    def wants_bookmark(self) -> bool:
        return False

    def apply(self, run: Run) -> None:
        release_lock(run.wrangler, self.env, self.holder)  # only that holder's row: a newer run's lock stays
        run.report.details["released"] = True


def run_unlock(project: Project, env_name: str, *, confirm: Confirm | None) -> RunReport:
    return run_change(project, UnlockChange(project.config.env(env_name), confirm), confirm=confirm)
