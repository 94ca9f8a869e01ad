from hub.pipeline.tasks import reap, run_step

__all__ = ["reap", "run_step"]
