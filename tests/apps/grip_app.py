"""A Flask app behind Pushpin: sseproto.flask with SSE_GRIP_URL and SSE_GRIP_KEY from the
environment, a channel no one may read ("secret"), and an endpoint to publish."""

from __future__ import annotations

import os

from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue

from sseproto.flask import SSE

app = Flask(__name__)
app.config.update(
    SSE_HEARTBEAT=float(os.environ.get("SSE_HEARTBEAT", "1")),
    SSE_RETRY=200,
    SSE_GRIP_URL=os.environ.get("SSE_GRIP_URL") or None,
    SSE_GRIP_KEY=os.environ.get("SSE_GRIP_KEY") or None,
)
sse = SSE(app, authorize=lambda channel: channel != "secret")


@app.post("/publish")
def publish() -> ResponseReturnValue:
    body = request.get_json()
    ids = [sse.publish(body["data"], channel=body.get("channel")).id for _ in range(body.get("repeat", 1))]
    return jsonify(id=ids[-1], ids=ids)


@app.get("/count")
def count() -> ResponseReturnValue:
    return jsonify(streams=sse.endpoint.active_streams)
