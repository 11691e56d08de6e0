"""The incremental decoder: fixtures fed whole, byte by byte and in random splits,
a reference model of the standard, round trips, fuzzing and limits."""

from __future__ import annotations

import random
import re
from itertools import pairwise

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import events, splits

from sseproto import (
    DEFAULT_MAX_EVENT_SIZE,
    DEFAULT_MAX_LINE_SIZE,
    Decoder,
    Event,
    LimitExceeded,
    ProtocolError,
    RemoteProtocolError,
)
from sseproto._event import MAX_RETRY

Result = tuple[list[Event], str, "int | None"]


def reference(stream: bytes, last_event_id: str = "") -> Result:
    """The standard's steps, written plainly over a whole stream: the model the decoder must match."""
    if stream.startswith(b"\xef\xbb\xbf"):
        stream = stream[3:]
        # Chromium, against the standard: a CR or LF right after the BOM is not a line break
        # but the start of an unknown field, so that whole line (through its break) is ignored.
        line = re.match(rb"[\r\n][^\r\n]*(?:\r\n|\r|\n|$)", stream)
        if line is not None:
            stream = stream[line.end() :]
    lines = re.split("\r\n|\r|\n", stream.decode("utf-8", "replace"))
    lines.pop()  # the unterminated rest of the stream is discarded
    out: list[Event] = []
    data: list[str] = []
    kind = ""
    id_buffer = last = last_event_id
    retry: int | None = None
    for line in lines:
        if line == "":
            last = id_buffer
            if data:
                out.append(Event("\n".join(data), kind or "message", id_buffer))
            data, kind = [], ""
            continue
        if line.startswith(":"):
            continue
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
        elif name == "event":
            kind = value
        elif name == "id":
            if "\0" not in value:
                id_buffer = value
        elif name == "retry":
            if value == "":
                retry = None
            elif value.isascii() and value.isdigit() and int(value) <= MAX_RETRY:
                retry = int(value)
    return out, last, retry


def decode(chunks: list[bytes], **kwargs: object) -> Result:
    d = Decoder(**kwargs)  # type: ignore[arg-type]
    out: list[Event] = []
    for c in chunks:
        out += d.feed(c)
    out += d.end()
    # Events carry the retry of their block; compare the stream-level state separately.
    return [e._replace(retry=None) for e in out], d.last_event_id, d.retry


def chunkings(stream: bytes, seed: int = 0) -> list[list[bytes]]:
    """The stream whole, byte by byte, and in several seeded random splits."""
    rng = random.Random(seed)
    out = [[stream], [stream[i : i + 1] for i in range(len(stream))]]
    for _ in range(4):
        cuts = sorted(rng.sample(range(1, len(stream)), min(len(stream) - 1, rng.randint(1, 12))))
        bounds = [0, *cuts, len(stream)]
        out.append([stream[a:b] for a, b in pairwise(bounds)])
    return out


FIXTURES: list[tuple[str, bytes, list[Event], str, int | None]] = [
    ("simple", b"data: a\n\n", [Event("a", id="")], "", None),
    ("crlf", b"data: a\r\n\r\ndata: b\r\n\r\n", [Event("a", id=""), Event("b", id="")], "", None),
    ("cr", b"data: a\r\rdata: b\r\r", [Event("a", id=""), Event("b", id="")], "", None),
    ("mixed", b"data: a\r\ndata: b\rdata: c\n\n", [Event("a\nb\nc", id="")], "", None),
    ("bom", b"\xef\xbb\xbfdata: a\n\n", [Event("a", id="")], "", None),
    ("bom-then-lf", b"\xef\xbb\xbf\ndata: a\n\ndata: b\n\n", [Event("b", id="")], "", None),
    ("bom-then-crlf", b"\xef\xbb\xbf\r\ndata: a\n\n", [Event("a", id="")], "", None),
    ("second-bom-is-data", b"\xef\xbb\xbf\xef\xbb\xbfdata: a\n\n", [], "", None),
    ("no-colon", b"data\n\ndata\ndata\n\n", [Event("", id=""), Event("\n", id="")], "", None),
    ("one-space", b"data:  a \n\n", [Event(" a ", id="")], "", None),
    ("no-space", b"data:a\n\n", [Event("a", id="")], "", None),
    ("type", b"event: t\ndata: a\n\ndata: b\n\n", [Event("a", "t", ""), Event("b", id="")], "", None),
    ("empty-type", b"event:\ndata: a\n\n", [Event("a", id="")], "", None),
    ("id-persists", b"id: 1\ndata: a\n\ndata: b\n\n", [Event("a", id="1"), Event("b", id="1")], "1", None),
    ("id-reset", b"id: 1\ndata: a\n\nid\ndata: b\n\n", [Event("a", id="1"), Event("b", id="")], "", None),
    ("id-nul-ignored", b"id: 1\n\nid: a\0b\ndata: x\n\n", [Event("x", id="1")], "1", None),
    ("id-only-block", b"id: 7\n\n", [], "7", None),
    ("id-undispatched", b"data: a\n\nid: 9\ndata: b\n", [Event("a", id="")], "", None),
    ("no-data-no-event", b"event: t\n\n", [], "", None),
    ("unterminated", b"data: a\n\ndata: b", [Event("a", id="")], "", None),
    ("comment", b": hi\ndata: a\n:\n\n", [Event("a", id="")], "", None),
    ("unknown-field", b"foo: bar\nData: x\ndata: a\n\n", [Event("a", id="")], "", None),
    ("retry", b"retry: 1500\n", [], "", 1500),
    ("retry-bad", b"retry: 15x\nretry: -1\nretry: 1.5\nretry:  5\n", [], "", None),
    ("retry-max", b"retry: 18446744073709551615\n", [], "", MAX_RETRY),
    ("retry-overflow", b"retry: 5\nretry: 18446744073709551616\n", [], "", 5),
    ("retry-empty-resets", b"retry: 5\nretry\n", [], "", None),
    ("retry-leading-zeros", b"retry: 007\n", [], "", 7),
    ("retry-unicode-digits", "retry: ١٢\n".encode(), [], "", None),
    ("utf8", "data: é✓😀\n\n".encode(), [Event("é✓😀", id="")], "", None),
    ("invalid-utf8", b"data: a\xffb\xe2\x82\n\n", [Event("a\ufffdb\ufffd", id="")], "", None),
    ("no-breaks", "data: \u2028\x0b\x0c\x85\n\n".encode(), [Event("\u2028\x0b\x0c\x85", id="")], "", None),
    ("block", b"id: 3\nevent: t\ndata: a\ndata: \ndata:  b\n\n", [Event("a\n\n b", "t", "3")], "3", None),
    ("block-mixed", b"data: a\ndata:b\nid: 4\n: c\ndata: d\n\n", [Event("a\nb\nd", id="4")], "4", None),
    ("block-retry", b"data: a\nretry: 9\ndata: b\n\n", [Event("a\nb", id="")], "", 9),
]


