"""Event validation and the encoder: user data can never forge an event or a field."""

from __future__ import annotations

import pytest

from sseproto import Event, LocalProtocolError, ProtocolError, encode_comment
from sseproto._event import MAX_RETRY


def test_defaults_and_fields() -> None:
    e = Event("hi")
    assert (e.data, e.event, e.id, e.retry) == ("hi", "message", None, None)
    assert Event().data == ""


def test_is_immutable() -> None:
    e = Event("x")
    with pytest.raises(AttributeError):
        e.data = "y"  # type: ignore[misc]


def test_equality_only_with_events() -> None:
    assert Event("a", id="1") == Event("a", "message", "1")
    assert Event("a") != ("a", "message", None, None)
    assert len({Event("a"), Event("a"), Event("b")}) == 2


def test_replace_revalidates() -> None:
    assert Event("a")._replace(id="7") == Event("a", id="7")
    with pytest.raises(LocalProtocolError):
        Event("a")._replace(id="x\ny")


def test_minimal_encoding() -> None:
    assert Event("hello").encode() == b"data: hello\n\n"
    assert Event("").encode() == b"data: \n\n"


def test_all_fields_in_order() -> None:
    wire = Event("d", event="update", id="42", retry=1500).encode()
    assert wire == b"id: 42\nevent: update\nretry: 1500\ndata: d\n\n"


def test_message_type_is_not_written() -> None:
    assert b"event:" not in Event("d", event="message", id="1").encode()


@pytest.mark.parametrize("id", ["", "0"])
def test_empty_and_zero_ids_are_sent(id: str) -> None:
    # An empty id resets the client's last event id: it must reach the wire.
    assert Event("d", id=id).encode() == f"id: {id}\ndata: d\n\n".encode()


@pytest.mark.parametrize(
    ("data", "lines"),
    [
        ("a\nb", [b"data: a", b"data: b"]),
        ("a\rb", [b"data: a", b"data: b"]),
        ("a\r\nb", [b"data: a", b"data: b"]),
        ("a\n", [b"data: a", b"data: "]),
        ("\n\n", [b"data: ", b"data: ", b"data: "]),
        ("a\r\n\rb", [b"data: a", b"data: ", b"data: b"]),
    ],
)
def test_line_breaks_become_data_lines(data: str, lines: list[bytes]) -> None:
    assert Event(data).encode() == b"\n".join(lines) + b"\n\n"


@pytest.mark.parametrize("char", ["\u2028", "\u2029", "\x0b", "\x0c", "\x85"])
def test_other_breaks_stay_in_one_line(char: str) -> None:
    assert Event(f"a{char}b").encode() == f"data: a{char}b\n\n".encode()


def test_utf8() -> None:
    assert Event("é✓😀").encode() == "data: é✓😀\n\n".encode()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"event": "a\nb"},
        {"event": "a\rb"},
        {"event": ""},
        {"id": "1\n2"},
        {"id": "1\r"},
        {"id": "a\0b"},
        {"retry": -1},
        {"retry": MAX_RETRY + 1},
        {"retry": True},
        {"retry": 1.5},
        {"retry": "100"},
        {"data": b"bytes"},
        {"data": None},
        {"id": 5},
        {"event": ""},
        {"event": 5},
    ],
)
def test_forging_values_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(LocalProtocolError) as info:
        Event(**{"data": "x", **kwargs})  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, ProtocolError)


def test_unencodable_text_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError, match="UTF-8"):
        Event("\ud800").encode()
    with pytest.raises(LocalProtocolError):
        encode_comment("\udfff")


def test_event_none_is_the_default_type_as_every_peer_takes_it() -> None:
    """sse-starlette's ServerSentEvent(data, event=None), httpx-sse and sseclient-py: None is
    "message"; it used to raise LocalProtocolError here."""
    assert Event("x", event=None) == Event("x") == Event("x", "message")
    assert Event("x", None, "7").encode() == b"id: 7\ndata: x\n\n"
    assert Event("x", event=None).event == "message"


def test_retry_bounds_accepted() -> None:
    assert Event("x", retry=0).encode().startswith(b"retry: 0\n")
    assert Event("x", retry=MAX_RETRY).retry == MAX_RETRY


def test_comments() -> None:
    assert encode_comment() == b":\n"
    assert encode_comment("ping") == b": ping\n"
    assert encode_comment("a\nb\r\nc\rd") == b": a\n: b\n: c\n: d\n"
