"""The same service on Flask-SSE (Redis pub/sub, one Redis connection per stream).

Used by bench/fanout.py as the peer of the Redis broker. Needs REDIS_URL.
"""

from __future__ import annotations

import os

from flask import Flask, request
from flask_sse import sse

app = Flask(__name__)
app.config["REDIS_URL"] = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
app.register_blueprint(sse, url_prefix="/stream")


@app.post("/publish")
def publish() -> dict[str, int]:
    sse.publish(request.get_data(as_text=True), channel="bench")
    return {"ok": 1}