@pytest.mark.parametrize(
    ("name", "stream", "expected", "last_id", "retry"), FIXTURES, ids=[f[0] for f in FIXTURES]
)
def test_fixture_under_every_chunking(
    name: str, stream: bytes, expected: list[Event], last_id: str, retry: int | None
) -> None:
    assert reference(stream) == (expected, last_id, retry), "the reference model disagrees with the fixture"
    for chunks in chunkings(stream):
        assert decode(chunks) == (expected, last_id, retry), chunks


def test_event_retry_reports_its_block() -> None:
    d = Decoder()
    assert d.feed(b"retry: 10\ndata: a\n\ndata: b\n\n") == [Event("a", id="", retry=10), Event("b", id="")]


def test_cr_at_chunk_end_then_lf() -> None:
    d = Decoder()
    assert d.feed(b"data: a\r") == []
    assert d.feed(b"\n") == []
    assert d.feed(b"\r") == [Event("a", id="")]
    assert d.feed(b"\ndata: b\n\n") == [Event("b", id="")]


def test_bom_only_at_start_of_each_connection() -> None:
    d = Decoder()
    assert d.feed(b"\xef\xbb") == []
    assert d.feed(b"\xbfdata: a\n\n") == [Event("a", id="")]
    d.end()
    assert d.feed(b"\xef\xbb\xbfdata: b\n\n") == [Event("b", id="")]


def test_byte_after_leading_bom_is_never_a_line_break() -> None:
    # Chromium (spec/vectors/bom.json): a CR or LF right after a leading BOM starts an
    # unknown field that swallows the next line, whatever the chunking.
    for chunks in ([b"\xef\xbb\xbf", b"\ndata: a\n\n"], [b"\xef\xbb", b"\xbf", b"\r", b"data: a\n\n"]):
        d = Decoder()
        assert [e for c in chunks for e in d.feed(c)] == []
    d = Decoder()
    assert d.feed(b"\xef\xbb\xbf\n\ndata: a\n\n") == [Event("a", id="")]
    d.end()  # each connection's BOM is checked again
    assert d.feed(b"\xef\xbb\xbf\rdata: a\n\ndata: b\n\n") == [Event("b", id="")]


def test_state_kept_across_connections() -> None:
    d = Decoder(last_event_id="5")
    assert d.feed(b"data: a\n\n") == [Event("a", id="5")]
    d.feed(b"id: 6\nretry: 100\ndata: b\n\nid: 7\ndata: half")
    assert d.end() == []
    assert (d.last_event_id, d.retry) == ("6", 100)
    # The dropped event's id does not survive the drop; its half data is gone.
    assert d.feed(b"data: c\n\n") == [Event("c", id="6")]


def test_comments_are_observable() -> None:
    seen: list[str] = []
    d = Decoder(on_comment=seen.append)
    d.feed(b": ping\n")
    assert seen == ["ping"]  # at once, before any blank line
    d.feed(b":\n:  two\r\n")
    assert seen == ["ping", "", " two"]


