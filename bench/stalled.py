"""Stalled readers on waitress: what clients that never read cost the server, and what bounds it.

One waitress process, started the way the README says (``--threads N
--channel-request-lookahead=1``) plus any ``--waitress`` options, runs the test app
(tests/apps/fault_app.py: the Flask extension, in-memory broker, queue of ``--queue``
events per subscriber). Loopback only. Then:

1. ``--stalled`` clients open a stream of one channel and never read (4 KiB receive
   buffer); one healthy client reads the same channel.
2. ``--events`` events of ``--size`` bytes are published in bursts of 10 over HTTP.
3. Reported: the publishing time; the server's VmRSS before and after, and its peak
   (VmHWM); what waitress spilled to temp files (open deleted files under the temp dir);
   the healthy client's events received and its delay (publish → receive, p50 and max);
   stalled subscribers still subscribed and stream slots still held (each holds a waitress
   thread too); whether a new stream is still served.
4. The stalled clients stay connected until ``--hold`` seconds after publishing while
   their slots are watched (do they ever come back?); then they close, and the time until
   their slots are back is reported.

``--user-timeout S`` runs waitress through ``waitress.serve()`` instead, with the same
options plus ``TCP_USER_TIMEOUT`` (Linux) on every connection: the kernel aborts a
connection whose sent data stays unacknowledged (a zero window too) for S seconds.

    python bench/stalled.py                               # as the README runs waitress
    python bench/stalled.py --waitress=--outbuf-high-watermark=262144
    python bench/stalled.py --compare       # defaults; RECOMMENDED; RECOMMENDED + TCP_USER_TIMEOUT 5 s
    python bench/stalled.py --stalled 20 --events 800 --threads 48 --max-connections 24 --hold 2

Every loop is bounded in count and in time; the script stops the server in any case.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from sseproto import Decoder

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
PY = sys.executable
#: What README.md proposes for waitress behind stalled readers (see --compare).
RECOMMENDED = ["--outbuf-high-watermark=65536"]
BURST = 10


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def spilled(pid: int) -> tuple[int, int]:
    """Temp files the process holds open though deleted (waitress's overflowed buffers): count, bytes."""
    tmp = os.path.realpath(tempfile.gettempdir())
    count = size = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
            if target.startswith(tmp) and target.endswith("(deleted)"):
                count += 1
                size += os.stat(fd).st_size
        except OSError:
            pass
    return count, size


# waitress.serve() with the same options as the command line, plus TCP_USER_TIMEOUT (Linux,
# in ms) on every accepted connection: the kernel aborts a connection whose data stays
# unacknowledged (a zero window too) that long. Waitress sets Adjustments.socket_options on
# each connection it accepts, but takes no such option from serve() or its command line,
# hence the class attribute.
LAUNCHER = """
import json, socket, sys
from waitress import serve
from waitress.adjustments import Adjustments
from apps.fault_app import app
options = json.loads(sys.argv[1])
timeout = options.pop("user_timeout_ms")
Adjustments.socket_options = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),
                              (socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, timeout)]
serve(app, **options)
"""


def start(port: int, threads: int, extra: list[str], env: dict[str, str],
          user_timeout: float | None = None) -> subprocess.Popen[bytes]:
    """waitress on the test app, from its command line (or, for ``user_timeout``, from serve())."""
    cli = [f"--listen=127.0.0.1:{port}", f"--threads={threads}", "--channel-request-lookahead=1", *extra]
    if user_timeout is None:
        cmd = [PY, "-m", "waitress", *cli, "apps.fault_app:app"]
    else:
        options = dict(arg[2:].replace("-", "_").split("=", 1) for arg in cli)
        cmd = [PY, "-c", LAUNCHER, json.dumps({**options, "user_timeout_ms": int(user_timeout * 1000)})]
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)]), **env}
    proc = subprocess.Popen(cmd, cwd=TESTS, env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"waitress exited with {proc.returncode}: {shlex.join(cmd)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            time.sleep(0.05)
    stop(proc)
    raise TimeoutError("waitress did not start")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(5)


def stalled_stream(port: int, channel: str) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET /sse/stream?channel={channel} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    head = sock.recv(4096)
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"a stalled stream was refused: {head[:60]!r}")
    return sock


class Healthy:
    """A client that reads one channel as fast as it can (HTTP/1.0: no chunked framing)."""

    def __init__(self, port: int, channel: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=1)
        self.sock.sendall(f"GET /sse/stream?channel={channel} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        self.delays: list[float] = []  # publish -> receive, per event
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.read, daemon=True)
        self.thread.start()

    def read(self) -> None:
        decoder = Decoder()
        head = b""
        in_body = False
        while not self.done.is_set():  # until closed
            try:
                data = self.sock.recv(262144)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            if not in_body:
                head += data
                if b"\r\n\r\n" not in head:
                    continue
                in_body = True
                data = head.partition(b"\r\n\r\n")[2]
            now = time.time()
            self.delays += [now - float(event.data.split(" ", 1)[0]) for event in decoder.feed(data)]

    def close(self) -> None:
        self.done.set()
        self.sock.close()
        self.thread.join(5)


def count(url: str, channel: str) -> dict[str, Any]:
    """The app's /count: ``subscribers`` of ``channel``, ``streams`` (stream slots held) in all."""
    r = requests.get(url + "/count", params={"channel": channel}, timeout=10)
    r.raise_for_status()
    return dict(r.json())


