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

``sseproto-grip-pushpin`` is a private Pushpin (its own config, ports and sockets in a temp
dir; ``/usr/bin/pushpin``) in front of one gunicorn gevent process of
``apps/grip_app.py`` (in-memory broker, SSE_GRIP_URL/SSE_GRIP_KEY set): the clients connect
to Pushpin, each stream request gets a GRIP hold reply from the app, the publisher POSTs to
the app and the app's publish() posts to Pushpin. Its RSS counts Pushpin's processes
(runner, condure, zurl, pushpin-proxy, pushpin-handler) and the app; its CPU per delivered
event is given for the app and for Pushpin separately.

    python bench/fanout.py                       # 5,000 clients, 20 events/s, 20 s
    python bench/fanout.py --clients 500 --duration 5 --quick
    python bench/fanout.py --servers sseproto-gevent,naive-gevent
    python bench/fanout.py --clients 2000 --servers sseproto-redis-gevent,flasksse-gevent
    python bench/fanout.py --procs 2 --servers sseproto-grip-pushpin,sseproto-redis-gevent

The load generator runs in ``--procs`` processes sharing the 2 cores with the server;
its own delay is part of the measured latency, the same for every server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from sseproto import Decoder

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent / "tests"))
import pushpin  # noqa: E402  (tests/pushpin.py: the private Pushpin's config, shared with the tests)

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
    # GRIP: Pushpin holds the streams; one app process answers holds and publishes (the
    # in-memory broker: one process holds the whole replay, no Redis round trip per publish).
    "sseproto-grip-pushpin": (["-w", "1", *GEVENT, *HOOK], "grip_app:app", "/sse/stream?channel=bench",
                              "/publish", False),
}
GRIP = {"sseproto-grip-pushpin"}
GRIP_KEY = "bench-grip-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def family(pid: int) -> list[int]:
    """A process and its descendants (gunicorn master + workers; Pushpin's runner + services),
    at most three levels down and 64 processes."""
    pids, level = [pid], [pid]
    for _ in range(3):
        below: list[int] = []
        for parent in level:
            try:
                below += [int(p) for p in Path(f"/proc/{parent}/task/{parent}/children").read_text().split()]
            except OSError:
                pass
        pids += below
        level = below
        if not below or len(pids) >= 64:
            break
    return pids[:64]


def cpu_s(pid: int) -> float:
    """CPU time (user + system) a process and its descendants have used so far, in seconds."""
    return sum(cpu_by_name(pid).values())


def cpu_by_name(pid: int) -> dict[str, float]:
    """CPU seconds of a process and its descendants, summed by process name (condure, ...)."""
    out: dict[str, float] = {}
    for p in family(pid):
        try:
            name = Path(f"/proc/{p}/comm").read_text().strip()
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            ticks = int(fields[11]) + int(fields[12])  # utime, stime
            out[name] = out.get(name, 0.0) + ticks / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass
    return out


def rss_by_name(pid: int) -> dict[str, int]:
    """Resident memory (KB) of a process and its descendants, summed by process name."""
    out: dict[str, int] = {}
    for p in family(pid):
        try:
            name = Path(f"/proc/{p}/comm").read_text().strip()
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    out[name] = out.get(name, 0) + int(line.split()[1])
        except OSError:
            pass
    return out


def rss_kb(pid: int) -> int:
    """Resident memory of a process and its descendants, in KB."""
    return sum(rss_by_name(pid).values())


