"""The Hub watching itself: what its own processes do, kept where every process can
add to it and /metrics (ops/metrics.py) can read it.

- `web`: request latency and status per resolved route (a middleware adds to
  in-process counters, flushed to Redis with one pipelined round trip every
  METRICS_FLUSH_SECONDS, so a heartbeat pays a few dictionary updates, not a write);
- `database`: database errors by class, in every process (a cursor execute wrapper;
  each error is one Redis increment, errors being rare);
- rate-limit waits, 429s and quota use per provider are counted by the token bucket
  itself (hub/integrations/ratelimit.py), inside the Redis script it already runs;
- `periodic`: the last success of every periodic job (Celery's task_success signal
  on the messages beat sends), in Postgres, with each job's period read from the
  beat schedule;
- `checks`: the alerts that follow from them: a periodic job silent for twice its
  period, a provider's bucket above RATE_LIMIT_ALERT_RATIO of its quota."""
