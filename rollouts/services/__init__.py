"""Every write of the rollouts app, one module per concern:

- releases: a component's versions, pinned by digest;
- plans: creating a rollout, its stages, a dry-run preview, submitting a draft;
- transitions: the audited status moves of rollouts and stages;
- dispatch: the per-tenant updates of a stage, sent, withdrawn and resent in bulk;
- lifecycle: start, pause, resume, promote, abort, roll back, retry, halts;
- evaluate: the beat job that syncs outcomes and judges every running rollout."""

from rollouts.services.dispatch import stage_send_rest
from rollouts.services.evaluate import EvaluateReport, rollout_evaluate, rollouts_evaluate, updates_sync_outcomes
from rollouts.services.lifecycle import (
    rollout_abort,
    rollout_pause,
    rollout_promote,
    rollout_resume,
    rollout_retry,
    rollout_rollback,
    rollout_start,
)
from rollouts.services.plans import (
    RolloutPreview,
    StageSpec,
    default_stages,
    rollout_create,
    rollout_preview,
    rollout_submit,
    stage_spec_errors,
)
from rollouts.services.releases import (
    IMAGE_RE,
    release_create,
    release_get_or_create,
    release_mark_default,
    release_spec_errors,
)

__all__ = [
    "IMAGE_RE",
    "EvaluateReport",
    "RolloutPreview",
    "StageSpec",
    "default_stages",
    "release_create",
    "release_get_or_create",
    "release_mark_default",
    "release_spec_errors",
    "rollout_abort",
    "rollout_create",
    "rollout_evaluate",
    "rollout_pause",
    "rollout_preview",
    "rollout_promote",
    "rollout_resume",
    "rollout_retry",
    "rollout_rollback",
    "rollout_start",
    "rollout_submit",
    "rollouts_evaluate",
    "stage_send_rest",
    "stage_spec_errors",
    "updates_sync_outcomes",
]
