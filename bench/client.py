"""Client benchmark: events/s and delivery latency of sseproto's client vs sseclient-py and httpx-sse.

One plain, fast server process (a raw-socket HTTP server in this file) serves the same
bytes to every client, in one run:

- throughput: N small events (default 100,000), read to the last one, best of R runs;
  with one HTTP chunk per event (as a live server flushes) and with close-delimited
  bodies written in large blocks (a replay burst);
- latency: the server writes one small event every few ms with its CLOCK_MONOTONIC
  timestamp in the data; each client records when the event reaches the caller
  (median, p90, max), for chunked and close-delimited bodies.

    python bench/client.py             # 100k events, 3 runs, 100 latency samples
    python bench/client.py --quick     # 20k events, best of 2 runs, 30 samples (< 30 s)

The server and the clients share the machine's cores; every client meets the same server.
"""

from __future__ import annotations

import argparse
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
from httpx_sse import connect_sse  # noqa: E402

from sseproto.client import EventSource  # noqa: E402

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


CLIENTS: dict[str, Callable[[str, int, Callable[[str], None]], None]] = {
    "sseproto": run_sseproto,
    "sseclient-py": run_sseclient,
    "httpx-sse": run_httpx_sse,
}


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
        print(f"throughput: {args.events:,} small events, best of {args.runs} run(s), events/s")
        for framing in ("chunked", "close"):
            rates = {name: throughput(base, name, args.events, framing, args.runs) for name in CLIENTS}
            peer = max(rates["sseclient-py"], rates["httpx-sse"])
            label = "one chunk per event" if framing == "chunked" else "close-delimited, 64 KiB writes"
            print(f"  {label}:")
            for name, rate in rates.items():
                print(f"    {name:13s} {rate:12,.0f}   {rate / peer:5.2f}x the faster peer")
        print(f"latency: {args.samples} events, one every {args.interval * 1000:.0f} ms, write -> caller, ms")
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
                        f"    {name:13s} got {len(delays)} of {args.samples} events before the stream ended"
                    )
                    if not delays:
                        continue
                p90 = delays[int(0.9 * (len(delays) - 1))]
                print(
                    f"    {name:13s} median {statistics.median(delays):8.2f}   p90 {p90:8.2f}"
                    f"   max {delays[-1]:8.2f}"
                )
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
