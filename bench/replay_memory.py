"""Memory of gap replays held by clients that never read, code of two checkouts side by side.

For each checkout (``--base PATH`` and the working tree by default), starts gunicorn
gthread with bench/apps/history_app.py (16 channels x 1,000 x 1 KiB), opens ``--clients``
raw sockets that ask for all 16 channels with ``Last-Event-ID: bogus`` and never read,
and prints the server's RSS before, while they are open, and after they close, with the
ratio between the checkouts. Loopback only; every wait is bounded.

    python3 bench/replay_memory.py --base /tmp/base --clients 100
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss(port: int, checkout: Path | None = None) -> tuple[int, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/rss", timeout=30) as resp:
        body = json.load(resp)
    if checkout is not None and not body["sseproto"].startswith(str(checkout)):
        raise RuntimeError(f"the server runs {body['sseproto']}, not {checkout}")
    return int(body["rss_kb"]), int(body["streams"])


def run(checkout: Path, clients: int, threads: int) -> dict[str, float]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": f"{checkout}{os.pathsep}{ROOT / 'bench' / 'apps'}"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-k", "gthread", "-w", "1", f"--threads={threads}",
         "-b", f"127.0.0.1:{port}", "--timeout", "120", "history_app:app"],
        env=env, cwd=ROOT / "bench" / "apps",  # gunicorn puts its cwd first on sys.path
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                base_kb, _ = rss(port, checkout)
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the server did not start") from None
                time.sleep(0.2)
        query = "channel=" + ",".join(f"c{i}" for i in range(16))
        request = (f"GET /sse/stream?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                   "Last-Event-ID: bogus\r\n\r\n").encode()
        socks = []
        for _ in range(clients):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a reader that never reads
            sock.sendall(request)
            socks.append(sock)
        deadline = time.monotonic() + 60
        while rss(port)[1] < clients and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)  # let every stream write what its socket takes
        open_kb, streams = rss(port)
        for sock in socks:
            sock.close()
        deadline = time.monotonic() + 60
        while rss(port)[1] > 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        after_kb, _ = rss(port)
        return {"base_mb": base_kb / 1024, "open_mb": open_kb / 1024, "after_mb": after_kb / 1024,
                "streams": streams}
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, help="another checkout to compare with (e.g. a git worktree)")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--threads", type=int, default=128)
    args = parser.parse_args()
    runs = {"working tree": ROOT}
    if args.base:
        runs = {f"base ({args.base})": args.base, **runs}
    results = {}
    for name, checkout in runs.items():
        results[name] = result = run(checkout, args.clients, args.threads)
        grown = result["open_mb"] - result["base_mb"]
        each = grown * 1024 / max(1, result["streams"])
        print(f"{name}: RSS {result['base_mb']:.0f} MB at start, {result['open_mb']:.0f} MB with "
              f"{result['streams']:.0f} non-reading gap replays open (+{grown:.0f} MB, "
              f"{each:.0f} KB each), {result['after_mb']:.0f} MB after they closed",
              flush=True)
    if len(results) == 2:
        (_, a), (_, b) = results.items()
        ratio = (a["open_mb"] - a["base_mb"]) / max(0.1, b["open_mb"] - b["base_mb"])
        print(f"growth ratio base / working tree: {ratio:.1f}x")


if __name__ == "__main__":
    main()
