"""MkDocs hook: pages take their text from the repository's Markdown files, so the site cannot drift.

A page says what it takes with a directive on a line of its own::

    <!-- include README.md -->                                   the whole file
    <!-- include README.md "## The client" level=1 -->           one section, its heading made an h1
    <!-- include README.md "## Set-up" intro -->                 a section without its subsections
    <!-- include bench/README.md level=2 heading="Running them" -->   the first heading renamed

A section runs from its heading to the next heading of the same or a higher level (headings
inside code fences do not count). ``level=N`` moves the section's headings so that the first
is at level N; ``heading=`` replaces the first heading's text. A file or section that does
not exist stops the build, as ``pymdownx.snippets`` does with ``check_paths: true``.

Links in the included text are rewritten for the site: to a file that a page presents
(``SITE_PAGES``) they lead to that page; to any other file of the repository they become
plain text (the path in code); to a file that does not exist they are an error. Every
heading of README.md must be on some page or in ``README_NOT_ON_SITE``, so a new README
section cannot be forgotten by the site.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError
from mkdocs.plugins import get_plugin_logger

log = get_plugin_logger("sseproto-docs")

# Repository files that a page of the site presents (with the anchor where it starts).
SITE_PAGES = {
    "README.md": "index.md",
    "spec/README.md": "spec.md",
    "js/README.md": "polyfill.md",
    "docs/RELIABILITY.md": "reliability.md",
    "fuzz/README.md": "reliability.md#running-the-fuzzer",
    "bench/README.md": "benchmarks.md#running-the-benchmarks",
    "docs/deployment.md": "deployment.md",
}

# README headings no page includes, and why.
README_NOT_ON_SITE = {
    "## Reliability": "only points to docs/RELIABILITY.md, which is the Reliability page",
    "### Deployment": "only points to docs/deployment.md, which is the Deployment page",
}

DIRECTIVE = re.compile(r"^<!--\s*include\s+(.*?)\s*-->\s*$")
FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
# [text](target "title") and ![alt](target), outside code spans.
LINK = re.compile(r"(!?)\[([^\]\n]*)\]\(([^)\s]+)(\s+\"[^\"]*\")?\)")
CODE_SPAN = re.compile(r"(`+).*?\1")


@dataclass
class Line:
    text: str
    in_fence: bool
    heading: tuple[int, str] | None  # (level, text) of a heading line outside fences


@dataclass
class State:
    root: Path = Path()
    covered: dict[str, set[int]] = field(default_factory=dict)  # file -> line numbers included


STATE = State()


def on_config(config: Any) -> Any:
    STATE.root = Path(config.config_file_path).resolve().parent
    STATE.covered = {}
    return config


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    out: list[str] = []
    in_fence = False
    for text in markdown.split("\n"):
        if FENCE.match(text):
            in_fence = not in_fence
        match = None if in_fence else DIRECTIVE.match(text)
        out.append(include(match.group(1), page.file.src_uri) if match else text)
    return "\n".join(out)


def on_env(env: Any, config: Any, files: Any) -> Any:
    lines = parse(read("README.md"))
    covered = STATE.covered.get("README.md", set())
    for number, line in enumerate(lines):
        if line.heading is None or number in covered:
            continue
        name = "#" * line.heading[0] + " " + line.heading[1]
        if name not in README_NOT_ON_SITE:
            log.warning(
                f"README section {name!r} is on no page of the site: include it in a page of docs/site/ "
                "or list it in README_NOT_ON_SITE in docs/site/_ext/hooks.py"
            )
    return env


def read(path: str) -> str:
    file = STATE.root / path
    if not file.is_file():
        raise PluginError(f"include: {path} does not exist")
    return file.read_text(encoding="utf-8")


def parse(text: str) -> list[Line]:
    lines = []
    in_fence = False
    for raw in text.split("\n"):
        fence = FENCE.match(raw)
        heading = None if in_fence or fence else HEADING.match(raw)
        lines.append(Line(raw, in_fence or bool(fence), (len(heading[1]), heading[2]) if heading else None))
        if fence:
            in_fence = not in_fence
    return lines


def include(arguments: str, page: str) -> str:
    words = shlex.split(arguments)
    path, options = words[0], words[1:]
    section = next((w for w in options if w.startswith("#")), None)
    flags = {w for w in options if "=" not in w and not w.startswith("#")}
    values = dict(w.split("=", 1) for w in options if "=" in w)
    unknown = (flags - {"intro"}) | (values.keys() - {"level", "heading"})
    if unknown:
        raise PluginError(f"{page}: include {arguments}: unknown option(s) {sorted(unknown)}")
    lines = parse(read(path))

    start, end = 0, len(lines)
    if section is not None:
        marks = section.split(None, 1)
        wanted = (len(marks[0]), marks[1] if len(marks) > 1 else "")
        starts = [n for n, line in enumerate(lines) if line.heading == wanted]
        if len(starts) != 1:
            raise PluginError(f"{page}: {path} has {len(starts)} headings {section!r}, not one")
        start = starts[0]
        for n in range(start + 1, len(lines)):
            heading = lines[n].heading
            if heading and (heading[0] <= wanted[0] or "intro" in flags):
                end = n
                break
    chosen = list(range(start, end))
    STATE.covered.setdefault(path, set()).update(chosen)

    headings = [lines[n].heading for n in chosen if lines[n].heading]
    shift = int(values["level"]) - headings[0][0] if "level" in values and headings else 0
    out = []
    first = True
    for n in chosen:
        line = lines[n]
        if line.heading:
            level, text = line.heading
            if first and "heading" in values:
                text = values["heading"]
            first = False
            if not 1 <= level + shift <= 6:
                raise PluginError(f"{page}: include {arguments}: a heading would be at level {level + shift}")
            out.append("#" * (level + shift) + " " + text)
        elif line.in_fence:
            out.append(line.text)
        else:
            out.append(relink(line.text, path, page))
    return "\n".join(out).strip("\n")


def relink(text: str, source: str, page: str) -> str:
    """``text`` from the file ``source`` with its links made to work on the page ``page``."""
    pieces = []
    last = 0
    for span in CODE_SPAN.finditer(text):  # links inside code spans are code, not links
        pieces.append(LINK.sub(lambda m: fix(m, source, page), text[last : span.start()]))
        pieces.append(span.group(0))
        last = span.end()
    pieces.append(LINK.sub(lambda m: fix(m, source, page), text[last:]))
    return "".join(pieces)


def fix(match: re.Match[str], source: str, page: str) -> str:
    bang, label, target, title = match.group(1), match.group(2), match.group(3), match.group(4) or ""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
        return match.group(0)  # absolute URL, or an anchor of this same text
    path, _, anchor = target.partition("#")
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(source), path))
    if resolved.startswith("../") or not (STATE.root / resolved).exists():
        raise PluginError(f"{source} links to {target}, which does not exist (included in {page})")
    if resolved in SITE_PAGES:
        there, _, start = SITE_PAGES[resolved].partition("#")
        href = posixpath.relpath(there, posixpath.dirname(page) or ".")
        anchor = anchor or start
        return f"{bang}[{label}]({href}{'#' + anchor if anchor else ''}{title})"
    # A file of the repository that the site does not show: name it, do not link it.
    return f"`{resolved}`" if label in (resolved, f"`{resolved}`") else f"{label} (`{resolved}`)"
