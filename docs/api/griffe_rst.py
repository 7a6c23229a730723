"""Griffe extension of the docs build: ctcdyn's reST markup in docstrings, rendered as Markdown.

ctcdyn's docstrings use Google sections (``Args:``, ``Returns:``) with a little reStructuredText
inside, which reads well in ``help()``: Sphinx cross-reference roles (``:class:`~ctcdyn.X```),
``:math:`...``` and ``.. math::`` for equations, and simple tables (``=====  =====``).
mkdocstrings renders docstrings as Markdown, so before they are parsed this extension rewrites

- a role ``:class:`~a.b.C``` (also ``:func:``, ``:meth:``, ``:data:``, ``:attr:``, ``:mod:``)
  to an optional cross-reference: a link where the target is on a page of the site, otherwise
  the name in code font, never a warning. Names are resolved in the docstring's scope, as
  Sphinx would; ``~`` shows the last component only;
- ``:math:`x``` to inline math ``$x$`` and a ``.. math::`` block to a ``$$ ... $$`` block
  (``aligned`` when it has ``\\`` line breaks), rendered by pymdownx.arithmatex and MathJax;
- a simple table to a pipe table.

The source files keep their markup; only the site sees Markdown. Used from mkdocs.yml.
"""

from __future__ import annotations

import html
import re
import textwrap
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(class|func|meth|data|attr|mod|obj|exc):`([^`]+)`")
_INLINE_MATH = re.compile(r":math:`([^`]+)`")
_MATH_DIRECTIVE = re.compile(r"^(?P<indent>[ \t]*)\.\. math::[ \t]*(?P<first>.*)$")
_TABLE_BORDER = re.compile(r"^(?P<indent>[ \t]*)=+(?:[ \t]+=+)+[ \t]*$")


class ReSTToMarkdown(griffe.Extension):
    """Rewrite every docstring of a loaded package from ctcdyn's reST markup to Markdown."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        """Rewrite the docstrings of ``pkg`` and of everything defined in it."""
        _rewrite_tree(pkg, seen=set())


def _rewrite_tree(obj: griffe.Object, seen: set[str]) -> None:
    if obj.path in seen:
        return
    seen.add(obj.path)
    if obj.docstring is not None:
        obj.docstring.value = to_markdown(obj.docstring.value, obj)
    for member in obj.members.values():
        if not member.is_alias:
            _rewrite_tree(member, seen)  # type: ignore[arg-type]


def to_markdown(text: str, scope: griffe.Object | None = None) -> str:
    """The Markdown form of a docstring written with ctcdyn's reST markup."""
    text = _math_blocks(text)
    text = _tables(text)
    text = _INLINE_MATH.sub(lambda m: f"${m.group(1).strip()}$", text)
    return _ROLE.sub(lambda m: _reference(m.group(1), m.group(2), scope), text)


def _reference(role: str, target: str, scope: griffe.Object | None) -> str:
    explicit = re.fullmatch(r"(?P<title>.+?)\s*<(?P<target>[^>]+)>", target)
    if explicit:
        title, target = explicit["title"], explicit["target"]
    else:
        short = target.startswith("~")
        target = target.lstrip("~.")
        title = target.rsplit(".", 1)[-1] if short else target
        if role in ("func", "meth"):
            title += "()"
    identifier = _resolve(target, scope)
    return (
        f'<autoref identifier="{html.escape(identifier)}" optional>'
        f"<code>{html.escape(title)}</code></autoref>"
    )


def _resolve(target: str, scope: griffe.Object | None) -> str:
    """The full path of ``target`` as seen from ``scope`` (unchanged if it cannot be found)."""
    if scope is None or target.startswith("ctcdyn."):
        return target
    head, _, rest = target.partition(".")
    try:
        base = scope.resolve(head)
    except (griffe.NameResolutionError, KeyError, ValueError):
        return target
    return f"{base}.{rest}" if rest else base


def _math_blocks(text: str) -> str:
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = _MATH_DIRECTIVE.match(lines[i])
        if not match:
            out.append(lines[i])
            i += 1
            continue
        indent = match["indent"]
        body = [match["first"]] if match["first"].strip() else []
        i += 1
        # The directive's content: blank lines and lines indented deeper than the directive.
        while i < len(lines) and (
            not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > len(indent)
        ):
            body.append(lines[i])
            i += 1
        while body and not body[-1].strip():  # give trailing blank lines back to the text
            body.pop()
            i -= 1
        tex = textwrap.dedent("\n".join(line for line in body if line.strip()))
        if "\\\\" in tex:
            tex = "\\begin{aligned}\n" + tex + "\n\\end{aligned}"
        # Unindented: Markdown takes an indented `$$` for code or list text, not for math.
        out.extend(["", "$$", *tex.split("\n"), "$$", ""])
    return "\n".join(out)


def _tables(text: str) -> str:
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        border = _TABLE_BORDER.match(lines[i])
        if not border:
            out.append(lines[i])
            i += 1
            continue
        indent = border["indent"]
        starts = [m.start() for m in re.finditer(r"=+", lines[i])]
        blocks: list[list[str]] = [[]]
        i += 1
        while i < len(lines):
            if _TABLE_BORDER.match(lines[i]):
                i += 1
                # A border followed by text at the table's indent separates header and body.
                if i < len(lines) and lines[i].strip() and not _TABLE_BORDER.match(lines[i]):
                    blocks.append([])
                    continue
                break
            blocks[-1].append(lines[i])
            i += 1
        header, body = (blocks[0], blocks[1]) if len(blocks) > 1 else ([], blocks[0])
        out.extend(_pipe_table(header, body, starts, indent))
    return "\n".join(out)


def _pipe_table(header: list[str], body: list[str], starts: list[int], indent: str) -> list[str]:
    def cells(line: str) -> list[str]:
        bounds = [*starts[1:], None]
        row = [line[a:b].strip() for a, b in zip(starts, bounds, strict=True)]
        return [cell.replace("|", "\\|") for cell in row]

    def row(values: list[str]) -> str:
        return indent + "| " + " | ".join(values) + " |"

    head = cells(header[0]) if header else [""] * len(starts)
    rows = [row(head), row(["---"] * len(starts))]
    rows += [row(cells(line)) for line in body if line.strip()]
    return ["", *rows, ""]
