"""A plain WSGI app (no framework) serving sseproto.wsgi streams, with the same test endpoints."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qs

from sseproto import Event
from sseproto.brokers import MemoryBroker
from sseproto.wsgi import EventStreamApp, Options, event_from

broker = MemoryBroker(queue_size=int(os.environ.get("SSE_QUEUE_SIZE", "1000")))
streams = EventStreamApp(
    broker, Options(heartbeat=float(os.environ.get("SSE_HEARTBEAT", "0.3")), retry=200, max_connections=50)
)


def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "")
    if path == "/sse/stream":
        return streams(environ, start_response)
    if path == "/publish":
        body = json.loads(environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)))
        data = event_from(body["data"])
        assert data is not None
        event = Event(data.data, body.get("event") or "message")
        ids = [broker.publish(body.get("channel") or "sse", event).id for _ in range(body.get("repeat", 1))]
        return reply(start_response, {"id": ids[-1], "ids": ids})
    if path == "/count":
        channel = parse_qs(environ.get("QUERY_STRING", "")).get("channel", [None])[0]
        return reply(start_response, {"subscribers": broker.subscriber_count(channel),
                                      "streams": streams.active_streams})
    if path == "/end":
        return reply(start_response, {"ended": broker.disconnect_all()})
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found\n"]


def reply(start_response: Any, data: object) -> list[bytes]:
    body = json.dumps(data).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
