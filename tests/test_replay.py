"""The replay buffer: bounded, thread-safe, and honest about gaps."""

from __future__ import annotations

import threading
from itertools import count

import pytest

from sseproto import Event, ReplayBuffer


def test_assigns_increasing_ids_and_keeps_given_ones() -> None:
    buf = ReplayBuffer(counter=count(10))
    a, b = buf.append(Event("a")), buf.append(Event("b"))
    assert (a.id, b.id) == ("11", "12")  # 10 marks where the buffer began
    assert buf.append(Event("c", id="mine")).id == "mine"
    assert [e.data for e in buf] == ["a", "b", "c"]


def test_default_ids_start_at_the_clock() -> None:
    # A restarted process must not reuse ids: the default counter starts at time in µs.
    import time

    first = int(ReplayBuffer().append(Event("x")).id or 0)
    assert abs(first - time.time_ns() // 1000) < 60_000_000


def test_since_known_id() -> None:
    buf = ReplayBuffer()
    evs = [buf.append(Event(str(i))) for i in range(5)]
    assert buf.since(evs[1].id or "") == evs[2:]
    assert buf.since(evs[-1].id or "") == []  # known, nothing after it
    assert buf.last_id == evs[-1].id


def test_unknown_and_evicted_ids_are_gaps() -> None:
    buf = ReplayBuffer(3)
    evs = [buf.append(Event(str(i))) for i in range(6)]
    assert len(buf) == 3
    assert buf.since("nonsense") is None
    assert buf.since(evs[0].id or "") is None  # evicted: events 1 and 2 are lost to it
    # The newest evicted id lost nothing: everything retained follows it.
    assert buf.since(evs[2].id or "") == evs[3:]


def test_shared_counter_orders_channels() -> None:
    ids = count(100)
    a, b = ReplayBuffer(counter=ids), ReplayBuffer(counter=ids)
    a1 = a.append(Event("a1"))
    b1 = b.append(Event("b1"))
    a2 = a.append(Event("a2"))
    # An id from channel b places the client in channel a's history by number.
    assert a.since(b1.id or "") == [a2]
    assert b.since(a2.id or "") == []
    assert b.since(a1.id or "") == [b1]
    # A numeric id older than the buffer itself: what came before is unknown.
    assert a.since("5") is None


def test_numeric_id_before_eviction_is_a_gap() -> None:
    ids = count(1)
    a, b = ReplayBuffer(2, counter=ids), ReplayBuffer(counter=ids)
    first_b = b.append(Event("b"))
    for i in range(4):
        a.append(Event(str(i)))
    assert a.since(first_b.id or "") is None


def test_count_bytes_and_age_bounds() -> None:
    now = [0.0]
    buf = ReplayBuffer(100, max_bytes=40, max_age=10, clock=lambda: now[0])
    for i in range(10):
        buf.append(Event(f"event{i}", id=str(i)))
    assert sum(len(e.encode()) for e in buf) <= 40
    assert [e.id for e in buf][-1] == "9"
    now[0] = 100.0
    assert len(buf) == 0
    assert buf.since("9") == []  # the newest evicted id is still "up to date"
    assert buf.since("8") is None


@pytest.mark.parametrize(
    "kwargs", [{"maxlen": 0}, {"maxlen": 1.5}, {"max_bytes": 0}, {"max_age": 0}, {"max_age": -1.0}]
)
def test_bad_settings(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ReplayBuffer(**kwargs)  # type: ignore[arg-type]


def test_thread_safe_appends_and_reads() -> None:
    buf = ReplayBuffer(50_000)
    start = buf.append(Event("start"))

    def writer() -> None:
        for i in range(2000):
            buf.append(Event(str(i)))

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    seen = 0
    while any(t.is_alive() for t in threads):
        got = buf.since(start.id or "")
        assert got is not None and len(got) >= seen
        seen = len(got)
    for t in threads:
        t.join()
    ids = [int(e.id or 0) for e in buf]
    assert len(ids) == 8001 and ids == sorted(ids) and len(set(ids)) == 8001
