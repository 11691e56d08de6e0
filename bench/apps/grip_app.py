"""The bench service behind Pushpin: sseproto.flask on the in-memory broker (one process
holds the replay and the GRIP publish lock), with SSE_GRIP_URL and SSE_GRIP_KEY from the
environment, so stream requests Pushpin signed get a hold reply and publish() posts to
Pushpin's publish endpoint.

Used by bench/fanout.py (kind ``sseproto-grip-pushpin``). POST /publish publishes the body
to channel ``bench`` (or ``?channel=``: the readiness probe uses its own); GET /stats
reports the streams this process holds itself (none, when every request came through
Pushpin).
"""

from __future__ import annotations

import json
import os

from flask import Flask, request

from sseproto.flask import SSE

app = Flask(__name__)
app.config.update(SSE_GRIP_URL=os.environ["SSE_GRIP_URL"], SSE_GRIP_KEY=os.environ["SSE_GRIP_KEY"])
sse = SSE(app, max_connections=20000, queue_size=1000)


@app.post("/publish")
def publish() -> dict[str, str | None]:
    event = sse.publish(request.get_data(as_text=True), channel=request.args.get("channel", "bench"))
    return {"id": event.id}


@app.get("/stats")
def stats() -> str:
    return json.dumps({"streams": sse.endpoint.active_streams})
