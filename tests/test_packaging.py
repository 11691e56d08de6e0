"""The wheel as pip builds it: the license, the typed marker, every subpackage, the polyfill."""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

from conftest import PYTHON, ROOT


def test_the_wheel_ships_the_license_types_subpackages_and_polyfill(tmp_path: Path) -> None:
    subprocess.run([PYTHON, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("sseproto-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        license_files = [n for n in names if n.endswith("/LICENSE") and ".dist-info/" in n]
        assert license_files, sorted(names)
        assert "MIT License" in archive.read(license_files[0]).decode()
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License: MIT" in metadata or "License-Expression: MIT" in metadata
    expected = {"sseproto/py.typed", "sseproto/static/eventsource.min.js", "sseproto/static/eventsource.js"}
    expected |= {str(p.relative_to(ROOT)) for p in (ROOT / "sseproto").rglob("*.py")}
    assert expected <= names, sorted(expected - names)
