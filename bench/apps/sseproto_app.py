"""The same service on sseproto: the Flask extension on the embedded in-memory broker,
or on the Redis broker when SSE_BROKER_URL is set (then with any number of workers).

Used by bench/fanout.py. POST /publish publishes the body to channel ``bench``;
GET /stats reports the open streams.
"""

from __future__ import annotations

import json
import os

from flask import Flask, request

from sseproto.flask import SSE

app = Flask(__name__)
# Heartbeats as the default; a connection limit above the benchmark's client count.
sse = SSE(app, max_connections=20000, queue_size=1000, broker_url=os.environ.get("SSE_BROKER_URL"))


@app.post("/publish")
def publish() -> dict[str, str | None]:
    event = sse.publish(request.get_data(as_text=True), channel="bench")
    return {"id": event.id}


@app.get("/stats")
def stats() -> str:
    return json.dumps({"streams": sse.endpoint.active_streams})
