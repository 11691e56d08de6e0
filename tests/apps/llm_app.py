"""An OpenAI-style streaming API (Flask, for gunicorn): a POSTed JSON prompt comes back token by token.

``POST /v1/chat/completions`` answers ``data: {"token": ...}`` per word of ``prompt``, then
``data: [DONE]``, and closes: no ids, as LLM APIs stream; it waits ``wait`` seconds
before it answers (the time to the first token). ``POST /v1/resumable`` sends the same
tokens with ids ``"0"``, ``"1"``, ... and resumes after the request's ``Last-Event-ID``;
a request for a stream already sent to its end gets 204. With ``cut`` in the body, the
tokens of a first request stop after ``cut`` of them, in the middle of the next event,
and the connection is cut (a network drop, not an end). Every request is recorded by
the body's ``k``: ``GET /log?k=KEY`` lists them.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

from flask import Flask, Response, jsonify, request
from flask.typing import ResponseReturnValue

app = Flask(__name__)
requests_seen: list[dict[str, Any]] = []
lock = threading.Lock()
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class Cut(Exception):
    """Raised inside a streamed body: the server drops the connection without ending the body."""


def recorded() -> dict[str, Any]:
    body = request.get_json(force=False, silent=True)
    with lock:
        requests_seen.append({
            "k": body.get("k") if isinstance(body, dict) else None,
            "method": request.method,
            "content_type": request.content_type,
            "body": body,
            "last_event_id": request.headers.get("Last-Event-ID"),
            "authorization": request.headers.get("Authorization"),
        })
    return body if isinstance(body, dict) else {}


def token(word: str, id: str | None = None) -> str:
    head = "" if id is None else f"id: {id}\n"
    return f"{head}data: {json.dumps({'token': word})}\n\n"


@app.post("/v1/chat/completions")
def completions() -> ResponseReturnValue:
    body = recorded()
    if not body.get("prompt"):
        return jsonify(error="a JSON body with a prompt is required"), 400
    words = str(body["prompt"]).split()
    cut = body.get("cut")
    time.sleep(float(body.get("wait", 0)))  # the time to the first token: no response head yet

    def stream() -> Iterator[str]:
        for n, word in enumerate(words):
            if n == cut:
                yield 'data: {"tok'
                raise Cut("cut mid-event")
            yield token(word)
        yield "data: [DONE]\n\n"

    return Response(stream(), mimetype="text/event-stream", headers=HEADERS)


@app.post("/v1/resumable")
def resumable() -> ResponseReturnValue:
    body = recorded()
    words = str(body.get("prompt", "")).split()
    last = request.headers.get("Last-Event-ID")
    start = int(last) + 1 if last is not None and last.isdigit() else 0
    if start >= len(words):
        return Response(status=204)  # sent to its end already: the client stops
    cut = body.get("cut") if last is None else None

    def stream() -> Iterator[str]:
        for n in range(start, len(words)):
            if n == cut:
                yield f'id: {n}\ndata: {{"tok'
                raise Cut("cut mid-event")
            yield token(words[n], str(n))
        yield "data: [DONE]\n\n"

    return Response(stream(), mimetype="text/event-stream", headers=HEADERS)


@app.get("/log")
def log() -> ResponseReturnValue:
    with lock:
        return jsonify([r for r in requests_seen if r["k"] == request.args["k"]])
