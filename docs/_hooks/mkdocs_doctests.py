"""A Griffe extension for the API page (mkdocs.yml): doctest blocks in docstrings become code blocks.

The docstrings hold bare ``>>>`` examples (they run under ``--doctest-modules``). Markdown would read
them as nested block quotes, and ``x[0][0]`` in them as a reference link; fenced as ``pycon``, they
show as the console sessions they are.
"""

from __future__ import annotations

from typing import Any

import griffe


def fence_doctests(text: str) -> str:
    """``text`` with each doctest block (a ``>>>`` line up to the next blank line) fenced as pycon."""
    out: list[str] = []
    in_example = in_fence = False
    for line in text.split("\n"):
        if in_example and not line.strip():
            out.append("```")
            in_example = False
        elif line.lstrip().startswith("```"):
            in_fence = not in_fence
        elif not in_fence and not in_example and line.startswith(">>>"):
            out.append("```pycon")
            in_example = True
        out.append(line)
    if in_example:
        out.append("```")
    return "\n".join(out)


class DoctestFences(griffe.Extension):
    """Fence the doctest blocks of every docstring Griffe reads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = fence_doctests(obj.docstring.value)
