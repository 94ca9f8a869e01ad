"""The Hub's own pipelines. `hub.demo` shows the engine at work on its own:
`python manage.py demo_job` starts one to watch in the admin's job timeline."""

import time

from hub.pipeline.context import StepContext
from hub.pipeline.registry import register
from hub.pipeline.spec import Pipeline, RetryPolicy, StepSpec


def _demo_step(seconds: float):
    def action(ctx: StepContext) -> dict[str, float]:
        ctx.log(f"{ctx.step_name}: working for {seconds}s")
        time.sleep(seconds)
        ctx.log(f"{ctx.step_name}: done")
        return {f"{ctx.step_name}_seconds": seconds}

    return action


register(
    Pipeline(
        name="hub.demo",
        steps=tuple(
            StepSpec(name=name, action=_demo_step(1.0), retry=RetryPolicy(max_attempts=2, base_delay=1))
            for name in ("prepare", "configure", "verify")
        ),
    )
)
