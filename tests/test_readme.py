"""The README's Python examples run as written, and its set-up commands are the real ones."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from conftest import ROOT

README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_python_block_runs(code: str) -> None:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr


def test_exactly_two_setup_commands_and_ci_runs_the_test_one() -> None:
    setup = README.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```sh\n(.*?)```", setup, re.S)
    assert len(commands) == 2
    assert commands[1].strip() in (ROOT / ".ci" / "run").read_text()


def test_codec_example_runs() -> None:
    proc = subprocess.run(
        [sys.executable, "examples/codec.py"], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr
    assert "Last-Event-ID to send on reconnect: 2" in proc.stdout


def test_settings_table_lists_every_config_key() -> None:
    from sseproto import flask as ext

    table = README.split("### Settings", 1)[1].split("\n### ", 1)[0]
    documented = set(re.findall(r"^\| `(SSE_[A-Z_]+)`", table, re.M))
    keys = {*ext._OPTION_KEYS, *ext._BROKER_KEYS, *ext._OTHER_KEYS}
    assert documented == keys


def test_links_work_on_a_package_index_page_too() -> None:
    """The README is the package's page on an index, where a relative link leads nowhere:
    links are absolute, or files are named as code."""
    links = re.findall(r"\]\(([^)]+)\)", README)
    assert [link for link in links if not link.startswith(("https://", "http://", "#"))] == []
