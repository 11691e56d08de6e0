"""A service holding a long history: 16 channels x 1,000 events of 1 KiB, published at start.

Used by bench/replay_memory.py. Runs on whichever sseproto is first on sys.path, so the
benchmark can serve the same app from two checkouts side by side.
"""

from __future__ import annotations

import json
import os

from flask import Flask

import sseproto
from sseproto import Event
from sseproto.flask import SSE

CHANNELS = [f"c{i}" for i in range(16)]

app = Flask(__name__)
sse = SSE(app, max_connections=20000, heartbeat=60)
for n in range(int(os.environ.get("HISTORY", "1000"))):
    for channel in CHANNELS:
        sse.broker.publish(channel, Event(f"{n:04d}" + "x" * 1020))


@app.get("/rss")
def rss() -> str:
    with open("/proc/self/status") as status:
        kb = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return json.dumps({"rss_kb": kb, "streams": sse.endpoint.active_streams, "sseproto": sseproto.__file__})
