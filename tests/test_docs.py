"""The documentation site builds with warnings as errors, and holds what a reader relies on.

The site is built once, as a subprocess (``mkdocs build --strict``), into a temporary
directory. Then: every public name of the API has its reference entry with its
docstring's first line; every link and anchor in the built pages leads somewhere; the
search index covers every page; no source markup (reST roles, include directives) shows;
and the pages' own examples run as written, the quickstart as a real server with real
listeners.
"""

from __future__ import annotations

import html
import importlib
import inspect
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from conftest import ROOT, free_port, missing, wait_for_port

PAGES = ROOT / "docs" / "site"

# Each module of the public API, and the reference page that presents it.
REFERENCE = {
    "sseproto": "reference/sseproto",
    "sseproto.wsgi": "reference/wsgi",
    "sseproto.flask": "reference/flask",
    "sseproto.flask_sse": "reference/flask_sse",
    "sseproto.brokers": "reference/brokers",
    "sseproto.brokers.redis": "reference/redis",
    "sseproto.client": "reference/client",
    "sseproto.gunicorn": "reference/gunicorn",
    "sseproto.metrics": "reference/metrics",
}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        import material  # noqa: F401
        import mkdocstrings_handlers.python  # noqa: F401
    except ImportError as exc:
        missing(f"{exc.name} (pip install -e '.[docs]')")
    out = tmp_path_factory.mktemp("site")
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    print(f"mkdocs build --strict: {time.monotonic() - started:.1f} s")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "WARNING" not in proc.stderr, proc.stderr
    return out


def text_of(page: Path) -> str:
    """The readable text of a built page: tags dropped, entities decoded, spaces collapsed."""
    body = page.read_text(encoding="utf-8")
    body = body[body.find("<article") : body.rfind("</article>")]
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", body)).split())


def shows(page_text: str, docstring_line: str) -> bool:
    """Whether a page's text holds a docstring line (spacing aside: markup splits words from
    punctuation), its reST roles and double backticks rendered as the names they mark."""
    return re.sub(r"\s+", "", plain(docstring_line)) in re.sub(r"\s+", "", page_text)


def plain(docstring_line: str) -> str:
    def name(role: re.Match[str]) -> str:
        return role.group(2).rsplit(".", 1)[-1] if role.group(1) else role.group(2)

    line = re.sub(r":[a-z]+:`(~?)([\w.]+)`", name, docstring_line)
    return " ".join(line.replace("``", "").split())


def public_names(module_name: str) -> Iterator[tuple[str, object]]:
    module = importlib.import_module(module_name)
    for name in module.__all__:
        try:
            yield name, getattr(module, name)
        except ImportError as exc:  # a lazily imported part whose extra is not installed
            missing(f"{module_name}.{name}: {exc}")


@pytest.mark.parametrize("module_name", REFERENCE)
def test_every_public_name_has_its_reference_entry_with_its_docstring(site: Path, module_name: str) -> None:
    page = site / REFERENCE[module_name] / "index.html"
    source = page.read_text(encoding="utf-8")
    text = text_of(page)
    module_doc = inspect.getdoc(importlib.import_module(module_name))
    assert module_doc and shows(text, module_doc.splitlines()[0])
    for name, obj in public_names(module_name):
        assert f'id="{module_name}.{name}"' in source, f"{module_name}.{name} has no entry on {page}"
        own_doc = (inspect.isclass(obj) and "__doc__" in vars(obj)) or inspect.isfunction(obj)
        if own_doc and obj.__doc__:
            first = inspect.getdoc(obj).splitlines()[0]
            assert shows(text, first), f"{module_name}.{name}: {first!r} is not on {page}"


def test_event_source_and_event_stream_app_are_documented_where_a_reader_looks(site: Path) -> None:
    from sseproto.client import EventSource
    from sseproto.wsgi import EventStreamApp

    for obj, page in ((EventSource, "reference/client"), (EventStreamApp, "reference/wsgi")):
        assert shows(text_of(site / page / "index.html"), inspect.getdoc(obj).splitlines()[0])
    # The guide's pages link to them through the reference.
    assert 'href="../reference/client/"' in (site / "client" / "index.html").read_text(encoding="utf-8")


def test_every_link_and_anchor_in_the_site_leads_somewhere(site: Path) -> None:
    ids: dict[Path, set[str]] = {}

    def anchors(page: Path) -> set[str]:
        if page.suffix != ".html":
            return set()
        if page not in ids:
            ids[page] = set(re.findall(r'\bid="([^"]+)"', page.read_text(encoding="utf-8")))
        return ids[page]

    broken = []
    pages = sorted(site.rglob("*.html"))
    assert len(pages) > 15
    for page in pages:
        for href in re.findall(r'\bhref="([^"]*)"', page.read_text(encoding="utf-8")):
            parts = urlsplit(html.unescape(href))
            if parts.scheme or parts.netloc:
                continue
            path = unquote(parts.path)
            base = site if path.startswith("/") else page.parent  # 404.html links from the root
            target = (base / path.lstrip("/")).resolve() if path else page
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file():
                broken.append(f"{page.relative_to(site)}: {href}")
            elif parts.fragment and unquote(parts.fragment) not in anchors(target):
                broken.append(f"{page.relative_to(site)}: {href} (no such anchor)")
    assert not broken, "\n".join(broken)


