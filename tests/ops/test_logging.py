"""Structured logs: JSON lines with the bound context ids, secrets redacted from
messages, extras and tracebacks, and the real worker logging a pipeline's steps."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from hub import logjson
from hub.logcontext import ContextFilter, bind, current, subject_ids
from hub.logjson import JsonFormatter, PlainFormatter, RedactSecretsFilter, redact_text
from hub.pipeline.models import Job, JobStatus, Step
from hub.pipeline.services import job_start
from tenants.secrets import api_key_generate, registration_token_generate
from tests.conftest import WorkerProcess, wait_for

API_KEY = api_key_generate().plaintext
REGISTRATION_TOKEN = registration_token_generate()


class Captured:
    def __init__(self, stream: io.StringIO) -> None:
        self.stream = stream

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines()]

    def text(self) -> str:
        return self.stream.getvalue()


def _handler(formatter: logging.Formatter) -> tuple[logging.Handler, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactSecretsFilter())
    handler.setFormatter(formatter)
    return handler, stream


@pytest.fixture
def json_log() -> Iterator[tuple[logging.Logger, Captured]]:
    """A logger wired as settings.LOGGING wires the console: context, redaction, JSON."""
    handler, stream = _handler(JsonFormatter())
    logger = logging.getLogger("tests.ops.json")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, Captured(stream)
    logger.removeHandler(handler)


def test_a_json_line_has_time_level_logger_message_and_the_bound_ids(
    json_log: tuple[logging.Logger, Captured],
) -> None:
    logger, captured = json_log

    # when
    with bind(order_id=7, job_id=42):
        with bind(step_id=99, tenant_id=None):
            logger.info("step %s ran", "configure")
        logger.warning("after the step")
    logger.info("outside")

    # then
    inner, outer, outside = captured.lines()
    assert inner["message"] == "step configure ran"
    assert inner["level"] == "INFO"
    assert inner["logger"] == "tests.ops.json"
    assert inner["time"].endswith("+00:00")
    assert (inner["order_id"], inner["job_id"], inner["step_id"]) == ("7", "42", "99")
    assert "tenant_id" not in inner
    assert outer["job_id"] == "42" and "step_id" not in outer
    assert not {"order_id", "job_id", "step_id"} & set(outside)
    assert dict(current()) == {}


def test_bind_refuses_an_unknown_id_and_subjects_map_to_their_ids() -> None:
    with pytest.raises(ValueError, match="unknown log context keys"), bind(jobid=1):
        pass
    assert subject_ids("order", 5) == {"order_id": "5"}
    assert subject_ids("rollout", "3") == {"rollout_id": "3"}
    assert subject_ids("demo", "") == {}


def test_extras_and_exceptions_are_in_the_json_line(json_log: tuple[logging.Logger, Captured]) -> None:
    logger, captured = json_log

    # when
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("it broke", extra={"attempt": 3, "when": Path("/tmp")})

    # then
    (line,) = captured.lines()
    assert line["attempt"] == 3
    assert line["when"] == "/tmp"
    assert "RuntimeError: boom" in line["exception"]


def test_secrets_are_redacted_from_messages(json_log: tuple[logging.Logger, Captured]) -> None:
    logger, captured = json_log

    # when
    logger.info("agent registered with %s, got key %s", REGISTRATION_TOKEN, API_KEY)
    logger.info("headers: Authorization: Bearer %s", "abcdefghijklmnopqrstuvwxyz012345")
    logger.info("staff used Token 9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b")
    logger.info("connecting to redis://:hunter2-redis@redis:6379/0 and postgres://hub:pg-pass@db/hub")
    logger.info("config password=hunter2 api_key='k-123' secret: s3cr3t")
    logger.info('payload {"token": "tok-abc", "tokens_used": 1200}')
    logger.info("stripe keys sk_live_51Habc and whsec_abcdef")

    # then
    text = captured.text()
    for secret in (
        REGISTRATION_TOKEN,
        API_KEY.split("_", 2)[2],  # the secret after "hak_<prefix>_"; it may hold "_" itself
        "abcdefghijklmnopqrstuvwxyz012345",
        "9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b",
        "hunter2",
        "pg-pass",
        "k-123",
        "s3cr3t",
        "tok-abc",
        "51Habc",
        "abcdef",
    ):
        assert secret not in text, secret
    # What is no secret stays readable: the key's lookup prefix, hosts, counts.
    assert API_KEY[: len("hak_") + 12] in text
    assert "redis:6379/0" in text and "tokens_used" in text and "1200" in text
    assert "[REDACTED]" in text


def test_secrets_are_redacted_from_extras_and_tracebacks(json_log: tuple[logging.Logger, Captured]) -> None:
    logger, captured = json_log

    # when
    logger.info(
        "request",
        extra={
            "api_key": "plain-api-key-value",
            "headers": {"Authorization": "Bearer zzzzzzzzzzzzzzzzzzzzzz", "Accept": "application/json"},
            "body": {"registration_token": "whatever-it-is", "hostname": "t1.example", "tokens_used": 5},
            "note": f"the agent sent {API_KEY}",
            "password": "",
        },
    )
    try:
        raise ConnectionError(f"cannot reach redis://:tb-secret@redis:6379 with {REGISTRATION_TOKEN}")
    except ConnectionError:
        logger.exception("broker down")

    # then
    first, second = captured.lines()
    assert first["api_key"] == "[REDACTED]"
    assert first["headers"] == {"Authorization": "[REDACTED]", "Accept": "application/json"}
    assert first["body"] == {"registration_token": "[REDACTED]", "hostname": "t1.example", "tokens_used": 5}
    assert API_KEY not in first["note"]
    assert "tb-secret" not in second["exception"] and REGISTRATION_TOKEN not in second["exception"]
    assert "ConnectionError" in second["exception"]


# What log lines are made of, secrets and near-secrets among them, with the characters a
# case-insensitive pattern equates with ASCII letters (long s, Kelvin sign, dotless i).
_FRAGMENTS = (
    "password",
    "PassWord",
    "pa\u017f\u017fword",
    "api_key",
    "API-KEY",
    "private_key",
    "\u212aey",
    "authorization",
    "AUTHOR\u0131ZATION",
    "cookie",
    "token",
    "Token ",
    "Bearer ",
    "bearer ",
    "Basic ",
    "secret",
    "pwd",
    "hak_0123456789ab_",
    "hrt_",
    "sk_live_",
    "rk_test_",
    "whsec_",
    "redis://",
    "user:",
    "@host",
    "=",
    ": ",
    '"',
    "'",
    " ",
    "\n",
    "abcdefghijklmnopqrstuvwxyz0123",
    "x",
    "\u00df",
)


def _every_pattern(text: str) -> str:
    for pattern, replacement, _ in logjson._TEXT_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


@hypothesis_settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_FRAGMENTS), max_size=12).map("".join))
def test_redaction_skips_a_pattern_only_when_it_cannot_match(text: str) -> None:
    # The substring test before each pattern is an optimisation: it must never change
    # what the patterns would have done.
    assert redact_text(text) == _every_pattern(text)


def test_redaction_leaves_ordinary_prose_alone() -> None:
    for text in (
        "token pool at 80% for tenant 12",
        "registration token expired",
        "Token refresh scheduled",
        "GET http://127.0.0.1:8000/healthz 200",
    ):
        assert redact_text(text) == text


def test_plain_format_appends_the_bound_ids() -> None:
    handler, stream = _handler(PlainFormatter("%(levelname)s %(name)s %(message)s"))
    logger = logging.getLogger("tests.ops.plain")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with bind(job_id=1, step_id=2):
            logger.warning("password=x")
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue() == "WARNING tests.ops.plain password=[REDACTED] [job_id=1 step_id=2]\n"


def test_settings_log_through_the_context_and_redaction_filters() -> None:
    console = settings.LOGGING["handlers"]["console"]
    assert console["formatter"] == settings.LOG_FORMAT
    assert console["filters"] == ["context", "redact"]
    root = logging.getLogger()
    assert any(isinstance(f, RedactSecretsFilter) for handler in root.handlers for f in handler.filters), (
        "settings.LOGGING is not applied"
    )


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_the_worker_logs_each_step_as_json_with_its_job_and_step_ids(
    celery_worker: WorkerProcess, tmp_path: Path
) -> None:
    if settings.LOG_FORMAT != "json":
        pytest.skip(f"LOG_FORMAT={settings.LOG_FORMAT} in this environment; the worker logs plain text")

    # when: a real job runs on the real worker
    job = job_start(
        pipeline="test.five_steps", context={"effects_dir": str(tmp_path)}, subject_type="order", subject_id="4242"
    )

    def finished() -> Job | None:
        job.refresh_from_db()
        return job if job.status == JobStatus.SUCCEEDED else None

    wait_for(finished, timeout=30, message=f"job {job.pk} to succeed")
    steps = {step.name: step.pk for step in Step.objects.filter(job=job)}

    def step_lines() -> list[dict[str, Any]]:
        found = []
        for raw in celery_worker.log().splitlines():
            if raw.startswith("{") and "of test.five_steps" in raw:
                line = json.loads(raw)
                if line.get("job_id") == str(job.pk):
                    found.append(line)
        return found if len(found) >= len(steps) else []

    lines = wait_for(step_lines, timeout=10, message="the worker's step log lines")

    # then: one JSON line per step, carrying the job, the step and the job's subject
    by_step = {line["step_id"]: line for line in lines}
    assert set(by_step) == {str(pk) for pk in steps.values()}
    line = by_step[str(steps["s3"])]
    assert line["message"] == "action step s3 of test.five_steps: succeeded"
    assert line["order_id"] == "4242"
    assert line["level"] == "INFO" and line["logger"] == "hub.pipeline.engine"
    # Celery's own lines are JSON too (the setup_logging receiver in hub/celery.py).
    received = [
        raw for raw in celery_worker.log().splitlines() if raw.startswith("{") and "hub.pipeline.run_step[" in raw
    ]
    assert received and all(json.loads(raw)["logger"].startswith("celery") for raw in received[:3])
