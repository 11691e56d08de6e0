"""Fan-out benchmark: N concurrent SSE clients, one publisher at R events/s, several servers.

Each server runs as a real process (gunicorn by default). The load generator opens N
HTTP/1.0 connections with asyncio (close-delimited bodies, so no chunked decoding), parses
with sseproto's Decoder, and reports, per server, in one run:

- connect time (all N streams open: response headers received) and per-connection p50/p99
  (a server that sends no headers before its first event, as Flask-SSE, is given 5 s
  and then published to; its connect times then include the wait for that event),
- delivery latency p50/p99/max (publisher's timestamp in the data → receive time),
- events lost and duplicated (every client must get every published event exactly once),
- server RSS per connection ((RSS with N clients - RSS idle) / N, from /proc),
- server CPU per delivered event (user + system time of the server processes from the first
  publish until every client caught up, divided by the events delivered: lower is better).

    python bench/fanout.py                       # 5,000 clients, 20 events/s, 20 s
    python bench/fanout.py --clients 500 --duration 5 --quick
    python bench/fanout.py --servers sseproto-gevent,naive-gevent
    python bench/fanout.py --clients 2000 --servers sseproto-redis-gevent,flasksse-gevent

The load generator runs in ``--procs`` processes sharing the 2 cores with the server;
its own delay is part of the measured latency, the same for every server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from sseproto import Decoder

ROOT = Path(__file__).resolve().parent
PY = sys.executable

# name -> (gunicorn worker args, app module:object, stream path, publish path, needs Redis)
# sseproto's servers run as its README deploys them: with the sseproto.gunicorn hook (drain
# on SIGTERM, collector tuned); "naive-gevent-tuned" is the naive app with the same hook.
HOOK = ["-c", "python:sseproto.gunicorn"]
GEVENT = ["-k", "gevent", "--worker-connections", "20000"]
SERVERS: dict[str, tuple[list[str], str, str, str, bool]] = {
    "sseproto-gevent": (["-w", "1", *GEVENT, *HOOK], "sseproto_app:app", "/sse/stream?channel=bench",
                        "/publish", False),
    "naive-gevent": (["-w", "1", *GEVENT], "naive:app", "/stream", "/publish", False),
    "naive-gevent-tuned": (["-w", "1", *GEVENT, *HOOK], "naive:app", "/stream", "/publish", False),
    "sseproto-gthread": (["-w", "1", "-k", "gthread", "--threads", "1100", *HOOK], "sseproto_app:app",
                         "/sse/stream?channel=bench", "/publish", False),
    "naive-gthread": (["-w", "1", "-k", "gthread", "--threads", "1100"], "naive:app", "/stream", "/publish",
                      False),
    # Redis: the sseproto Redis broker and Flask-SSE, two gevent workers each.
    "sseproto-redis-gevent": (["-w", "2", *GEVENT, *HOOK], "sseproto_app:app", "/sse/stream?channel=bench",
                              "/publish", True),
    "flasksse-gevent": (["-w", "2", *GEVENT], "flasksse_app:app", "/stream?channel=bench", "/publish", True),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def family(pid: int) -> list[int]:
    """A process and its children (gunicorn master + workers)."""
    pids = [pid]
    try:
        pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        pass
    return pids


def cpu_s(pid: int) -> float:
    """CPU time (user + system) a process and its children have used so far, in seconds."""
    total = 0
    for p in family(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int) -> int:
    """Resident memory of a process and its children (gunicorn master + worker), in KB."""
    total = 0
    for p in family(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def start_server(name: str, port: int, redis_url: str) -> subprocess.Popen[bytes]:
    worker, app, _, _, needs_redis = SERVERS[name]
    env = dict(os.environ)
    if needs_redis:
        env.update(SSE_BROKER_URL=redis_url, REDIS_URL=redis_url)
    cmd = [PY, "-m", "gunicorn", *worker, "-b", f"127.0.0.1:{port}", "--timeout", "120",
           "--backlog", "4096", "--chdir", str(ROOT / "apps"), "--log-level", "warning", app]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
                            env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"{name} did not start")


# -- load generator ---------------------------------------------------------------------


# Every client reads into this one buffer: the event loop hands it over and takes the
# bytes back synchronously, so nothing is allocated per read (a plain Protocol allocates
# a 256 KiB bytes object for every recv, which dominated the load generator's time).
_READ_BUFFER = bytearray(65536)


class StreamClient(asyncio.BufferedProtocol):
    """One SSE client as a bare protocol: bytes go straight from the event loop to the decoder."""

    def __init__(self, path: str, state: dict[str, Any]) -> None:
        self.path = path
        self.state = state
        self.t0 = time.monotonic()
        self.head = b""
        self.in_body = False
        self.decoder = Decoder()
        self.seen: dict[int, int] = {}
        self.transport: asyncio.Transport | None = None
        self.stopping = False
        self.closed = False
        state["seen"].append(self.seen)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(f"GET {self.path} HTTP/1.0\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n".encode())
        self.state["sent"] += 1

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(_READ_BUFFER)

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(bytes(_READ_BUFFER[:nbytes]))

    def data_received(self, data: bytes) -> None:
        if not self.in_body:
            self.head += data
            if b"\r\n\r\n" not in self.head:
                return
            head, _, data = self.head.partition(b"\r\n\r\n")
            if b" 200 " not in head.split(b"\r\n", 1)[0]:
                self.state["failed"] += 1
                self.stopping = True
                assert self.transport is not None
                self.transport.close()
                return
            self.in_body = True
            self.state["connect"].append(time.monotonic() - self.t0)
            self.state["open"] += 1
        if not data:
            return
        now = time.time()
        latency = self.state["latency"]
        seen = self.seen
        try:
            for event in self.decoder.feed(data):
                text = json.loads(event.data) if event.data.startswith('"') else event.data  # Flask-SSE
                seq, sent = text.split(" ", 1)
                n = int(seq)
                seen[n] = seen.get(n, 0) + 1
                latency.append(now - float(sent))
        except ValueError as exc:
            self.state["errors"].append(repr(exc))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.stopping:
            self.state["dropped" if self.in_body else "failed"] += 1

    def stop(self) -> None:
        self.stopping = True
        if self.transport is not None:
            self.transport.close()


async def load(port: int, path: str, n: int, conn: Any) -> None:
    state: dict[str, Any] = {
        "connect": [], "latency": [], "open": 0, "sent": 0, "failed": 0, "dropped": 0, "errors": [],
        "seen": [],
    }
    loop = asyncio.get_running_loop()
    clients: list[StreamClient] = []

    def factory() -> StreamClient:
        client = StreamClient(path, state)
        clients.append(client)
        return client

    async def connect() -> None:
        try:
            await loop.create_connection(factory, "127.0.0.1", port)
        except OSError as exc:
            state["failed"] += 1
            state["errors"].append(repr(exc))

    tasks = []
    for i in range(n):
        tasks.append(asyncio.ensure_future(connect()))
        if i % 200 == 199:
            await asyncio.sleep(0.05)  # a connect ramp the server's backlog can take
    deadline = time.monotonic() + 120
    while state["open"] + state["failed"] < n and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        if state["sent"] + state["failed"] >= n:
            # Every request is out. Some servers (Flask-SSE) send no headers before the
            # first event: give headers a few seconds, then start publishing anyway.
            deadline = min(deadline, time.monotonic() + 5)
    conn.send(("open", state["open"], state["failed"]))
    # The parent sends the published sequence numbers when publishing is over; then every
    # client gets up to 60 s to catch up (or be dropped) before anything counts as lost.
    expected = await loop.run_in_executor(None, conn.recv)
    start = time.monotonic()
    if expected:
        last = expected[-1]
        while time.monotonic() - start < 60:
            if all(last in c.seen or c.closed for c in clients if c.in_body):
                break
            await asyncio.sleep(0.02)
    catch_up = time.monotonic() - start
    for task in tasks:
        task.cancel()
    for proto in clients:
        proto.stop()
    lost = dup = 0
    for seen in state["seen"]:
        lost += sum(1 for s in expected if s not in seen)
        dup += sum(c - 1 for c in seen.values() if c > 1)
    conn.send(("done", state["connect"], state["latency"], lost, dup, state["dropped"], state["errors"][:5],
               state["open"], catch_up))


def load_process(port: int, path: str, n: int, conn: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    asyncio.run(load(port, path, n, conn))


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def run(name: str, clients: int, rate: float, duration: float, procs: int, redis_url: str) -> dict[str, Any]:
    port = free_port()
    server = start_server(name, port, redis_url)
    _, _, stream, publish, _ = SERVERS[name]
    try:
        time.sleep(0.5)
        idle = rss_kb(server.pid)
        pipes, workers = [], []
        t0 = time.monotonic()
        for i in range(procs):
            parent, child = mp.Pipe()
            share = clients // procs + (1 if i < clients % procs else 0)
            w = mp.Process(target=load_process, args=(port, stream, share, child), daemon=True)
            w.start()
            pipes.append(parent)
            workers.append(w)
        opened = failed = 0
        for p in pipes:
            _, o, f = p.recv()
            opened += o
            failed += f
        connect_all = time.monotonic() - t0
        time.sleep(1.0)
        busy = rss_kb(server.pid)
        cpu_before = cpu_s(server.pid)
        # Publish: seq and wall-clock time in the data, at a steady rate.
        sent: list[int] = []
        interval = 1.0 / rate
        start = time.monotonic()
        seq = 0
        while time.monotonic() - start < duration:
            body = f"{seq} {time.time():.6f}".encode()
            req = urllib.request.Request(f"http://127.0.0.1:{port}{publish}", data=body, method="POST")
            with urllib.request.urlopen(req, timeout=10) as r:
                r.read()
            sent.append(seq)
            seq += 1
            pause = start + seq * interval - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        for p in pipes:
            p.send(sent)
        connect: list[float] = []
        latency: list[float] = []
        lost = dup = dropped = 0
        errors: list[str] = []
        opened_at_end = 0
        catch_up = 0.0
        for p in pipes:
            _, c, lat, lo, du, dr, er, op, cu = p.recv()
            opened_at_end += op
            catch_up = max(catch_up, cu)
            connect += c
            latency += lat
            lost += lo
            dup += du
            dropped += dr
            errors += er
        cpu = cpu_s(server.pid) - cpu_before
        for w in workers:
            w.join(10)
        return {
            "server": name, "clients": opened_at_end, "open_before_publishing": opened, "failed": failed,
            "connect_all_s": connect_all,
            "connect_p50_ms": pct(connect, 50) * 1000, "connect_p99_ms": pct(connect, 99) * 1000,
            "published": len(sent), "publish_rate": len(sent) / duration, "catch_up_s": catch_up,
            "delivered": len(latency), "lost": lost, "dup": dup, "dropped": dropped,
            "p50_ms": pct(latency, 50) * 1000, "p99_ms": pct(latency, 99) * 1000,
            "max_ms": max(latency, default=float("nan")) * 1000,
            "rss_kb_per_conn": (busy - idle) / max(opened_at_end, 1),
            "cpu_us_per_delivery": cpu * 1e6 / max(len(latency), 1), "errors": errors,
        }
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=5000)
    ap.add_argument("--rate", type=float, default=20.0, help="events published per second")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of publishing")
    ap.add_argument("--procs", type=int, default=1, help="load generator processes")
    ap.add_argument("--servers", default="sseproto-gevent,naive-gevent")
    ap.add_argument("--quick", action="store_true", help="500 clients, 5 s")
    ap.add_argument("--json", action="store_true", help="print results as JSON lines")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="Redis for the Redis servers")
    args = ap.parse_args()
    if args.quick:
        args.clients, args.duration = min(args.clients, 500), min(args.duration, 5.0)
    results = []
    for name in args.servers.split(","):
        print(f"-- {name}: {args.clients} clients, {args.rate:g} ev/s for {args.duration:g} s", flush=True)
        res = run(name, args.clients, args.rate, args.duration, args.procs, args.redis)
        results.append(res)
        print(json.dumps(res) if args.json else "   " + ", ".join(
            f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in res.items() if k != "errors"
        ), flush=True)
        if res["errors"]:
            print("   errors:", res["errors"])
    print()
    print(f"{'server':22} {'clients':>7} {'connect s':>9} {'ev/s':>6} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'catch-up s':>10} {'lost':>6} {'dup':>5} {'KB/conn':>8} {'CPU us/ev':>9}")
    for r in results:
        print(f"{r['server']:22} {r['clients']:>7} {r['connect_all_s']:>9.2f} {r['publish_rate']:>6.1f} "
              f"{r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['catch_up_s']:>10.2f} {r['lost']:>6} "
              f"{r['dup']:>5} {r['rss_kb_per_conn']:>8.1f} {r['cpu_us_per_delivery']:>9.1f}")
    if len(results) > 1:
        base = next((r for r in results if not r["server"].startswith("sseproto")), results[-1])
        for r in results:
            if r is base:
                continue
            print(f"{r['server']} vs {base['server']}: p99 ratio {base['p99_ms'] / r['p99_ms']:.2f}x, "
                  f"RSS/conn ratio {base['rss_kb_per_conn'] / max(r['rss_kb_per_conn'], 0.001):.2f}x, "
                  f"CPU/event ratio {base['cpu_us_per_delivery'] / max(r['cpu_us_per_delivery'], 1e-3):.2f}x")
    target = next((r for r in results if r["server"].startswith("sseproto")), results[0])
    ok = target["p99_ms"] < 250 and target["rss_kb_per_conn"] < 40
    ok = ok and target["publish_rate"] >= 0.95 * args.rate  # the server kept up with the publisher
    ok = ok and target["lost"] == 0 and target["dup"] == 0 and args.rate >= 20
    print(f"target (5,000 conns, 20 ev/s: p99 < 250 ms, < 40 KB/conn, nothing lost) for {target['server']} "
          f"at {target['clients']} clients: {'met' if ok and target['clients'] >= 5000 else 'missed'}")


if __name__ == "__main__":
    main()
