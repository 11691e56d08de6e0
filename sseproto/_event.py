"""Events and the encoder: what goes on the wire, built so user data can never forge a field."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

from ._errors import LocalProtocolError

#: Largest ``retry`` a browser accepts (Chromium parses it as an unsigned 64-bit integer).
MAX_RETRY = 2**64 - 1

_MESSAGE = "message"
_tuple_new = tuple.__new__


class _Fields(NamedTuple):
    data: str
    event: str
    id: str | None
    retry: int | None


class Event(_Fields):
    """One server-sent event: immutable, validated at construction.

    ``data`` may hold any text; CR, LF and CRLF in it become separate ``data:`` lines
    (no other character counts as a line break). ``event`` and ``id`` are single lines;
    ``id`` may not contain NUL (browsers would ignore it). ``event=None`` means the default
    type, ``"message"``, as every peer library takes it. ``retry`` is the reconnection
    time in milliseconds. A decoded event's ``id`` is the stream's last event id at
    dispatch, as a browser's ``MessageEvent.lastEventId``.

    A tuple underneath (not a dataclass) because the decoder builds events in bulk at C
    speed; it compares equal only to other events.
    """

    __slots__ = ()

    def __new__(
        cls,
        data: str = "",
        event: str | None = "message",
        id: str | None = None,
        retry: int | None = None,
    ) -> Event:
        if event is None:
            event = _MESSAGE
        if type(data) is str and event is _MESSAGE and id is None and retry is None:
            return _tuple_new(cls, (data, event, None, None))  # the commonest event: nothing to check
        if not isinstance(data, str):
            raise LocalProtocolError(f"data must be str, not {type(data).__name__}")
        if event is not _MESSAGE:  # the interned default needs no check
            if not isinstance(event, str) or not event:
                raise LocalProtocolError(f"event must be a non-empty str, got {event!r}")
            if "\n" in event or "\r" in event:
                raise LocalProtocolError(f"event must not contain CR or LF: {event!r}")
        if id is not None:
            if not isinstance(id, str):
                raise LocalProtocolError(f"id must be str or None, not {type(id).__name__}")
            if "\n" in id or "\r" in id or "\0" in id:
                raise LocalProtocolError(f"id must not contain CR, LF or NUL: {id!r}")
        if retry is not None and (type(retry) is not int or not 0 <= retry <= MAX_RETRY):
            raise LocalProtocolError(
                f"retry must be an int of milliseconds from 0 to 2**64-1, got {retry!r}"
            )
        return _tuple_new(cls, (data, event, id, retry))

    @classmethod
    def _make(cls, iterable: Iterable[Any]) -> Event:  # type: ignore[override]
        return cls(*iterable)

    def _replace(self, **changes: Any) -> Event:
        return type(self)(**{**self._asdict(), **changes})

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Event) and tuple.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    __hash__ = tuple.__hash__

    def encode(self) -> bytes:
        """The event as UTF-8 wire bytes, ending with the blank line that dispatches it."""
        data, event, id, retry = self
        if event is _MESSAGE and id is None and retry is None and "\n" not in data and "\r" not in data:
            try:
                return f"data: {data}\n\n".encode()
            except UnicodeEncodeError as exc:
                raise LocalProtocolError(f"event holds text UTF-8 cannot encode: {exc}") from None
        if "\n" in data or "\r" in data:
            data = data.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\ndata: ")
        if id is None and retry is None and event == "message":
            text = f"data: {data}\n\n"
        else:
            head = "" if id is None else f"id: {id}\n"
            if event != "message":
                head += f"event: {event}\n"
            if retry is not None:
                head += f"retry: {retry}\n"
            text = f"{head}data: {data}\n\n"
        try:
            return text.encode()
        except UnicodeEncodeError as exc:
            raise LocalProtocolError(f"event holds text UTF-8 cannot encode: {exc}") from None


def encode_comment(text: str = "") -> bytes:
    """A comment block (one ``:`` line per line of ``text``): ignored by clients, keeps idle streams alive."""
    if "\n" in text or "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\n: ")
    try:
        return f": {text}\n".encode() if text else b":\n"
    except UnicodeEncodeError as exc:
        raise LocalProtocolError(f"comment holds text UTF-8 cannot encode: {exc}") from None