def wait(check: Callable[[], bool], seconds: float) -> bool:
    """Poll ``check`` until true or ``seconds`` pass; whether it came true."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def run(args: argparse.Namespace, extra: list[str], user_timeout: float | None) -> dict[str, Any]:
    """One server, one measurement; the figures by name."""
    port = free_port()
    env = {"SSE_QUEUE_SIZE": str(args.queue), "SSE_MAX_CONNECTIONS": str(args.max_connections),
           "SSE_HEARTBEAT": "1", "SSE_BROKER_URL": ""}
    proc = start(port, args.threads, extra, env, user_timeout)
    url = f"http://127.0.0.1:{port}"
    channel = "stalled-" + uuid.uuid4().hex[:8]
    stalled: list[socket.socket] = []
    healthy: Healthy | None = None
    out: dict[str, Any] = {"waitress": " ".join(extra) or "(defaults)"}
    if user_timeout is not None:
        out["waitress"] += f" + TCP_USER_TIMEOUT {user_timeout:g} s"
    try:
        requests.get(url + "/count", timeout=10).raise_for_status()  # the app is imported
        healthy = Healthy(port, channel)
        stalled = [stalled_stream(port, channel) for _ in range(args.stalled)]
        if not wait(lambda: count(url, channel)["subscribers"] == args.stalled + 1, 10):
            raise RuntimeError(f"subscribers: {count(url, channel)['subscribers']}, not {args.stalled + 1}")
        out["rss_before_mb"] = status_kb(proc.pid, "VmRSS") / 1024
        pad = "x" * args.size
        started = time.monotonic()
        slowest = 0.0
        for _ in range(args.events // BURST):  # bounded: each request at most 10 s
            t = time.monotonic()
            r = requests.post(url + "/publish", json={"data": f"{time.time():.6f} {pad}", "channel": channel,
                                                     "repeat": BURST}, timeout=10)
            r.raise_for_status()
            slowest = max(slowest, time.monotonic() - t)
        published_at = time.monotonic()
        out["publish_s"] = published_at - started
        out["slowest_publish_s"] = slowest
        published = args.events // BURST * BURST
        wait(lambda: len(healthy.delays) >= published, 30)
        out["healthy_received"] = f"{len(healthy.delays)}/{published}"
        delays = sorted(healthy.delays) or [math.nan]
        out["healthy_delay_p50_ms"] = statistics.median(delays) * 1000
        out["healthy_delay_max_ms"] = delays[-1] * 1000
        time.sleep(0.5)  # the stalled streams' threads have settled
        out["rss_after_mb"] = status_kb(proc.pid, "VmRSS") / 1024
        out["rss_growth_mb"] = out["rss_after_mb"] - out["rss_before_mb"]
        out["rss_peak_mb"] = status_kb(proc.pid, "VmHWM") / 1024
        files, size = spilled(proc.pid)
        out["temp_files"] = files
        out["temp_mb"] = size / 2**20
        status = count(url, channel)
        out["stalled_still_subscribed"] = status["subscribers"] - 1
        out["stalled_streams_held"] = status["streams"] - 1  # each also holds a waitress thread
        t = time.monotonic()
        with requests.get(url + f"/sse/stream?channel=other-{channel}", stream=True, timeout=10) as r:
            out["new_stream_status"] = r.status_code
        out["new_stream_s"] = time.monotonic() - t
        wait(lambda: count(url, channel)["streams"] <= status["streams"], 5)  # the probe's slot is back
        # Do the stalled streams ever give their slots back while the clients stay connected?
        back = wait(lambda: count(url, channel)["streams"] <= 1, max(0.0, published_at + args.hold - t))
        waited = time.monotonic() - published_at
        out["slots_back_after_publish_s"] = f"{waited:.1f}" if back else f"not within {waited:.1f}"
        out["stalled_streams_held_then"] = count(url, channel)["streams"] - 1
        closed = time.monotonic()
        for sock in stalled:
            sock.close()
        stalled = []
        wait(lambda: count(url, channel)["streams"] <= 1, 30)
        out["slots_back_after_close_s"] = time.monotonic() - closed
        out["stalled_streams_held_at_end"] = count(url, channel)["streams"] - 1
    finally:
        for sock in stalled:
            sock.close()
        if healthy is not None:
            healthy.close()
        stop(proc)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--stalled", type=int, default=50, help="clients that never read")
    parser.add_argument("--events", type=int, default=1500, help="events to publish (in bursts of 10)")
    parser.add_argument("--size", type=int, default=10_000, help="bytes of data per event")
    parser.add_argument("--threads", type=int, default=64, help="waitress --threads")
    parser.add_argument("--max-connections", type=int, default=56, help="SSE_MAX_CONNECTIONS (< threads)")
    parser.add_argument("--queue", type=int, default=100, help="SSE_QUEUE_SIZE")
    parser.add_argument("--hold", type=float, default=10.0,
                        help="seconds after publishing to watch the stalled streams' slots")
    parser.add_argument("--waitress", action="append", default=[], help="a waitress option (repeatable)")
    parser.add_argument("--user-timeout", type=float, default=None,
                        help="TCP_USER_TIMEOUT in seconds on each connection (Linux; runs waitress.serve())")
    parser.add_argument("--compare", action="store_true",
                        help="three runs: the defaults, RECOMMENDED, RECOMMENDED + TCP_USER_TIMEOUT")
    args = parser.parse_args()
    if args.compare:
        runs = [([], None), (RECOMMENDED + args.waitress, None),
                (RECOMMENDED + args.waitress, args.user_timeout or 5.0)]
    else:
        runs = [(args.waitress, args.user_timeout)]
    for extra, user_timeout in runs:
        result = run(args, extra, user_timeout)
        print(f"\n{args.stalled} stalled, {args.events} x {args.size} B, --threads={args.threads}, "
              f"SSE_MAX_CONNECTIONS={args.max_connections}, queue={args.queue}; waitress:")
        for key, value in result.items():
            print(f"  {key:28} {value:.2f}" if isinstance(value, float) else f"  {key:28} {value}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
