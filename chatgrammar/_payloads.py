"""How a format writes the payloads of its structural turns, and how they read back.

A tool call's arguments and a tool definition are values (JSON), written into a content
slot as text. The grammar's header says how its template writes them:

* ``tool-args``: ``json`` (``arguments | tojson``: a string is written as a JSON string);
  ``raw-string`` (a string is written as it is, anything else as JSON: Qwen 3, the OpenAI
  shape where arguments are JSON text); ``text`` (the template concatenates the arguments
  as text and takes nothing else: chatgrammar writes a value as its JSON, as ``raw-string``).
* ``tool-defs``: ``json`` (``tool | tojson``) or ``json-indent4`` (``tool | tojson(indent=4)``).

Reading back decodes the JSON. Text that is not JSON is kept as it is (and reported); JSON
that is not written the way the template writes a value is its value (and reported in
transcripts, where the template wrote it). A definition given to ``render`` as text is
written as it is, so a definition read back as text renders back the same.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ._errors import RenderError

__all__ = ["ARGS_MODES", "DEFS_MODES", "JSON_DEFS", "NONCANONICAL", "Payloads", "tojson"]

ARGS_MODES = ("json", "raw-string", "text")
DEFS_MODES = ("json", "json-indent4")
JSON_DEFS = frozenset(("json", "json-indent4"))  # modes whose definitions read back as JSON objects
NONCANONICAL = "noncanonical"  # a payload that is JSON, but not written as the template writes it


def tojson(value: Any, indent: int | None = None) -> str:
    """JSON as Hugging Face's ``tojson`` filter writes it (``json.dumps``, non-ASCII kept)."""
    return json.dumps(value, ensure_ascii=False, indent=indent)


@dataclass(frozen=True)
class Payloads:
    """The payload modes of one format (see the module docstring)."""

    args: str = "json"
    defs: str = "json"

    def args_text(self, args: Any, where: str) -> str:
        """A call's arguments as the template writes them."""
        if isinstance(args, str) and self.args != "json":
            return args
        try:
            return tojson(args)
        except (TypeError, ValueError) as e:
            raise RenderError(f"{where}: the arguments are not JSON ({e})") from None

    def tool_text(self, tool: Any, k: int) -> str:
        """A tool definition as the template writes it; one given as text is written as it is."""
        if isinstance(tool, str):
            return tool
        try:
            return tojson(tool, 4 if self.defs == "json-indent4" else None)
        except (TypeError, ValueError) as e:
            raise RenderError(f"tool {k} is not JSON ({e})") from None

    def read_args(self, raw: str, canonical: bool) -> tuple[Any, ValueError | str | None]:
        """Arguments as written -> (their value, what is wrong with them: see ``_decoded``)."""
        return _decoded(raw, canonical, None)

    def read_tool(self, raw: str, canonical: bool) -> tuple[Any, ValueError | str | None]:
        """A definition as written -> (its value, what is wrong with it)."""
        return _decoded(raw, canonical, 4 if self.defs == "json-indent4" else None)


def _decoded(raw: str, canonical: bool, indent: int | None) -> tuple[Any, ValueError | str | None]:
    """A JSON payload's value, and what is wrong with it: the JSON error (the text is then kept
    as it is), NONCANONICAL (JSON, but not as the template writes it; only when ``canonical``),
    or None."""
    try:
        value = json.loads(raw)
    except ValueError as e:
        return raw, e
    if canonical and tojson(value, indent) != raw:
        return value, NONCANONICAL
    return value, None
