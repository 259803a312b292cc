"""Griffe extension: render xsensei's reST-flavoured docstrings as Markdown for mkdocstrings.

The package docstrings are prose written for Sphinx-style readers: ``code``, :func:`roles`,
``>>>`` examples, ``::`` literal blocks, simple ``====`` tables, lists without a blank line
before them and the odd underlined section title. This rewrites each docstring's text once,
after the package is loaded, so the API pages read as intended:

- roles become code spans that link to the object when it is documented on the site
  (an *optional* autoref: no link and no warning when it is not); names are resolved in
  the docstring's scope, so ``:class:`BandSet``` links to ``xsensei...BandSet``;
- ``>>>`` blocks become ``pycon`` code blocks, ``::`` blocks ``text`` code blocks;
- simple tables become Markdown tables; section underlines become bold lines;
- a blank line is added before lists so Markdown sees them.

Used through ``mkdocs.yml`` (``plugins.mkdocstrings...options.extensions``); not package code.
"""

from __future__ import annotations

import ast
import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|data|attr|exc|obj|const|term):`(~?)([^`]+)`")
_LIST_ITEM = re.compile(r"^(\s*)(?:[-*+]|\d+[.)])\s+\S")
_RULE = re.compile(r"^=+(?: +=+)+\s*$")
_UNDERLINE = re.compile(r"^([-=~^\"'`#*+])\1{2,}\s*$")


#: Public lazy names (``xsensei.cloudmask``) -> defining module, read from ``xsensei._LAZY``.
_PUBLIC: dict[str, str] = {}


def _resolve(obj: griffe.Object, target: str) -> str | None:
    """Full path of ``target`` as seen from ``obj``'s scope, or None."""
    target = target.strip().rstrip("()")
    if target.startswith("xsensei"):
        head, _, rest = target.removeprefix("xsensei.").partition(".")
        if head in _PUBLIC:
            return ".".join(filter(None, (_PUBLIC[head], head, rest)))
        return target
    head, _, rest = target.partition(".")
    for scope in (obj, obj.parent):
        if scope is None:
            continue
        try:
            path = scope.resolve(head)
        except Exception:
            continue
        return f"{path}.{rest}" if rest else path
    return None


def _roles(text: str, obj: griffe.Object) -> str:
    def replace(match: re.Match[str]) -> str:
        short, target = match.group(1), match.group(2).strip()
        shown = target.rstrip("()").rsplit(".", 1)[-1] if short else target
        path = _resolve(obj, target)
        if path is None:
            return f"`{shown}`"
        return f'<autoref identifier="{path}" optional><code>{shown}</code></autoref>'

    return _ROLE.sub(replace, text)


def _table(lines: list[str]) -> list[str]:
    """A reST simple table (rule, header, rule, rows, rule) as a Markdown table."""
    rule = lines[0]
    spans = [(m.start(), m.end()) for m in re.finditer(r"=+", rule)]

    def cells(line: str) -> list[str]:
        out = []
        for i, (start, _) in enumerate(spans):
            end = spans[i + 1][0] if i + 1 < len(spans) else len(line)
            out.append(line[start:end].strip())
        return out

    rows: list[list[str]] = []
    header: list[str] | None = None
    for line in lines[1:]:
        if _RULE.match(line):
            if header is None and rows:
                header, rows = rows[0], []
            continue
        if not line.strip():
            continue
        parts = cells(line)
        if rows and not parts[0]:  # continuation of the previous row's text
            rows[-1] = [f"{a} {b}".strip() for a, b in zip(rows[-1], parts, strict=True)]
        else:
            rows.append(parts)
    header = header or [""] * len(spans)
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(spans)]
    md += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return md


def _in_list(out: list[str]) -> bool:
    """True when the last line written is a list item or the continuation of one."""
    for prev in reversed(out):
        if not prev.strip():
            return False
        if _LIST_ITEM.match(prev):
            return True
        if not prev[:1].isspace():
            return False
    return False


def convert(text: str, obj: griffe.Object) -> str:
    """reST-flavoured docstring text -> Markdown (see the module docstring)."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        # simple table: rule line ... up to the third rule line
        if _RULE.match(line):
            j, rules = i + 1, 1
            while j < len(lines) and rules < 3:
                rules += bool(_RULE.match(lines[j]))
                j += 1
            if rules == 3:
                if out and out[-1].strip():
                    out.append("")
                out += [_roles(row, obj) for row in _table(lines[i:j])]
                out.append("")
                i = j
                continue
        # underlined section title -> bold line
        if (
            stripped
            and i + 1 < len(lines)
            and _UNDERLINE.match(lines[i + 1])
            and len(lines[i + 1].strip()) >= len(stripped)
        ):
            out += ["", f"**{_roles(stripped, obj)}**", ""]
            i += 2
            continue
        # doctest block
        if stripped.startswith(">>>"):
            block = []
            while i < len(lines) and lines[i].strip():
                block.append(lines[i])
                i += 1
            if out and out[-1].strip():
                out.append("")
            out += ["```pycon", *block, "```", ""]
            continue
        # literal block after "::"
        if stripped.endswith("::") and i + 1 < len(lines) and not lines[i + 1].strip():
            head = line.rstrip()[:-1]  # "text::" -> "text:", a lone "::" -> ":"
            if head.strip() != ":":
                out.append(_roles(head, obj))
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            indent = len(lines[j]) - len(lines[j].lstrip()) if j < len(lines) else 0
            block = []
            while j < len(lines) and (
                not lines[j].strip() or len(lines[j]) - len(lines[j].lstrip()) >= indent > 0
            ):
                block.append(lines[j][indent:])
                j += 1
            while block and not block[-1].strip():
                block.pop()
            if indent > 0 and block:
                out += ["", "```text", *block, "```", ""]
                i = j
                continue
            i += 1
            continue
        # lists need a blank line before them in Markdown
        m = _LIST_ITEM.match(line)
        if m and not m.group(1) and out and out[-1].strip() and not _in_list(out):
            out.append("")
        out.append(_roles(line, obj))
        i += 1
    return "\n".join(out).strip("\n")


class RstDocstrings(griffe.Extension):
    """Rewrite every docstring of the loaded package once it is fully loaded."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        lazy = pkg.members.get("_LAZY")
        if lazy is not None and not lazy.is_alias and getattr(lazy, "value", None) is not None:
            try:
                _PUBLIC.update(ast.literal_eval(str(lazy.value)))
            except (ValueError, SyntaxError):
                pass
        seen: set[int] = set()

        def visit(obj: griffe.Object) -> None:
            if id(obj) in seen:
                return
            seen.add(id(obj))
            if obj.docstring is not None:
                obj.docstring.value = convert(obj.docstring.value, obj)
            for member in obj.members.values():
                if not member.is_alias:
                    visit(member)  # type: ignore[arg-type]

        visit(pkg)
