"""The incremental decoder: every stream-state rule of the event-stream format lives here.

It follows the WHATWG HTML standard, "Server-sent events": section 9.2.5 "Parsing an event
stream" (cited as "parsing") and 9.2.6 "Interpreting an event stream" (cited as
"interpretation"), and matches Chromium's native EventSource where the standard leaves
room. Bytes in, events out: no I/O happens here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from itertools import repeat
from operator import itemgetter

from ._errors import LimitExceeded, RemoteProtocolError
from ._event import MAX_RETRY, Event

#: Default largest line, in bytes without its line break.
DEFAULT_MAX_LINE_SIZE = 4 * 1024 * 1024
#: Default largest event, in characters of data (each data line counts one more for its LF).
DEFAULT_MAX_EVENT_SIZE = 4 * 1024 * 1024

_BOM = b"\xef\xbb\xbf"
# Fast paths for the shapes servers send, taken only between events: a run of
# "data: <one line>" events, decoded in bulk; and the "id:" and "event:" lines that
# may open a one-line event (an id holding NUL is left to the general path).
# The run pattern stops at long values (sre scans them slower than str.find): the
# one-event path takes those.
_SIMPLE_RUN = re.compile(r"(?:data: [^\n]{0,256}\n\n)+")
_HEAD = re.compile(r"(?:id: ([^\n\0]*)\n|)(?:event: ([^\n]+)\n|)data: ")  # "|)" is faster than ")?"
_after_data_prefix = itemgetter(slice(6, None))
_tuple_new = tuple.__new__


class Decoder:
    """Turns the bytes of one ``text/event-stream`` response into :class:`Event` objects.

    Feed chunks of any size, split anywhere (inside a UTF-8 sequence or a CRLF too).
    Call :meth:`end` when the connection closes: the unfinished event is dropped, as
    browsers do, and the decoder is ready for the next connection with its
    ``last_event_id`` and ``retry`` kept. ``on_comment`` is called with the text of
    every comment line (heartbeats).

    Limits: a line of more than ``max_line_size`` bytes, or an event with more than
    ``max_event_size`` characters of data, raises :class:`LimitExceeded`. Events
    completed before the offending line are returned first and the error is raised by
    the next call; after it, only :meth:`end` resets the decoder.
    """

    def __init__(
        self,
        *,
        last_event_id: str = "",
        max_line_size: int = DEFAULT_MAX_LINE_SIZE,
        max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
        on_comment: Callable[[str], object] | None = None,
    ) -> None:
        for name, value in (("max_line_size", max_line_size), ("max_event_size", max_event_size)):
            if type(value) is not int or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(last_event_id, str) or "\0" in last_event_id:
            raise ValueError(f"last_event_id must be a str without NUL, got {last_event_id!r}")
        # Interpretation: the EventSource's "last event ID string", and the "last event ID
        # buffer" that a dispatch copies into it.
        self._last_event_id = last_event_id
        self._id_buffer = last_event_id
        self._retry: int | None = None
        self._max_line = max_line_size
        self._max_event = max_event_size
        self._on_comment = on_comment
        self._reset_stream()

    def _reset_stream(self) -> None:
        self._buf = bytearray()  # the line not yet ended
        self._at_start = True  # the BOM check is still to be made
        self._skip_lf = False  # the last chunk ended in CR: a leading LF belongs to it
        self._special = True  # one of the two flags above, or an error, is set
        self._error: RemoteProtocolError | None = None
        self._data: list[str] = []  # the "data buffer", one entry per data line
        self._data_size = 0
        self._type = ""  # the "event type buffer"
        self._event_retry: int | None = None  # a valid retry field in this event's block

    @property
    def last_event_id(self) -> str:
        """The id a reconnecting client sends as ``Last-Event-ID`` ("" means none)."""
        return self._last_event_id

    @property
    def retry(self) -> int | None:
        """The reconnection time in ms the stream asked for, or None for the client's default."""
        return self._retry

    def feed(self, chunk: bytes) -> list[Event]:
        """Take the next bytes of the stream; return the events they complete, in order."""
        if self._special:
            chunk = self._special_start(chunk)
        buf = self._buf
        # Membership tests take ints: much faster than a one-byte bytes needle.
        if 10 not in chunk and 13 not in chunk:
            buf += chunk
            if len(buf) > self._max_line and len(buf) - buf.rfind(10) - 1 > self._max_line:
                self._fail(self._line_error(len(buf) - buf.rfind(10) - 1))
                raise self._error  # type: ignore[misc]
            return []
        if 13 in chunk:
            # Parsing: lines end with CRLF, LF or CR. A CR ending this chunk ends its line
            # now; an LF starting the next chunk then belongs to it and is skipped.
            if chunk[-1] == 13:
                self._skip_lf = self._special = True
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        # Interpret up to the last blank line when there is one, so interpretation starts
        # between events, where the fast paths apply; the lines after it wait for the next
        # chunk (or end()), unless they hold a comment, which is passed on at once.
        cut = chunk.rfind(b"\n\n") + 2
        if cut == 1:
            cut = chunk.rfind(10) + 1
        else:
            # Only the complete lines after the cut can hold a comment: search just those.
            last = chunk.rfind(10)
            if last >= cut and (chunk[cut] == 58 or chunk.find(b"\n:", cut, last + 2) >= 0):
                cut = last + 1
        region: bytes | bytearray
        if buf:
            # Deleting from the front of a bytearray is cheap: no copy of what stays.
            buf += chunk
            region = buf[: len(buf) - len(chunk) + cut]
            del buf[: len(region)]
        else:
            region = chunk[:cut]
            buf += chunk[cut:]
        error: RemoteProtocolError | None = None
        if len(region) > self._max_line:
            # Only a region this large can hold a line over the limit: find the first one.
            start = 0
            for line in region.split(b"\n"):
                if len(line) > self._max_line:
                    error = self._line_error(len(line))
                    region = region[:start]
                    break
                start += len(line) + 1
        if error is None and len(buf) > self._max_line:
            last = len(buf) - buf.rfind(10) - 1
            if last > self._max_line:
                error = self._line_error(last)
        events = self._interpret(region.decode("utf-8", "replace"))
        if error is not None and self._error is None:
            self._error = error
            self._special = True
        if self._error is not None:
            self._buf = bytearray()
            self._data.clear()
            if not events:
                raise self._error
        return events

    def end(self) -> list[Event]:
        """The connection closed: drop the unfinished event and get ready for the next one.

        Interpretation: "Once the end of the file is reached, any pending data must be
        discarded" -- so this returns no event; it raises an error still pending.
        """
        if self._error is None and not self._at_start:
            # Complete lines still buffered may hold fields (retry, id) but no dispatch.
            cut = self._buf.rfind(10) + 1
            if cut:
                self._interpret(bytes(self._buf[:cut]).decode("utf-8", "replace"))
        error = self._error
        self._reset_stream()
        # The next connection's id buffer starts from the last event id string, as
        # browsers do: an id field of the dropped event does not survive the drop.
        self._id_buffer = self._last_event_id
        if error is not None:
            raise error
        return []

    def _special_start(self, chunk: bytes) -> bytes:
        """Handle the rare states: an error, the stream's first bytes, a CR ending the last chunk."""
        if self._error is not None:
            raise self._error
        if self._at_start:
            # Parsing: "One leading U+FEFF BYTE ORDER MARK character must be ignored if any
            # are present" -- at the very start of the stream only.
            if self._buf:
                chunk = bytes(self._buf) + chunk
                self._buf.clear()
            if len(chunk) <= 3 and _BOM.startswith(chunk):
                self._buf += chunk  # too short to tell yet (a BOM waits for the byte after it)
                return b""
            self._at_start = False
            if chunk.startswith(_BOM):
                chunk = chunk[3:]
                if chunk[0] in (10, 13):
                    # Chromium never takes the byte right after a leading BOM as a line break:
                    # it starts an unknown field that swallows the rest of that line. A NUL
                    # in its place (never part of a known field name) does the same here.
                    chunk = b"\0" + chunk[1:]
        if self._skip_lf and chunk:
            self._skip_lf = False
            if chunk[0] == 10:
                chunk = chunk[1:]
        self._special = self._at_start or self._skip_lf
        return chunk

    def _interpret(self, text: str) -> list[Event]:
        """Interpretation of complete lines (``text`` ends with LF): fields and dispatches."""
        events: list[Event] = []
        append = events.append
        max_event = self._max_event
        pos = 0
        end = len(text)
        last = end - 1  # text ends with LF: an LF before it may be followed by a blank line
        clean = not self._data and not self._type and self._event_retry is None
        while pos < end:
            if clean:
                # Indexing one character first is much cheaper than a failing startswith.
                if text[pos] == "d" and text.startswith("data: ", pos):
                    run = _SIMPLE_RUN.match(text, pos)
                    if run is not None:
                        if self._bulk(text[pos : run.end() - 2].split("\n\n"), events) < 0:
                            return events
                        pos = run.end()
                        continue
                head = _HEAD.match(text, pos)
                if head is not None:
                    start = head.end()
                    nl = text.index("\n", start)
                    if nl < last and text[nl + 1] == "\n":
                        value: str | None = text[start:nl]
                        after = nl + 2
                    else:
                        # Several lines: when every one is a "data: " line, the event's data
                        # is the block with those prefixes dropped (no loop over its lines).
                        value = None
                        blank = text.find("\n\n", nl)
                        if blank > 0:
                            block = text[start:blank]
                            if block.count("\n") == block.count("\ndata: "):
                                value = block.replace("\ndata: ", "\n")
                                after = blank + 2
                    if value is not None and len(value) < max_event:
                        id_value, type_value = head.groups()
                        if id_value is None:
                            id_value = self._id_buffer
                        else:
                            self._id_buffer = id_value
                        self._last_event_id = id_value
                        append(_tuple_new(Event, (value, type_value or "message", id_value, None)))
                        pos = after
                        continue
            nl = text.index("\n", pos)
            if text.startswith("data: ", pos):
                # The commonest field, taken without slicing the line twice.
                value = text[pos + 6 : nl]
                pos = nl + 1
                clean = False
                self._data.append(value)
                self._data_size += len(value) + 1
                if self._data_size > max_event:
                    self._fail(self._event_error(self._data_size))
                    return events
                continue
            line = text[pos:nl]
            pos = nl + 1
            if not line:
                # "If the line is empty": dispatch the event. Step 1: the last event ID
                # string takes the buffer's value, whether or not an event follows.
                self._last_event_id = self._id_buffer
                data = self._data
                if data:
                    # Steps 2-3: an empty data buffer dispatches nothing; its final LF goes.
                    # Step 5: an empty event type buffer means "message".
                    events.append(
                        _tuple_new(
                            Event,
                            (
                                data[0] if len(data) == 1 else "\n".join(data),
                                self._type or "message",
                                self._id_buffer,
                                self._event_retry,
                            ),
                        )
                    )
                    data.clear()
                    self._data_size = 0
                self._type = ""
                self._event_retry = None
                clean = True
                continue
            colon = line.find(":")
            if colon == 0:
                # "If the line starts with a U+003A COLON character": a comment.
                if self._on_comment is not None:
                    self._on_comment(line[2:] if line[1:2] == " " else line[1:])
                continue
            clean = False
            if colon < 0:
                # No colon: the whole line is the field name and the value is empty.
                name, value = line, ""
            else:
                # One leading space of the value is dropped, no more.
                name = line[:colon]
                value = line[colon + 2 :] if line[colon + 1 : colon + 2] == " " else line[colon + 1 :]
            if name == "data":
                self._data.append(value)
                self._data_size += len(value) + 1
                if self._data_size > max_event:
                    self._fail(self._event_error(self._data_size))
                    return events
            elif name == "event":
                self._type = value
            elif name == "id":
                # A value containing NUL is ignored.
                if "\0" not in value:
                    self._id_buffer = value
            elif name == "retry":
                if not value:
                    # Chromium resets the reconnection time to its default on an empty retry.
                    self._retry = self._event_retry = None
                elif value.isascii() and value.isdigit():
                    # Only ASCII digits count; Chromium ignores what overflows 64 bits.
                    ms = int(value)
                    if ms <= MAX_RETRY:
                        self._retry = self._event_retry = ms
            # Any other field is ignored.
        return events

    def _bulk(self, blocks: list[str], events: list[Event]) -> int:
        """Dispatch a run of one-line ``data:`` events at C speed; -1 if one is too large."""
        # A block is "data: " + value; the value counts one more for its LF.
        if max(map(len, blocks), default=0) - 5 > self._max_event:
            for i, block in enumerate(blocks):
                if len(block) - 5 > self._max_event:
                    self._bulk(blocks[:i], events)
                    self._fail(self._event_error(len(block) - 5))
                    return -1
        if blocks:
            self._last_event_id = last_id = self._id_buffer
            events += map(
                _tuple_new,
                repeat(Event),
                zip(map(_after_data_prefix, blocks), repeat("message"), repeat(last_id), repeat(None)),
            )
        return 0

    def _line_error(self, size: int) -> LimitExceeded:
        return LimitExceeded(
            "max_line_size",
            self._max_line,
            f"a line of at least {size} bytes exceeds max_line_size={self._max_line}; "
            "raise the limit on the Decoder if such lines are expected",
        )

    def _event_error(self, size: int) -> LimitExceeded:
        return LimitExceeded(
            "max_event_size",
            self._max_event,
            f"an event with at least {size} characters of data exceeds max_event_size="
            f"{self._max_event}; raise the limit on the Decoder if such events are expected",
        )

    def _fail(self, error: RemoteProtocolError) -> None:
        """Record the error; :meth:`feed` raises it now or after returning earlier events."""
        if self._error is None:
            self._error = error
            self._special = True
        self._buf = bytearray()
        self._data.clear()
