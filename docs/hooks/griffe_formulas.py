"""A Griffe extension for the API reference: keeps the docstrings' formulas as they are laid out.

chainrule's docstrings write their formulas in plain Unicode, aligned in columns, to be read in
the source (STYLE.md: "Layers show their forward and backward formulas in plain Unicode math"):

    Forward:   z = x W + b                      x (N, D), W (D, M), b (M,), z (N, M)
    Backward:  dL/dW = xᵀ g,  dL/db = Σₙ gₙ,  dL/dx = g Wᵀ      with g = dL/dz (N, M)

Markdown would join those lines into one paragraph. This extension, listed under the python
handler's ``extensions`` in mkdocs.yml, turns every such paragraph of a docstring's free text
into a text block, so that it renders line for line in a fixed-width font. A paragraph is laid
out when one of its lines starts with "Forward", "Backward" or "Cache", is indented deeper than
the paragraph's first line, or holds a run of three spaces between words (columns). Prose and
the Google-style sections (Args, Raises, …) are left alone, and so are blocks that Markdown
already keeps (indented after a blank line, or fenced). Inside a text block, ``code`` loses
its backticks; elsewhere Sphinx roles (``:func:`x```) become code spans. The docstrings
themselves are not changed.
"""

from __future__ import annotations

import re

import griffe

_SECTION = re.compile(
    r"^(Args|Arguments|Parameters|Params|Returns|Return|Raises|Yields|Attributes|Examples?|"
    r"Notes?|Warnings?|See Also|Other Parameters|Keyword Args|Keyword Arguments|Receives|"
    r"Methods|Functions|Classes|Modules|Deprecated|References|Todo):\s*$")
_LAID_OUT_START = re.compile(r"^(Forward|Backward|Cache)\b[^:]*:")
_COLUMNS = re.compile(r"\S {3,}\S")
_ROLE = re.compile(r":(?:func|class|meth|mod|attr|data|obj|exc):`~?([^`]+)`")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _laid_out(paragraph: list[str]) -> bool:
    first = _indent(paragraph[0])
    return any(_LAID_OUT_START.match(line.strip()) or _COLUMNS.search(line.strip())
               or (i > 0 and _indent(line) > first) for i, line in enumerate(paragraph))


def format_docstring(text: str) -> str:
    """The docstring text with its laid-out paragraphs fenced (see the module docstring)."""
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    in_section = False
    in_fence = False
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith("```"):
            in_fence = not in_fence
        if in_fence or stripped.startswith("```"):
            out.append(line)
            i += 1
            continue
        if _SECTION.match(line):
            in_section = True
        elif in_section and stripped and _indent(line) == 0:
            in_section = False
        if in_section or not stripped or _indent(line) >= 4:
            out.append(line)
            i += 1
            continue
        paragraph = []
        while i < len(lines) and lines[i].strip() and not _SECTION.match(lines[i]):
            paragraph.append(lines[i])
            i += 1
        if _laid_out(paragraph):
            ticks = "````" if any("```" in p for p in paragraph) else "```"
            plain = [re.sub(r"``([^`]+)``", r"\1", p) for p in paragraph]
            out += [ticks + "text", *plain, ticks]
        else:
            out += paragraph
    return "\n".join(out)


class Formulas(griffe.Extension):
    """Fence the laid-out formula paragraphs of every docstring (see the module docstring)."""

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            value = _ROLE.sub(r"`\1`", obj.docstring.value)
            obj.docstring.value = format_docstring(value)
