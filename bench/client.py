"""Client benchmark: events/s and delivery latency of sseproto's clients vs sseclient-py and httpx-sse.

Sync clients: sseproto's ``EventSource`` (requests), sseclient-py, httpx-sse's ``connect_sse``;
async clients (asyncio): sseproto's ``AsyncEventSource`` (httpx) and httpx-sse's
``aconnect_sse``, each in its own event loop. One plain, fast server process (a raw-socket
HTTP server in this file) serves the same bytes to every client, in one run:

- throughput: N small events (default 100,000), read to the last one, best of R runs;
  with one HTTP chunk per event (as a live server flushes) and with close-delimited
  bodies written in large blocks (a replay burst);
- latency: the server writes one small event every few ms with its CLOCK_MONOTONIC
  timestamp in the data; each client records when the event reaches the caller
  (median, p90, max), for chunked and close-delimited bodies.

    python bench/client.py             # 100k events, 3 runs, 100 latency samples
    python bench/client.py --quick     # 20k events, best of 2 runs, 30 samples (< 30 s)

The server and the clients share the machine's cores; every client meets the same server.
The garbage collector stays on, as in real use. Targets printed at the end: sseproto's
sync client >= 2x the faster sync peer, its async client >= 2x httpx-sse's async one
(throughput), and a median delivery latency < 1 ms on loopback for both.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Every client library is imported here, before any timing.
import httpx  # noqa: E402
import requests  # noqa: E402
import sseclient  # noqa: E402
from httpx_sse import aconnect_sse, connect_sse  # noqa: E402

from sseproto.client import EventSource  # noqa: E402

try:  # the async client (the ``async`` extra: httpx)
    from sseproto.client import AsyncEventSource
except ImportError:  # not in this checkout
    AsyncEventSource = None

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n%s\r\n"


# --- the server (run as a subprocess: bench/client.py --serve PORT) ---------------------------


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _bulk(n: int, framing: str) -> Iterator[bytes]:
    """N small events; per-event chunks, or close-delimited in 64 KiB blocks."""
    events = [b"data: event %d of the benchmark stream\n\n" % i for i in range(n)]
    if framing == "chunked":
        yield HEAD % b"Transfer-Encoding: chunked\r\n"
        body = b"".join(map(_chunk, events)) + b"0\r\n\r\n"
    else:
        yield HEAD % b"Connection: close\r\n"
        body = b"".join(events)
    for i in range(0, len(body), 65536):
        yield body[i : i + 65536]


def _ticks(n: int, interval: float, framing: str) -> Iterator[bytes]:
    """N single events, one write each, every ``interval`` s, stamped with monotonic_ns at write."""
    chunked = framing == "chunked"
    yield HEAD % (b"Transfer-Encoding: chunked\r\n" if chunked else b"Connection: close\r\n")
    for _ in range(n):
        time.sleep(interval)
        event = b"data: %d\n\n" % time.monotonic_ns()
        yield _chunk(event) if chunked else event
    if chunked:
        yield b"0\r\n\r\n"


def _serve_one(conn: socket.socket) -> None:
    with conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        request = b""
        while b"\r\n\r\n" not in request:
            data = conn.recv(4096)
            if not data:
                return
            request += data
        url = urlsplit(request.split(b" ", 2)[1].decode())
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        framing = q.get("framing", "chunked")
        if url.path == "/bulk":
            parts = _bulk(int(q["n"]), framing)
        else:
            parts = _ticks(int(q["n"]), float(q["interval"]), framing)
        try:
            for part in parts:
                conn.sendall(part)
        except OSError:
            return


def serve(port: int) -> None:
    listener = socket.create_server(("127.0.0.1", port), backlog=64)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=_serve_one, args=(conn,), daemon=True).start()


# --- the clients: each reads ``n`` events from ``url`` and calls ``seen(data)`` per event --------


def run_sseproto(url: str, n: int, seen: Callable[[str], None]) -> None:
    count = 0
    with EventSource(url, timeout=(5, 30)) as source:
        for event in source:
            seen(event.data)
            count += 1
            if count == n:
                return


def run_sseclient(url: str, n: int, seen: Callable[[str], None]) -> None:
    count = 0
    with requests.get(url, stream=True, headers={"Accept": "text/event-stream"}, timeout=(5, 30)) as response:
        # The usage its README shows (its type hints ask for an iterator of bytes).
        for event in sseclient.SSEClient(response).events():  # type: ignore[arg-type]
            seen(event.data)
            count += 1
            if count == n:
                return


def run_httpx_sse(url: str, n: int, seen: Callable[[str], None]) -> None:
    count = 0
    with (
        httpx.Client(timeout=httpx.Timeout(30, connect=5)) as client,
        connect_sse(client, "GET", url) as source,
    ):
        for event in source.iter_sse():
            seen(event.data)
            count += 1
            if count == n:
                return


async def _sseproto_async(url: str, n: int, seen: Callable[[str], None]) -> None:
    count = 0
    async with AsyncEventSource(url, timeout=(5, 30)) as source:
        async for event in source:
            seen(event.data)
            count += 1
            if count == n:
                return


async def _httpx_sse_async(url: str, n: int, seen: Callable[[str], None]) -> None:
    count = 0
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(30, connect=5)) as client,
        aconnect_sse(client, "GET", url) as source,
    ):
        async for event in source.aiter_sse():
            seen(event.data)
            count += 1
            if count == n:
                return


def run_sseproto_async(url: str, n: int, seen: Callable[[str], None]) -> None:
    asyncio.run(_sseproto_async(url, n, seen))


def run_httpx_sse_async(url: str, n: int, seen: Callable[[str], None]) -> None:
    asyncio.run(_httpx_sse_async(url, n, seen))


CLIENTS: dict[str, Callable[[str, int, Callable[[str], None]], None]] = {
    "sseproto": run_sseproto,
    "sseclient-py": run_sseclient,
    "httpx-sse": run_httpx_sse,
    "sseproto-async": run_sseproto_async,
    "httpx-sse-async": run_httpx_sse_async,
}
SYNC_PEERS = ("sseclient-py", "httpx-sse")
if AsyncEventSource is None:
    del CLIENTS["sseproto-async"]


def throughput(base: str, name: str, n: int, framing: str, runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        got: list[str] = []
        start = time.perf_counter()
        CLIENTS[name](f"{base}/bulk?n={n}&framing={framing}", n, got.append)
        elapsed = time.perf_counter() - start
        if len(got) != n or got[-1] != f"event {n - 1} of the benchmark stream":
            raise SystemExit(f"{name} read {len(got)} events, not {n}")
        best = min(best, elapsed)
    return n / best


def latency(base: str, name: str, n: int, framing: str, interval: float) -> list[float]:
    """Delivery delays in ms; a client that gets fewer than n events (late past the end) fails."""
    delays: list[float] = []

    def seen(data: str) -> None:
        delays.append((time.monotonic_ns() - int(data)) / 1e6)

    CLIENTS[name](f"{base}/tick?n={n}&interval={interval}&framing={framing}", n, seen)
    return delays


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--samples", type=int, default=100, help="latency samples per client and framing")
    parser.add_argument("--interval", type=float, default=0.01, help="seconds between latency events")
    parser.add_argument("--quick", action="store_true", help="20k events, best of 2 runs, 30 samples")
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    if args.quick:
        args.events, args.runs, args.samples = 20_000, 2, 30

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port)])
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.05)
        base = f"http://127.0.0.1:{port}"
        if AsyncEventSource is None:
            print("sseproto-async: sseproto.client.AsyncEventSource is not in this checkout; left out")
        print(f"throughput: {args.events:,} small events, best of {args.runs} run(s), events/s")
        ratios: dict[tuple[str, str], float] = {}
        for framing in ("chunked", "close"):
            rates = {name: throughput(base, name, args.events, framing, args.runs) for name in CLIENTS}
            peer = max(rates[name] for name in SYNC_PEERS)
            label = "one chunk per event" if framing == "chunked" else "close-delimited, 64 KiB writes"
            print(f"  {label}:")
            for name, rate in rates.items():
                if name.endswith("-async"):
                    ref, against = rates["httpx-sse-async"], "httpx-sse-async"
                else:
                    ref, against = peer, "the faster sync peer"
                ratios[name, framing] = rate / ref
                print(f"    {name:15s} {rate:12,.0f}   {rate / ref:5.2f}x {against}")
        print(f"latency: {args.samples} events, one every {args.interval * 1000:.0f} ms, write -> caller, ms")
        medians: dict[tuple[str, str], float] = {}
        for framing in ("chunked", "close"):
            print(f"  {'chunked' if framing == 'chunked' else 'close-delimited'}:")
            for name in CLIENTS:
                result: list[list[float]] = []
                worker = threading.Thread(
                    target=lambda n=name, f=framing, out=result: out.append(
                        latency(base, n, args.samples, f, args.interval)
                    ),
                    daemon=True,
                )
                worker.start()
                # A client that holds events back until its buffer fills may never see the
                # last ones: give it the stream's length plus a margin, then report.
                worker.join(args.samples * args.interval + 10)
                delays = sorted(result[0]) if result else []
                if len(delays) < args.samples:
                    print(
                        f"    {name:15s} got {len(delays)} of {args.samples} events before the stream ended"
                    )
                    if not delays:
                        continue
                p90 = delays[int(0.9 * (len(delays) - 1))]
                medians[name, framing] = statistics.median(delays)
                print(
                    f"    {name:15s} median {medians[name, framing]:8.2f}   p90 {p90:8.2f}"
                    f"   max {delays[-1]:8.2f}"
                )
        print("targets:")
        for name, against in (("sseproto", "the faster sync peer"), ("sseproto-async", "httpx-sse-async")):
            if name not in CLIENTS:
                print(f"  {name}: not measured")
                continue
            worst = min(ratios[name, f] for f in ("chunked", "close"))
            print(f"  {name} throughput >= 2x {against}: {worst:.2f}x at worst, "
                  f"{'met' if worst >= 2 else 'MISSED'}")
            late = max(medians.get((name, f), float("inf")) for f in ("chunked", "close"))
            print(f"  {name} median latency < 1 ms: {late:.2f} ms at worst, "
                  f"{'met' if late < 1 else 'MISSED'}")
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