def raise_nofile(need: int) -> str:
    """Raise this process's open-file limit (inherited by the servers and the load generator)
    to ``need``: the soft limit up to the hard one, the hard one too where that is allowed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if need > hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, need))
            return f"open files: {soft}/{hard} -> {need}/{need}"
        except (OSError, ValueError):
            pass
    new = min(max(soft, need), hard)
    if new != soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    short = f" (below the {need} wanted)" if new < need else ""
    return f"open files: {soft}/{hard} -> {new}/{hard}{short}"


def wait_port(port: int, proc: subprocess.Popen[bytes], name: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"{name} did not start")


class Stack:
    """The processes of one server kind: the app (gunicorn), and for GRIP Pushpin in front.

    ``port`` is where the clients connect, ``app_port`` where the publisher posts."""

    def __init__(self, name: str, redis_url: str, clients: int, buffer_size: int) -> None:
        self.name = name
        self.app_port = free_port()
        self.port = self.app_port
        self.pushpin: subprocess.Popen[bytes] | None = None
        self.log_summary: list[str] = []
        self.root: Path | None = None
        env: dict[str, str] = {}
        if name in GRIP:
            binary = shutil.which("pushpin")
            if binary is None or not pushpin.PUSHPIN_CONF.exists():
                raise RuntimeError("pushpin is not installed (apt-get install pushpin)")
            self.port, publish_port = free_port(), free_port()
            env.update(SSE_GRIP_URL=f"http://127.0.0.1:{publish_port}", SSE_GRIP_KEY=GRIP_KEY)
        self.app = start_server(name, self.app_port, redis_url, env)
        if name in GRIP:
            self.root = Path(tempfile.mkdtemp(prefix="pp"))  # short: ipc socket paths are limited
            # Limits: the packaged 50,000 connections and 2,500 messages/s (25,000 queued)
            # would throttle 5,000 streams x 20 ev/s; the buffer size is per connection (x2).
            config = pushpin.pushpin_config(
                self.root, self.port, publish_port, self.app_port, GRIP_KEY,
                client_maxconn=str(clients + 1000), client_buffer_size=str(buffer_size),
                message_rate="1000000", message_hwm="1000000", log_level="1")
            log = (self.root / "pushpin.out").open("wb")
            self.pushpin = subprocess.Popen([str(binary), f"--config={config}"], cwd=self.root, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
            log.close()
            try:
                wait_port(self.port, self.pushpin, "pushpin")
                wait_port(publish_port, self.pushpin, "pushpin")
                # condure listens before the proxy, zurl and the handler are ready: wait until
                # a stream held by Pushpin receives an event (a stream opened before the
                # handler is connected gets "500 Accept service unavailable").
                deadline = time.monotonic() + 30
                while not pushpin.holds_and_delivers(self.port, self._publish_ready):
                    if time.monotonic() > deadline or self.pushpin.poll() is not None:
                        out = (self.root / "pushpin.out").read_text()
                        raise RuntimeError("pushpin did not come up: " + out)
                    time.sleep(0.2)
            except BaseException:
                self.stop()
                raise

    def _publish_ready(self) -> None:
        req = urllib.request.Request(f"http://127.0.0.1:{self.app_port}/publish?channel=ready", data=b"ready",
                                     method="POST")
        with urllib.request.urlopen(req, timeout=5) as r:
            r.read()

    def groups(self) -> dict[str, int]:
        """Process-group name -> top pid: "app" (gunicorn) and, for GRIP, "pushpin"."""
        out = {"app": self.app.pid}
        if self.pushpin is not None:
            out["pushpin"] = self.pushpin.pid
        return out

    def cpu(self) -> dict[str, float]:
        return {k: cpu_s(pid) for k, pid in self.groups().items()}

    def rss(self) -> dict[str, int]:
        return {k: rss_kb(pid) for k, pid in self.groups().items()}

    def stop(self) -> None:
        for proc in (self.pushpin, self.app):
            if proc is None or proc.poll() is not None:
                continue
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        if self.root is not None:
            self.log_summary = pushpin.log_summary(self.root / "log")
            shutil.rmtree(self.root, ignore_errors=True)


def start_server(name: str, port: int, redis_url: str, extra_env: dict[str, str] | None = None
                 ) -> subprocess.Popen[bytes]:
    worker, app, _, _, needs_redis = SERVERS[name]
    env = dict(os.environ, **(extra_env or {}))
    if needs_redis:
        env.update(SSE_BROKER_URL=redis_url, REDIS_URL=redis_url)
    cmd = [PY, "-m", "gunicorn", *worker, "-b", f"127.0.0.1:{port}", "--timeout", "120",
           "--backlog", "4096", "--chdir", str(ROOT / "apps"), "--log-level", "warning", app]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
                            env=env)
    wait_port(port, proc, name)
    return proc


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
            status = head.split(b"\r\n", 1)[0]
            if b" 200 " not in status:
                self.state["failed"] += 1
                refused = self.state["refused"]
                reason = (status + b": " + data[:60]).decode("latin-1")
                refused[reason] = refused.get(reason, 0) + 1
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
                if event.event == "sseproto.gap":  # counted apart; the replay after it still counts
                    self.state["gaps"] += 1
                    continue
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
            if self.in_body:
                self.state["errors"].append(f"dropped after {len(self.seen)} events: {exc!r}")

    def stop(self) -> None:
        self.stopping = True
        if self.transport is not None:
            self.transport.close()


async def load(port: int, path: str, n: int, ramp: float, conn: Any) -> None:
    state: dict[str, Any] = {
        "connect": [], "latency": [], "open": 0, "sent": 0, "failed": 0, "dropped": 0, "errors": [],
        "seen": [], "refused": {}, "gaps": 0,
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
    step = max(1, int(ramp * 0.05))
    for i in range(n):
        tasks.append(asyncio.ensure_future(connect()))
        if i % step == step - 1:
            await asyncio.sleep(0.05)  # a connect ramp the server's backlog can take
    deadline = time.monotonic() + 120
    while state["open"] + state["failed"] < n and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        if state["sent"] + state["failed"] >= n:
            # Every request is out. Some servers (Flask-SSE) send no headers before the
            # first event: give headers a few seconds, then start publishing anyway.
            deadline = min(deadline, time.monotonic() + 5)
    # Failed: refused, or no response headers in time (counted here, not left out).
    conn.send(("open", state["open"], n - state["open"]))
    cpu0 = time.process_time()  # this load process's own CPU while the events flow
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
    load_cpu = time.process_time() - cpu0
    for task in tasks:
        task.cancel()
    for proto in clients:
        proto.stop()
    lost = dup = 0
    missed: dict[int, int] = {}  # sequence number -> clients that never got it
    for seen in (c.seen for c in clients if c.in_body):  # a refused stream counts as failed
        for s in expected:
            if s not in seen:
                lost += 1
                missed[s] = missed.get(s, 0) + 1
        dup += sum(c - 1 for c in seen.values() if c > 1)
    errors = state["errors"][:5]
    errors += [f"{count} x {reason!r}" for reason, count in state["refused"].items()]
    if state["gaps"]:
        errors.append(f"{state['gaps']} gap events (sseproto.gap) received")
    if missed:
        first = sorted(missed.items())[:10]
        errors.append("lost (seq: clients): " + ", ".join(f"{s}: {c}" for s, c in first))
    conn.send(("done", state["connect"], state["latency"], lost, dup, state["dropped"], errors,
               state["open"], catch_up, load_cpu))


def load_process(port: int, path: str, n: int, ramp: float, conn: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    asyncio.run(load(port, path, n, ramp, conn))


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def run(name: str, clients: int, rate: float, duration: float, procs: int, redis_url: str,
        buffer_size: int, ramp: float) -> dict[str, Any]:
    stack = Stack(name, redis_url, clients, buffer_size)
    port = stack.port
    _, _, stream, publish, _ = SERVERS[name]
    try:
        time.sleep(0.5)
        idle = stack.rss()
        idle_parts = rss_by_name(stack.pushpin.pid) if stack.pushpin is not None else {}
        cpu_idle = stack.cpu()
        pipes, workers = [], []
        t0 = time.monotonic()
        for i in range(procs):
            parent, child = mp.Pipe()
            share = clients // procs + (1 if i < clients % procs else 0)
            w = mp.Process(target=load_process, args=(port, stream, share, ramp / procs, child), daemon=True)
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
        busy = stack.rss()
        busy_parts = rss_by_name(stack.pushpin.pid) if stack.pushpin is not None else {}
        cpu_before = stack.cpu()
        parts_before = cpu_by_name(stack.pushpin.pid) if stack.pushpin is not None else {}
        # Publish: seq and wall-clock time in the data, at a steady rate.
        sent: list[int] = []
        interval = 1.0 / rate
        start = time.monotonic()
        seq = 0
        while time.monotonic() - start < duration:
            body = f"{seq} {time.time():.6f}".encode()
            url = f"http://127.0.0.1:{stack.app_port}{publish}"
            req = urllib.request.Request(url, data=body, method="POST")
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
        catch_up = load_cpu = 0.0
        for p in pipes:
            _, c, lat, lo, du, dr, er, op, cu, lc = p.recv()
            load_cpu += lc
            opened_at_end += op
            catch_up = max(catch_up, cu)
            connect += c
            latency += lat
            lost += lo
            dup += du
            dropped += dr
            errors += er
        cpu_after = stack.cpu()
        parts_after = cpu_by_name(stack.pushpin.pid) if stack.pushpin is not None else {}
        for w in workers:
            w.join(10)
        n = max(opened_at_end, 1)
        delivered = max(len(latency), 1)
        cpu = {k: cpu_after[k] - cpu_before[k] for k in cpu_after}
        res: dict[str, Any] = {
            "server": name, "clients": opened_at_end, "open_before_publishing": opened, "failed": failed,
            "connect_all_s": connect_all,
            "connect_p50_ms": pct(connect, 50) * 1000, "connect_p99_ms": pct(connect, 99) * 1000,
            "published": len(sent), "publish_rate": len(sent) / duration, "catch_up_s": catch_up,
            "delivered": len(latency), "lost": lost, "dup": dup, "dropped": dropped,
            "p50_ms": pct(latency, 50) * 1000, "p99_ms": pct(latency, 99) * 1000,
            "max_ms": max(latency, default=float("nan")) * 1000,
            "rss_kb_per_conn": (sum(busy.values()) - sum(idle.values())) / n,
            "rss_total_kb_per_conn": sum(busy.values()) / n,
            "cpu_us_per_delivery": sum(cpu.values()) * 1e6 / delivered,
            "app_cpu_us_per_delivery": cpu["app"] * 1e6 / delivered,
            # The load generator's own CPU (all its processes) per event it received.
            "load_cpu_us_per_delivery": load_cpu * 1e6 / delivered,
        }
        if "pushpin" in cpu:
            res.update({
                "pushpin_cpu_us_per_delivery": cpu["pushpin"] * 1e6 / delivered,
                "app_rss_kb_per_conn": (busy["app"] - idle["app"]) / n,
                "pushpin_rss_kb_per_conn": (busy["pushpin"] - idle["pushpin"]) / n,
                "pushpin_rss_mb": busy["pushpin"] / 1024, "app_rss_mb": busy["app"] / 1024,
                # The app's CPU while the streams opened: one hold reply per stream.
                "app_cpu_us_per_hold": (cpu_before["app"] - cpu_idle["app"]) * 1e6 / n,
            })
            for part, kb in sorted(busy_parts.items()):  # and which holds the memory
                res[f"pp_{part.replace('-', '_')}_rss_kb_per_conn"] = (kb - idle_parts.get(part, 0)) / n
            for part, seconds in sorted(parts_after.items()):  # which of Pushpin's services spends it
                spent = seconds - parts_before.get(part, 0.0)
                res[f"pp_{part.replace('-', '_')}_us_per_delivery"] = spent * 1e6 / delivered
        res["errors"] = errors
        return res
    finally:
        stack.stop()
        if stack.log_summary:
            print("   pushpin logged:", *stack.log_summary, sep="\n     ")


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
    ap.add_argument("--ramp", type=float, default=4000,
                    help="new connections per second, all load processes together")
    ap.add_argument("--pushpin-buffer", type=int, default=8192,
                    help="Pushpin's client_buffer_size (condure keeps two per connection)")
    args = ap.parse_args()
    if args.quick:
        args.clients, args.duration = min(args.clients, 500), min(args.duration, 5.0)
    # Pushpin's condure holds every client; each load process holds its share.
    print(raise_nofile(args.clients + 1024), flush=True)
    results = []
    for name in args.servers.split(","):
        print(f"-- {name}: {args.clients} clients, {args.rate:g} ev/s for {args.duration:g} s", flush=True)
        res = run(name, args.clients, args.rate, args.duration, args.procs, args.redis, args.pushpin_buffer,
                  args.ramp)
        results.append(res)
        print(json.dumps(res) if args.json else "   " + ", ".join(
            f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in res.items() if k != "errors"
        ), flush=True)
        if res["errors"]:
            print("   errors:", res["errors"])
    print()
    print(f"{'server':22} {'clients':>7} {'connect s':>9} {'ev/s':>6} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'catch-up s':>10} {'lost':>6} {'dup':>5} {'KB/conn':>8} {'CPU us/ev':>9} {'app us/ev':>9} "
          f"{'pp us/ev':>8} {'load us/ev':>10}")
    for r in results:
        pp = r.get("pushpin_cpu_us_per_delivery")
        pushpin = f"{pp:>8.2f}" if pp is not None else f"{'-':>8}"
        print(f"{r['server']:22} {r['clients']:>7} {r['connect_all_s']:>9.2f} {r['publish_rate']:>6.1f} "
              f"{r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['catch_up_s']:>10.2f} {r['lost']:>6} "
              f"{r['dup']:>5} {r['rss_kb_per_conn']:>8.1f} {r['cpu_us_per_delivery']:>9.2f} "
              f"{r['app_cpu_us_per_delivery']:>9.2f} {pushpin} {r['load_cpu_us_per_delivery']:>10.2f}")
    if len(results) > 1:
        base = next((r for r in results if not r["server"].startswith("sseproto")), results[-1])
        for r in results:
            if r is base:
                continue
            print(f"{r['server']} vs {base['server']}: p99 ratio {base['p99_ms'] / r['p99_ms']:.2f}x, "
                  f"RSS/conn ratio {base['rss_kb_per_conn'] / max(r['rss_kb_per_conn'], 0.001):.2f}x, "
                  f"CPU/event ratio {base['cpu_us_per_delivery'] / max(r['cpu_us_per_delivery'], 1e-3):.2f}x")
    for r in results:
        clean = r["lost"] == 0 and r["dup"] == 0 and r["failed"] == 0 and r["dropped"] == 0
        kept_up = r["publish_rate"] >= 0.95 * args.rate  # the server kept up with the publisher
        if r["server"] in GRIP:
            ok = clean and kept_up and args.rate >= 20 and r["clients"] >= 5000
            ok = ok and r["p99_ms"] < 250 and r["app_cpu_us_per_delivery"] < 1
            print(f"target (5,000 streams, 20 ev/s: p99 < 250 ms, app CPU < 1 us per delivered event, "
                  f"nothing lost) for {r['server']} at {r['clients']} clients, {args.rate:g} ev/s: "
                  f"{'met' if ok else 'missed'}")
            held = clean and kept_up and r["clients"] >= 20000 and r["rss_kb_per_conn"] < 10
            print(f"target (20,000 streams held at 1 ev/s, < 10 KB per connection, Pushpin + app) for "
                  f"{r['server']} at {r['clients']} clients: {'met' if held else 'missed'} "
                  f"({r['rss_kb_per_conn']:.1f} KB/conn)")
        elif r["server"].startswith("sseproto"):
            ok = clean and kept_up and args.rate >= 20 and r["clients"] >= 5000
            ok = ok and r["p99_ms"] < 250 and r["rss_kb_per_conn"] < 40
            print(f"target (5,000 conns, 20 ev/s: p99 < 250 ms, < 40 KB/conn, nothing lost) for "
                  f"{r['server']} at {r['clients']} clients: {'met' if ok else 'missed'}")


if __name__ == "__main__":
    main()
