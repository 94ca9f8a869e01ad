"""The provider HTTP policy, as a requests adapter every provider seam mounts:
take a token from the provider's shared bucket before each request; on 429 close the
bucket for everyone for Retry-After seconds and send again; on 5xx back off and send
again; any other answer goes back to the caller. Every wait is bounded."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Mapping
from typing import Any

import requests
from django.conf import settings
from requests.adapters import HTTPAdapter

from hub.integrations.ratelimit import TokenBucket

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = (5.0, 30.0)


def retry_after_seconds(headers: Mapping[str, str], default: float) -> float:
    value = headers.get("Retry-After")
    if value is None:
        reset = headers.get("RateLimit-Reset")
        if reset and reset.isdigit():
            return max(0.0, float(reset) - time.time())
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        return default


class ProviderAdapter(HTTPAdapter):
    def __init__(
        self,
        bucket: TokenBucket,
        *,
        max_rate_limit_wait: float = 300.0,
        server_error_retries: int = 3,
        backoff_base: float = 1.0,
        sleep=time.sleep,
    ) -> None:
        super().__init__()
        self.bucket = bucket
        self.max_rate_limit_wait = max_rate_limit_wait
        self.server_error_retries = server_error_retries
        self.backoff_base = backoff_base
        self.sleep = sleep

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = DEFAULT_TIMEOUT
        started = time.monotonic()
        server_errors = 0
        while True:
            remaining = self.max_rate_limit_wait - (time.monotonic() - started)
            self.bucket.take(max_wait=max(1.0, remaining), sleep=self.sleep)
            response = super().send(request, **kwargs)
            if response.status_code == 429:
                wait = retry_after_seconds(response.headers, default=5.0)
                self.bucket.close_for(wait)
                if time.monotonic() - started + wait > self.max_rate_limit_wait:
                    return response
                logger.warning("%s: 429, waiting %.1fs as Retry-After says", self.bucket.name, wait)
                response.close()
                self.sleep(wait)
                self.bucket.waited(wait)
                continue
            if response.status_code >= 500 and server_errors < self.server_error_retries:
                server_errors += 1
                ceiling = self.backoff_base * 2 ** (server_errors - 1)
                wait = ceiling / 2 + random.uniform(0, ceiling / 2)
                logger.warning("%s: %s, retry %d in %.1fs", self.bucket.name, response.status_code, server_errors, wait)
                response.close()
                self.sleep(wait)
                continue
            return response


def provider_session(bucket: TokenBucket, **adapter_options: Any) -> requests.Session:
    session = requests.Session()
    options = {
        "server_error_retries": settings.PROVIDER_SERVER_ERROR_RETRIES,
        "backoff_base": settings.PROVIDER_SERVER_ERROR_BACKOFF,
        **adapter_options,
    }
    adapter = ProviderAdapter(bucket, **options)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
