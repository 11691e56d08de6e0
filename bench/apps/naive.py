"""The pattern people write by hand: a Flask view with a generator and a queue per client.

Used by bench/fanout.py as the baseline. POST /publish fans the body out to every queue.
"""

from __future__ import annotations

import json
import queue
import threading

from flask import Flask, Response, request

app = Flask(__name__)
clients: set[queue.Queue[str]] = set()
lock = threading.Lock()
counter = 0


@app.post("/publish")
def publish() -> dict[str, int]:
    global counter
    data = request.get_data(as_text=True)
    with lock:
        counter += 1
        message = f"id: {counter}\ndata: {data}\n\n"
        for q in list(clients):
            q.put(message)
    return {"clients": len(clients)}


@app.get("/stream")
def stream() -> Response:
    q: queue.Queue[str] = queue.Queue()
    with lock:
        clients.add(q)

    def generate():  # type: ignore[no-untyped-def]
        try:
            yield ": open\n\n"
            while True:
                try:
                    yield q.get(timeout=15)
                except queue.Empty:
                    yield ": ping\n\n"
        finally:
            with lock:
                clients.discard(q)

    return Response(generate(), mimetype="text/event-stream", headers={"Cache-Control": "no-cache"})


@app.get("/stats")
def stats() -> str:
    return json.dumps({"subscribers": len(clients)})
