"""A Flask app streaming from Redis (``SSE_BROKER_URL`` from the environment), with test endpoints."""

from __future__ import annotations

import os

from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue

from sseproto.brokers import BrokerUnavailable
from sseproto.flask import SSE

app = Flask(__name__)
app.config.update(
    SSE_BROKER_URL=os.environ["SSE_BROKER_URL"],
    SSE_HEARTBEAT=float(os.environ.get("SSE_HEARTBEAT", "0.3")),
    SSE_RETRY=200,
    SSE_MAX_CONNECTIONS=500,
    SSE_QUEUE_SIZE=int(os.environ.get("SSE_QUEUE_SIZE", "1000")),
)
sse = SSE(app)


@app.post("/publish")
def publish() -> ResponseReturnValue:
    body = request.get_json()
    try:
        event = sse.publish(body["data"], event=body.get("event"), channel=body.get("channel"))
    except BrokerUnavailable as exc:
        return jsonify(error=str(exc)), 503
    return jsonify(id=event.id)


@app.get("/count")
def count() -> ResponseReturnValue:
    broker = sse.broker
    return jsonify(subscribers=broker.subscriber_count(request.args.get("channel")),  # type: ignore[attr-defined]
                   streams=sse.endpoint.active_streams, pid=os.getpid())


@app.post("/end")
def end() -> ResponseReturnValue:
    return jsonify(ended=sse.broker.disconnect_all(), pid=os.getpid())  # type: ignore[attr-defined]
