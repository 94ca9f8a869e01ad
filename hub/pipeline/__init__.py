"""The persisted step-pipeline engine (DESIGN.md: Postgres is the source of truth).

Read it bottom up:

- spec.py: how a pipeline is declared (Pipeline, StepSpec, RetryPolicy, StepDeferred);
- registry.py: pipelines by name, found in every app's `pipelines` module at start-up;
- models.py: Job and Step rows, their statuses;
- transitions.py: the state machine (queue, retry, fail, compensate, finish), run with
  the job row locked; the lowest module, which the others build on;
- claim.py: taking a step under a lease (one prepared statement in the usual case);
- lease.py: one thread per worker process renews the running steps' leases and flushes
  their logs;
- engine.py: claim, run, record (one statement for the usual success, which also
  claims the next step for the worker to run at once);
- wakes.py: a step waiting on an event the Hub receives is woken by it (the port);
- stopping.py: whether this worker is shutting down (then it runs on no step);
- reaper.py: what the broker lost (dead workers, lost messages, due retries, deadlines);
- services.py: start, retry and cancel a job; selectors.py: jobs and their timelines;
- tasks.py, apis.py, serializers.py, urls.py: the Celery and HTTP doors."""
