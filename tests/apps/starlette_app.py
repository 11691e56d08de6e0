"""An sse-starlette app for uvicorn: a peer's server that our clients must read exactly.

``/stream?k=KEY&per=N&sep=SEP`` sends :data:`EVENTS` (ids, event types, multi-line data,
an empty data field, explicit comments and sse-starlette's own pings) N at a time with
the line ends ``sep`` names (``crlf``, sse-starlette's default; ``lf``; ``cr``): each
response resumes after the request's ``Last-Event-ID``, sends the next N and ends, and a
request for the last id gets 204.
``/ticks?k=KEY`` is an endless stream of numbered events (id ``t<n>``) resuming after
``Last-Event-ID``; its record gets ``closed: true`` when sse-starlette sees the client go.
Every request carrying ``k`` is recorded: ``/log?k=KEY`` lists them.
Run with ``uvicorn apps.starlette_app:app``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

#: The events of /stream, in order; ``None`` stands for a pause longer than the ping interval.
EVENTS: list[ServerSentEvent | None] = [
    ServerSentEvent("first", id="1", retry=50),  # retry: the client comes back quickly
    ServerSentEvent("line one\nline two\r\nline three", id="2", event="update"),
    ServerSentEvent(comment="between two events"),
    None,  # sse-starlette pings here (a comment)
    ServerSentEvent("ünïcødé ✓ 🚀", id="3", event="update"),
    ServerSentEvent('{"n": 4}', id="4"),
    ServerSentEvent("", id="5"),  # one empty data line: an event whose data is ""
    ServerSentEvent("last", id="6", event="done"),
]
IDS = [e.id for e in EVENTS if e is not None and e.id is not None]
PING = 0.2
SEPARATORS = {"crlf": "\r\n", "lf": "\n", "cr": "\r"}

requests_seen: list[dict[str, str | bool | None]] = []


def record(request: Request) -> dict[str, str | bool | None]:
    entry: dict[str, str | bool | None] = {}
    if "k" in request.query_params:
        entry = {
            "k": request.query_params["k"],
            "path": request.url.path,
            "method": request.method,
            "last_event_id": request.headers.get("last-event-id"),
            "accept": request.headers.get("accept"),
            "closed": False,
        }
        requests_seen.append(entry)
    return entry


async def stream(request: Request) -> Response:
    record(request)
    per = int(request.query_params.get("per", "3"))
    sep = SEPARATORS[request.query_params.get("sep", "crlf")]
    last = request.headers.get("last-event-id")
    if last == IDS[-1]:
        return Response(status_code=204)  # all sent: the client stops
    start = 0
    if last in IDS:
        start = next(i for i, e in enumerate(EVENTS) if e is not None and e.id == last) + 1

    async def events() -> AsyncIterator[ServerSentEvent]:
        sent = 0
        for item in EVENTS[start:]:
            if item is None:
                await anyio.sleep(PING * 2.5)
                continue
            yield ServerSentEvent(item.data, event=item.event, id=item.id, retry=item.retry,
                                  comment=item.comment, sep=sep)
            if item.id is not None:
                sent += 1
                if sent == per:
                    return  # the response ends: the client reconnects with Last-Event-ID

    return EventSourceResponse(events(), ping=PING, sep=sep)


async def ticks(request: Request) -> Response:
    entry = record(request)
    last = request.headers.get("last-event-id") or "t-1"
    first = int(last[1:]) + 1

    async def events() -> AsyncIterator[ServerSentEvent]:
        n = first
        try:
            while True:
                yield ServerSentEvent(f"tick {n}", id=f"t{n}")
                n += 1
                await anyio.sleep(0.02)
        finally:
            entry["closed"] = True  # the client went away (sse-starlette cancels the stream)

    return EventSourceResponse(events(), ping=PING)


async def log(request: Request) -> Response:
    return JSONResponse([r for r in requests_seen if r["k"] == request.query_params["k"]])


app = Starlette(routes=[Route("/stream", stream), Route("/ticks", ticks), Route("/log", log)])
