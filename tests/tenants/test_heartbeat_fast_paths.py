"""The heartbeat's hand-written fast paths (serializer and parser) decide exactly as
the general code they skip: they may hand a payload over to it, never judge it
differently."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from rest_framework import serializers

from tenants.http import MAX_JSON_DEPTH, _check_storable, _may_be_unstorable
from tenants.serializers import HeartbeatInputSerializer
from tests.tenants.conftest import HEARTBEAT

NUMBERS = st.one_of(
    st.integers(min_value=-5, max_value=10**11),
    st.floats(min_value=-5, max_value=2e5, allow_nan=False),
    st.sampled_from([0, 100, 100.0, 100.0001, 100_000, 100_001, 10**10, 10**10 + 1, -0.0]),
)
ODD = st.one_of(st.booleans(), st.none(), st.text(max_size=5), st.lists(st.integers(), max_size=2))
CONTAINER = st.fixed_dictionaries(
    {"name": st.one_of(st.text(max_size=130), st.integers()), "state": st.text(max_size=34)},
    optional={"health": st.one_of(st.none(), st.text(max_size=34)), "extra": st.integers()},
)
FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "disk_percent": st.one_of(NUMBERS, ODD),
    "memory_percent": st.one_of(NUMBERS, ODD),
    "load": st.one_of(NUMBERS, ODD),
    "uptime_seconds": st.one_of(NUMBERS, ODD),
    "containers": st.one_of(st.lists(CONTAINER, max_size=3), ODD),
    "versions": st.one_of(st.dictionaries(st.text(max_size=8), st.one_of(st.text(max_size=8), st.integers())), ODD),
    "tls_expires_at": st.one_of(
        st.none(),
        st.sampled_from(
            [
                "2027-01-15T00:00:00Z",
                "2027-01-15T02:30:00+02:30",
                "2027-01-15T00:00:00",
                "2027-01-15",
                "20270115T000000Z",
                "1999-12-31T23:59:59Z",
                "2200-12-31T23:59:59-05:00",
                "9999-12-31T23:59:59-05:00",
                "2027-13-01",
                "now",
            ]
        ),
        ODD,
    ),
}
VALID = st.fixed_dictionaries(
    {
        "disk_percent": st.one_of(st.integers(0, 100), st.floats(0, 100)),
        "memory_percent": st.one_of(st.integers(0, 100), st.floats(0, 100)),
        "load": st.floats(0, 100_000),
        "uptime_seconds": st.integers(0, 10**10),
    },
    optional={
        "containers": st.lists(st.fixed_dictionaries({"name": st.just("app"), "state": st.just("running")})),
        "versions": st.just({"agent": "1.0.0"}),
        "tls_expires_at": st.just("2027-01-15T00:00:00Z"),
    },
)
# A valid heartbeat with a field or two changed or dropped: mostly near the boundary
# between the quick path and DRF, where a difference would hide.
CHANGES = st.lists(
    st.sampled_from([*FIELDS, "surprise"]).flatmap(lambda name: st.tuples(st.just(name), FIELDS.get(name, ODD))),
    max_size=2,
)
HEARTBEATS = st.builds(
    lambda valid, changes, dropped: {k: v for k, v in {**valid, **dict(changes)}.items() if k != dropped},
    VALID,
    CHANGES,
    st.one_of(st.none(), st.sampled_from(list(FIELDS))),
)


def drf_decision(data: Any) -> tuple[bool, Any]:
    serializer = HeartbeatInputSerializer()
    try:
        # the general path, as DRF runs it without the fast path
        return True, serializers.Serializer.run_validation(serializer, data)
    except serializers.ValidationError:
        return False, None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(HEARTBEATS)
@example(HEARTBEAT)
@example({**HEARTBEAT, "disk_percent": True})
@example({**HEARTBEAT, "uptime_seconds": 1.0})
@example({**HEARTBEAT, "containers": None})
@example({**HEARTBEAT, "tls_expires_at": "2200-12-31T23:59:59-05:00"})
@example({**HEARTBEAT, "tls_expires_at": "2027-01-15T00:00:00"})
@example({**HEARTBEAT, "tls_expires_at": "9999-12-31T23:59:59-05:00"})
def test_the_quick_check_accepts_only_what_drf_accepts_and_validates_it_the_same(data):
    quick = HeartbeatInputSerializer()._validated_quickly(data)

    if quick is not None:
        accepted, validated = drf_decision(data)
        assert accepted, f"quick path accepted what DRF refuses: {data!r}"
        assert quick == dict(validated)
        assert [type(quick[k]) for k in sorted(quick)] == [type(validated[k]) for k in sorted(quick)]


@pytest.mark.parametrize(
    "data",
    [
        HEARTBEAT,
        {k: v for k, v in HEARTBEAT.items() if k not in ("containers", "versions", "tls_expires_at")},
        {**HEARTBEAT, "disk_percent": 41, "tls_expires_at": None, "containers": []},
    ],
)
def test_an_ordinary_heartbeat_takes_the_quick_path(data):
    # otherwise the fast path has silently stopped doing its job
    assert HeartbeatInputSerializer()._validated_quickly(data) == dict(drf_decision(data)[1])


JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(alphabet=st.characters(codec="utf-8"), max_size=6)),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=40,
)


@settings(max_examples=400, deadline=None)
@given(JSON_VALUES, st.booleans())
@example("\x00", False)
@example({"a": "\x00"}, True)
@example([[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]], False)
def test_the_parser_skips_the_storable_walk_only_when_the_text_proves_it_would_pass(value, ascii_only):
    raw = json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")

    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return  # refused by the parser: nothing to store
    if not _may_be_unstorable(raw):
        _check_storable(parsed)  # must not raise


def test_a_nul_or_deep_nesting_still_gets_the_walk():
    assert _may_be_unstorable(json.dumps({"name": "a\x00b"}).encode())
    assert _may_be_unstorable(b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1))
    assert not _may_be_unstorable(json.dumps(HEARTBEAT).encode())