def test_the_search_index_covers_every_page(site: Path) -> None:
    index = json.loads((site / "search" / "search_index.json").read_text(encoding="utf-8"))
    locations = {doc["location"].split("#")[0] for doc in index["docs"]}
    built = {str(p.parent.relative_to(site)) + "/" for p in site.rglob("index.html") if p.parent != site}
    assert built - {"search/"} <= locations
    assert any("Last-Event-ID" in doc["text"] for doc in index["docs"])


def test_no_source_markup_shows_on_any_page(site: Path) -> None:
    for page in site.rglob("*.html"):
        text = text_of(page)
        for leak in (":class:", ":meth:", ":func:", ":mod:", ":data:", "<!-- include", "``"):
            assert leak not in text, f"{page.relative_to(site)} shows {leak!r}"


def test_the_pages_show_what_the_readme_says(site: Path) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    settings = set(re.findall(r"^\| `(SSE_[A-Z_]+)`", readme, re.M))
    server = text_of(site / "server" / "index.html")
    assert settings and all(key in server for key in settings)
    assert "sseproto.gap" in text_of(site / "server" / "index.html")
    assert "XREAD BLOCK" in text_of(site / "brokers" / "index.html")


# The pages' own examples (the README's are run by test_readme.py).


def blocks(page: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", (PAGES / page).read_text(encoding="utf-8"), re.M | re.S)


LISTENS = "127.0.0.1:5000"  # examples that read the quickstart's server
EXAMPLES = [
    (page.name, code)
    for page in sorted(PAGES.glob("*.md"))
    for code in blocks(page.name, "python")
    if LISTENS not in code and "app = Flask(" not in code
]


@pytest.mark.parametrize(
    "code", [code for _, code in EXAMPLES], ids=[f"{page}-{n}" for n, (page, _) in enumerate(EXAMPLES)]
)
def test_example_runs(code: str) -> None:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr


class Output:
    """The lines a process prints, collected by a thread as they come."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert proc.stdout is not None
        stream = proc.stdout
        threading.Thread(target=lambda: self.lines.extend(iter(stream.readline, "")), daemon=True).start()


def test_the_quickstart_works_as_written(tmp_path: Path) -> None:
    pytest.importorskip("flask")
    import requests

    (app_code,) = [code for code in blocks("quickstart.md", "python") if "app = Flask(" in code]
    commands = "\n".join(blocks("quickstart.md", "sh"))
    assert "flask --app app run" in commands
    publish = re.search(r"curl -d (\w+)=(\w+) (http://\S+)", commands)
    cli = re.search(r"sseproto (listen \"(\S+)\")", commands)
    assert publish and cli
    port = free_port()
    here = f"127.0.0.1:{port}"
    listeners = [
        code.replace(LISTENS, here)
        for page in ("quickstart.md", "client.md")
        for code in blocks(page, "python")
        if LISTENS in code
    ]
    assert len(listeners) >= 2  # the requests client and the async one
    (tmp_path / "app.py").write_text(app_code, encoding="utf-8")

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str, cwd: Path = ROOT) -> Output:
        proc = subprocess.Popen(
            args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        procs.append(proc)
        return Output(proc)

    try:
        start(sys.executable, "-m", "flask", "--app", "app", "run", "--port", str(port), cwd=tmp_path)
        wait_for_port(port, procs[0])
        page = requests.get(f"http://{here}/", timeout=10).text
        assert 'new EventSource("/sse/stream?channel=news")' in page
        assert requests.get(f"http://{here}/sse/eventsource.js", timeout=10).status_code == 200

        outputs = [start(sys.executable, "-c", code) for code in listeners]
        outputs.append(start(sys.executable, "-m", "sseproto", "listen", cli.group(2).replace(LISTENS, here)))
        field, value, url = publish.groups()
        deadline = time.monotonic() + 20
        ids = []
        # Publish until every listener (they connect in their own time) printed a headline.
        while not all(any(value in line for line in out.lines) for out in outputs):
            assert time.monotonic() < deadline, [out.lines for out in outputs]
            answer = requests.post(url.replace(LISTENS, here), data={field: value}, timeout=10)
            assert answer.status_code == 200
            ids.append(answer.json()["id"])
            time.sleep(0.3)
        for out in outputs[:-1]:  # print(event.event, event.data, event.id)
            line = next(line for line in out.lines if value in line)
            kind, data, event_id = line.split()
            assert kind == "headline" and json.loads(data) == {"title": value} and event_id in ids
        assert any(line.strip() == f'headline: {{"title":"{value}"}}' for line in outputs[-1].lines)
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
