"""The replay buffer: bounded, thread-safe, and honest about gaps."""

from __future__ import annotations

import threading
from itertools import count

import pytest

from sseproto import Event, ReplayBuffer


def test_assigns_increasing_ids_and_keeps_given_ones() -> None:
    buf = ReplayBuffer(counter=count(10))
    a, b = buf.append(Event("a")), buf.append(Event("b"))
    assert (a.id, b.id) == ("10", "11")
    assert buf.append(Event("c", id="mine")).id == "mine"
    assert [e.data for e in buf] == ["a", "b", "c"]


def test_default_ids_are_the_clock_in_microseconds_and_increase() -> None:
    # A restarted process must not reuse ids, and ids must not count other streams' events.
    import time

    buf = ReplayBuffer()
    first = int(buf.append(Event("x")).id or 0)
    assert abs(first - time.time_ns() // 1000) < 60_000_000
    ids = [int(buf.append(Event(str(i))).id or 0) for i in range(1000)]
    assert ids == sorted(set(ids)) and ids[0] > first


def test_time_ids_shared_by_buffers_reveal_time_not_counts() -> None:
    """Regression: with one counter, the id jump between two events of a public channel
    counted the events published on a secret channel in between."""
    import time

    from sseproto._replay import TimeIds

    ids = TimeIds()
    public, secret = ReplayBuffer(counter=ids), ReplayBuffer(counter=ids)
    time.sleep(0.002)  # the clock moves on: what follows is not pushed by earlier ids
    before = int(public.append(Event("p1")).id or 0)
    for i in range(500):
        secret.append(Event(str(i)))
    time.sleep(0.002)
    after = int(public.append(Event("p2")).id or 0)
    elapsed_us = (after - before)
    # The jump is the time that passed (the 500 secret events, within far fewer
    # microseconds than 500 each, do not push it), not 501.
    assert abs(after - time.time_ns() // 1000) < 1_000_000
    assert elapsed_us >= 2000


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


def test_any_id_is_found_by_what_it_is() -> None:
    """Regression: a numeric id the application chose ("1", "2": row ids) counted as
    unknown, below the time-based floor, and every resume replayed the whole history."""
    buf = ReplayBuffer()
    own = [buf.append(Event(f"row {i}", id=str(i))) for i in range(1, 6)]
    assert buf.since("3") == own[3:]
    given = buf.append(Event("x"))  # a broker id between the application's own
    named = buf.append(Event("y", id="row-9"))
    assert buf.since("5") == [given, named]
    assert buf.since(given.id or "") == [named]
    assert buf.since("row-9") == []


def test_a_repeated_id_resumes_after_its_newest_event() -> None:
    buf = ReplayBuffer()
    buf.append(Event("a", id="same"))
    b = buf.append(Event("b"))
    c = buf.append(Event("c", id="same"))
    d = buf.append(Event("d"))
    assert buf.since("same") == [d]
    assert buf.position("same") == buf.position(c.id or "") and buf.position(b.id or "") is not None


def test_a_shared_order_places_events_of_several_buffers() -> None:
    order = count()
    a, b = ReplayBuffer(order=order), ReplayBuffer(order=order)
    a1 = a.append(Event("a1", id="7"))
    b1 = b.append(Event("b1"))
    a2 = a.append(Event("a2", id="3"))
    assert a.position("7") == 0 and b.position(b1.id or "") == 1 and a.position("3") == 2
    assert [item.event for item in a.after(1)[0]] == [a2] and a.after(1)[1] is False
    assert [item.event for item in b.after(0)[0]] == [b1]
    assert a.position(b1.id or "") is None  # an id is known only where it was stored
    assert a.since("5") is None and a1.id == "7"


def test_after_reports_what_was_evicted_past_a_position() -> None:
    order = count()
    a, b = ReplayBuffer(2, order=order), ReplayBuffer(order=order)
    b.append(Event("b"))  # position 0
    for i in range(4):
        a.append(Event(str(i)))  # positions 1..4; 1 and 2 evicted
    stored, lost = a.after(0)
    assert lost and [item.event.data for item in stored] == ["2", "3"]
    assert a.after(2) == (a.after(2)[0], False)
    assert all(item.wire == item.event.encode() for item in stored)  # encoded once, shared


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