# -- limits ---------------------------------------------------------------------------


def test_default_limits_are_generous() -> None:
    assert DEFAULT_MAX_LINE_SIZE >= 1 << 20 and DEFAULT_MAX_EVENT_SIZE >= 1 << 20
    big = "x" * (1 << 20)
    assert Decoder().feed(f"data: {big}\n\n".encode()) == [Event(big, id="")]


def test_line_limit_in_one_chunk() -> None:
    d = Decoder(max_line_size=100)
    with pytest.raises(LimitExceeded) as info:
        d.feed(b"data: " + b"x" * 200)
    assert (info.value.limit, info.value.value) == ("max_line_size", 100)
    assert "max_line_size=100" in str(info.value)
    assert isinstance(info.value, RemoteProtocolError)


def test_line_limit_across_chunks_keeps_memory_bounded() -> None:
    d = Decoder(max_line_size=1000)
    with pytest.raises(LimitExceeded):
        for _ in range(10_000):  # 10 MB offered, at most ~1 KB kept
            d.feed(b"x" * 1000)
            assert len(d._buf) <= 2000


def test_events_before_an_error_are_delivered_first() -> None:
    d = Decoder(max_line_size=50)
    assert d.feed(b"data: ok\n\ndata: " + b"y" * 100 + b"\n\n") == [Event("ok", id="")]
    with pytest.raises(LimitExceeded):
        d.feed(b"data: more\n\n")
    with pytest.raises(LimitExceeded):
        d.end()
    # After end() the decoder serves the next connection.
    assert d.feed(b"data: again\n\n") == [Event("again", id="")]


def test_event_limit_counts_all_data_lines() -> None:
    d = Decoder(max_event_size=10)
    assert d.feed(b"data: 123456789\n\n") == [Event("123456789", id="")]
    with pytest.raises(LimitExceeded) as info:
        d.feed(b"data: 12345\ndata: 12345\n\n")
    assert info.value.limit == "max_event_size"


def test_event_limit_in_bulk_runs() -> None:
    d = Decoder(max_event_size=5)
    assert d.feed(b"data: a\n\ndata: toolong\n\ndata: b\n\n") == [Event("a", id="")]
    with pytest.raises(LimitExceeded):
        d.feed(b"")


def test_oversize_first_event_of_a_bulk_run_raises_limit_exceeded() -> None:
    d = Decoder(max_event_size=5)
    with pytest.raises(LimitExceeded):
        d.feed(b"data: toolong\n\ndata: a\n\n")
        d.feed(b"")


def test_ten_megabyte_event_with_small_limit() -> None:
    d = Decoder(max_event_size=1 << 20)
    line = b"data: " + b"z" * 1000 + b"\n"
    with pytest.raises(LimitExceeded):
        for _ in range(10_000):
            d.feed(line)
    assert sum(map(len, d._data)) <= 1 << 20


@pytest.mark.parametrize("kwargs", [{"max_line_size": 0}, {"max_event_size": -1}, {"last_event_id": "a\0"}])
def test_bad_settings(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Decoder(**kwargs)  # type: ignore[arg-type]


# -- properties -----------------------------------------------------------------------


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(events, max_size=8), st.data())
def test_round_trip_under_any_chunking(evs: list[Event], data: st.DataObject) -> None:
    wire = b"".join(e.encode() for e in evs)
    chunks = data.draw(splits(wire))
    d = Decoder()
    got: list[Event] = []
    for c in chunks:
        got += d.feed(c)
    # Data comes back with line breaks normalised to LF; the id is the stream's last id.
    expected = []
    last = ""
    for e in evs:
        last = last if e.id is None else e.id
        data_lf = e.data.replace("\r\n", "\n").replace("\r", "\n")
        expected.append(Event(data_lf, e.event, last, e.retry))
    assert got == expected
    assert d.last_event_id == last


_stream_parts = st.sampled_from(
    [b"data", b"data:", b"data: ", b"event: t", b"id: 1", b"id", b"id: a\0", b"retry: 20", b"retry",
     b"retry: x", b":", b": c", b"\n", b"\r", b"\r\n", b"\n\n", b"\xef\xbb\xbf", b"\xff", b"\xe2\x82",
     b"\xac", b" ", b"x", b"Data: y", "é".encode()]
)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(_stream_parts, st.binary(max_size=6)), max_size=30).map(b"".join), st.data())
def test_matches_reference_model(stream: bytes, data: st.DataObject) -> None:
    assert decode(data.draw(splits(stream))) == reference(stream)


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=64), max_size=20), st.integers(8, 64), st.integers(8, 64))
def test_arbitrary_bytes_raise_only_protocol_errors(chunks: list[bytes], line: int, event: int) -> None:
    d = Decoder(max_line_size=line, max_event_size=event)
    for c in [*chunks, None]:
        try:
            d.feed(c) if c is not None else d.end()
        except ProtocolError:
            pass
        assert len(d._buf) <= 2 * line + 64
        assert d._data_size <= event + 64
