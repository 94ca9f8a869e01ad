"""The rollouts under the fleet freeze (hub.freeze): at the freeze every running
rollout takes back the updates no agent has been handed yet (back to PENDING, as a
pause does) and nothing is judged, advanced, started, resumed, retried or promoted;
at the unfreeze the stage's deadline moves by the time spent frozen and the taken
back updates are sent again. Updates already delivered finish on their own; a
rollback still runs, since it is the way out of a bad update."""

from __future__ import annotations

from hub.freeze import FreezeChange
from rollouts.models import Rollout, RolloutStatus, UpdateStatus
from rollouts.services.dispatch import updates_resend, updates_withdraw
from rollouts.services.transitions import current_stage, rollout_locked

FREEZE_ACTOR = "fleet-freeze"


def rollouts_on_freeze_change(change: FreezeChange) -> None:
    """Called by hub.freeze inside the transaction that flips the switch."""
    running = Rollout.objects.filter(status=RolloutStatus.RUNNING).order_by("id").values_list("pk", flat=True)
    for rollout_id in list(running):
        rollout = rollout_locked(rollout_id)
        if rollout.status != RolloutStatus.RUNNING:
            continue
        if change.frozen:
            updates_withdraw(
                rollout=rollout,
                actor=FREEZE_ACTOR,
                reason=f"fleet frozen by {change.actor}: {change.reason}".rstrip(": "),
                to_status=UpdateStatus.PENDING,
            )
            continue
        stage = current_stage(rollout)
        if stage is not None and stage.deadline_at is not None and change.previous_since is not None:
            stage.deadline_at += change.at - change.previous_since
            stage.save(update_fields=["deadline_at"])
        updates_resend(rollout=rollout, statuses=[UpdateStatus.PENDING], actor=FREEZE_ACTOR, now=change.at)
