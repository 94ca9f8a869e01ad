"""hub.collector: the cyclic garbage collector paused around bulk work, and given back."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest

from hub.collector import collector_paused


@pytest.fixture(autouse=True)
def collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


def test_a_pause_turns_the_collector_off_and_back_on_even_on_error() -> None:
    with pytest.raises(RuntimeError), collector_paused():
        assert not gc.isenabled()
        raise RuntimeError("the check failed")
    assert gc.isenabled()

    @collector_paused()
    def check() -> bool:
        return gc.isenabled()

    assert check() is False and gc.isenabled()


def test_overlapping_pauses_keep_it_off_until_the_last_one_ends() -> None:
    inside, release = threading.Event(), threading.Event()

    def other_thread() -> None:
        with collector_paused():
            inside.set()
            release.wait(5)

    thread = threading.Thread(target=other_thread)
    with collector_paused():
        thread.start()
        assert inside.wait(5)
    assert not gc.isenabled(), "the other thread's pause is still on"
    release.set()
    thread.join(5)
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off() -> None:
    gc.disable()
    with collector_paused():
        pass
    assert not gc.isenabled()
