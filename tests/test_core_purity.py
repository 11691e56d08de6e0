"""The protocol layer imports the standard library only: no I/O or framework libraries."""

from __future__ import annotations

import subprocess
import sys

BLOCKED = ["flask", "werkzeug", "requests", "urllib3", "redis", "gevent", "asyncio", "socket", "threading_io"]

SCRIPT = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
import sseproto
wire = sseproto.Event("x", id="1").encode()
assert sseproto.Decoder().feed(wire)[0].data == "x"
sseproto.ReplayBuffer().append(sseproto.Event("y"))
bad = sorted(m for m in sys.modules if m.split(".")[0] in {BLOCKED!r})
print("loaded:", bad)
assert not bad, bad
"""


def test_core_imports_no_web_or_io_library() -> None:
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "loaded: []" in proc.stdout


def test_public_api_is_exactly_all() -> None:
    import types

    import sseproto

    # Submodules (sseproto.wsgi, sseproto.client, ...) appear as attributes once imported.
    public = {
        n for n, v in vars(sseproto).items() if not n.startswith("_") and not isinstance(v, types.ModuleType)
    } - {"annotations"}
    assert public == set(sseproto.__all__)
