"""The Hub's settings plus one trivial DRF view (bench/urls.py), so the heartbeat
benchmark can measure the same server on a request that does nothing."""

from hub.settings import *  # noqa: F403

ROOT_URLCONF = "bench.urls"
