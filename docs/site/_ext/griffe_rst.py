"""Griffe extension: the package's docstrings use reST roles and literal blocks; render them in Markdown.

``:class:`EventStreamApp```, ``:meth:`close```, ``:func:`~sseproto.gunicorn.tune_gc``` and
the like become code that links to the object's reference entry when the site has one: the
name is resolved where the docstring is (as Python would: members, then enclosing scopes),
and the link is an *optional* cross-reference, so a private or third-party name stays plain
code instead of failing the build. A literal block (a paragraph ending in ``::``, or a lone
``::`` line, then an indented block) becomes a fenced Python code block.

Attributes documented Sphinx's way, by ``#:`` comment lines right above them, get those
lines as their docstring, and the names a module-level tuple assignment binds
(``CONNECTING, OPEN, CLOSED = 0, 1, 2``), which griffe does not collect, become attributes.

Special methods (``__eq__``, ``__slots__``, ...) are left out of the reference, except
``__call__`` (a WSGI application is called); a class built by ``__new__`` alone
(``Event``) shows that signature as the class's, as one built by ``__init__`` does.
"""

from __future__ import annotations

import ast
import html
import re
from functools import cache
from pathlib import Path
from typing import Any

import griffe

SHOWN_SPECIAL = {"__call__", "__init__"}
# A literal block starting with one of these is a shell command line.
SHELL_COMMANDS = {"gunicorn", "pip", "python", "python3", "sseproto", "curl", "flask", "waitress-serve"}
ROLE = re.compile(r"(?<![\w`]):(?:py:)?(class|meth|func|mod|data|attr|exc|obj|const):`(~?)([\w.]+)`")


class RestMarkup(griffe.Extension):
    def on_module_members(
        self, *, node: ast.AST | griffe.ObjectNode, mod: griffe.Module, **kwargs: Any
    ) -> None:
        if not isinstance(node, ast.Module):
            return
        for stmt in node.body:
            if not (
                isinstance(stmt, ast.Assign)
                and len(stmt.targets) == 1
                and isinstance(stmt.targets[0], ast.Tuple)
                and isinstance(stmt.value, ast.Tuple)
                and len(stmt.targets[0].elts) == len(stmt.value.elts)
            ):
                continue
            for target, value in zip(stmt.targets[0].elts, stmt.value.elts, strict=True):
                if isinstance(target, ast.Name) and target.id not in mod.members:
                    attr = griffe.Attribute(
                        target.id, value=ast.unparse(value), lineno=stmt.lineno, endlineno=stmt.end_lineno
                    )
                    attr.labels.add("module-attribute")
                    mod.set_member(target.id, attr)

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        for obj in walk(pkg):
            if obj.is_class and "__new__" in obj.members and "__init__" not in obj.members:
                obj.set_member("__init__", obj.members["__new__"])
            if obj.is_class:
                for name in [n for n in obj.members if n.startswith("__") and n.endswith("__")]:
                    if name not in SHOWN_SPECIAL:
                        obj.del_member(name)  # not a flag: aliases (sseproto.Event) would not see it
            if obj.is_attribute and obj.docstring is None:
                comment = doc_comment(obj)
                if comment:
                    obj.docstring = griffe.Docstring(comment, lineno=obj.lineno, parent=obj)
            if obj.docstring is not None:
                obj.docstring.value = convert(obj.docstring.value, obj)


@cache
def source_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def doc_comment(obj: griffe.Object) -> str:
    """The ``#:`` comment lines right above ``obj``'s definition, without their markers."""
    if obj.lineno is None or not isinstance(obj.filepath, Path):
        return ""
    lines = source_lines(obj.filepath)
    found: list[str] = []
    number = obj.lineno - 2  # the line above, 0-based
    while number >= 0 and lines[number].lstrip().startswith("#:"):
        found.insert(0, lines[number].lstrip()[2:].strip())
        number -= 1
    return "\n".join(found)


def walk(obj: griffe.Object) -> list[griffe.Object]:
    found = [obj]
    for member in obj.members.values():
        if not member.is_alias:
            found += walk(member)  # type: ignore[arg-type]
    return found


def identifier(target: str, scope: griffe.Object) -> str:
    if target.startswith(scope.package.name + "."):
        return target
    first, _, rest = target.partition(".")
    try:
        base = scope.resolve(first)
    except griffe.NameResolutionError:
        return target
    return f"{base}.{rest}" if rest else base


def convert(text: str, scope: griffe.Object) -> str:
    def role(match: re.Match[str]) -> str:
        tilde, target = match.group(2), match.group(3)
        shown = target.rsplit(".", 1)[-1] if tilde else target
        ident = html.escape(identifier(target, scope), quote=True)
        return f'<autoref identifier="{ident}" optional><code>{html.escape(shown)}</code></autoref>'

    return literal_blocks(ROLE.sub(role, text))


def indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def literal_blocks(text: str) -> str:
    lines = text.split("\n")
    out: list[str] = []
    n = 0
    while n < len(lines):
        line = lines[n]
        n += 1
        if not line.rstrip().endswith("::"):
            out.append(line)
            continue
        lead = line.rstrip()[:-2].rstrip()
        if lead.strip():
            out.append(lead + ":")
        base = indent(line)
        first = n
        while n < len(lines) and (not lines[n].strip() or indent(lines[n]) > base):
            n += 1
        block = lines[first:n]
        while block and not block[0].strip():
            block.pop(0)
        while block and not block[-1].strip():
            block.pop()
        if not block:
            continue
        cut = min(indent(b) for b in block if b.strip())
        body = [" " * base + b[cut:] if b.strip() else "" for b in block]
        language = "sh" if block[0].split()[0] in SHELL_COMMANDS else "python"
        out += ["", " " * base + "```" + language, *body, " " * base + "```", ""]
    return "\n".join(out)
