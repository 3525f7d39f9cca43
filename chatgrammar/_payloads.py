"""How a format writes the payloads of its structural turns, and how they read back.

A tool call's arguments and a tool definition are values (JSON), written into a content
slot as text. The grammar's header says how its template writes them:

* ``tool-args``: ``json`` (``arguments | tojson``: a string is written as a JSON string);
  ``raw-string`` (a string is written as it is, anything else as JSON: Qwen 3, the OpenAI
  shape where arguments are JSON text); ``text`` (the template concatenates the arguments
  and takes text only, raising on a value: a value is refused, and arguments read back as
  the text written, reported when it is not JSON: DeepSeek V3).
* ``tool-defs``: ``json`` (``tool | tojson``), ``json-indent4`` (``tool | tojson(indent=4)``) or
  ``function`` (the definition's ``function`` object, for a grammar that writes the list's
  ``{"type": "function", "function": ...}`` around it: Mistral's ``tools | tojson``).
* ``id-length``: the length a template requires of call ids (Mistral's 9); ``id-error`` its reason.
* ``call-type``: the type a template writes for each call (DeepSeek's ``function``, a literal of
  the grammar): a call of another type, or with none, is refused.

Reading back decodes the JSON. Text that is not JSON is kept as it is (and reported); JSON
that is not written the way the template writes a value is its value (and reported in
transcripts, where the template wrote it). A definition given to ``render`` as text is
written as it is, so a definition read back as text renders back the same.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ._errors import RenderError, UnsupportedConversationError

__all__ = ["ARGS_MODES", "DEFS_MODES", "JSON_DEFS", "NONCANONICAL", "Payloads", "tojson"]

ARGS_MODES = ("json", "raw-string", "text")
DEFS_MODES = ("json", "json-indent4", "function")
JSON_DEFS = frozenset(DEFS_MODES)  # modes whose definitions read back as JSON objects
NONCANONICAL = "noncanonical"  # a payload that is JSON, but not written as the template writes it


def tojson(value: Any, indent: int | None = None) -> str:
    """JSON as Hugging Face's ``tojson`` filter writes it (``json.dumps``, non-ASCII kept)."""
    return json.dumps(value, ensure_ascii=False, indent=indent)


@dataclass(frozen=True)
class Payloads:
    """The payload modes of one format (see the module docstring)."""

    args: str = "json"
    defs: str = "json"
    id_length: int | None = None  # call ids (and results' tool_call_id) must have this length
    id_error: str | None = None  # the template's reason when they do not
    call_order: tuple[str, ...] = ("tool_call", "tool_args")  # the turns of a call, as the grammar writes them
    result_id_first: bool = False  # a result's id is written before it (else after it)
    call_type: str | None = None  # the type the template writes for each call, when it writes one

    def args_text(self, args: Any, where: str) -> str:
        """A call's arguments as the template writes them."""
        if isinstance(args, str) and self.args != "json":
            return args
        if self.args == "text":
            raise UnsupportedConversationError(
                f"{where}: the template writes the arguments as text and raises on a "
                f"{type(args).__name__}: give them as a JSON string (OpenAI's shape: json.dumps(arguments))"
            )
        try:
            return tojson(args)
        except (TypeError, ValueError) as e:
            raise RenderError(f"{where}: the arguments are not JSON ({e})") from None

    def tool_text(self, tool: Any, k: int) -> str:
        """A tool definition as the template writes it; one given as text is written as it is."""
        if isinstance(tool, str):
            return tool
        if self.defs == "function":
            if not isinstance(tool, dict) or list(tool) != ["type", "function"] or tool["type"] != "function":
                raise UnsupportedConversationError(
                    f"tool {k}: this template writes tool definitions as "
                    '{"type": "function", "function": {...}} (those two keys, in that order)'
                )
            tool = tool["function"]
        try:
            return tojson(tool, 4 if self.defs == "json-indent4" else None)
        except (TypeError, ValueError) as e:
            raise RenderError(f"tool {k} is not JSON ({e})") from None

    def id_text(self, value: Any, what: str, format: str) -> str:
        """A call id (or a result's tool_call_id) as the template requires it."""
        if not isinstance(value, str) or (self.id_length is not None and len(value) != self.id_length):
            need = f"a string of {self.id_length} characters" if self.id_length is not None else "a string"
            reason = f"{self.id_error} " if self.id_error else ""
            raise UnsupportedConversationError(
                f"{reason}({format} writes {what} and needs it to be {need}, not {value!r})", format=format
            )
        return value

    def type_check(self, call: Any, where: str, format: str) -> None:
        """Refuse a call whose type the template would write other than as the grammar does."""
        if self.call_type is not None and call.get("type") != self.call_type:
            has = f"type {call['type']!r}" if "type" in call else "no type"
            raise UnsupportedConversationError(
                f"{where} has {has}, and {format}'s template writes each call's type: chatgrammar writes "
                f"and reads {self.call_type!r} only; give the call that type",
                format=format,
            )

    def read_args(self, raw: str, canonical: bool) -> tuple[Any, ValueError | str | None]:
        """Arguments as written -> (their value, what is wrong with them: see ``_decoded``).

        For a template that takes text, the text as it is, reported when it is not JSON.
        """
        if self.args == "text":
            problem = _decoded(raw, False, None)[1]
            return raw, problem
        return _decoded(raw, canonical, None)

    def read_tool(self, raw: str, canonical: bool) -> tuple[Any, ValueError | str | None]:
        """A definition as written -> (its value, what is wrong with it)."""
        value, problem = _decoded(raw, canonical, 4 if self.defs == "json-indent4" else None)
        if self.defs == "function" and not isinstance(problem, ValueError):
            value = {"type": "function", "function": value}
        return value, problem


def _decoded(raw: str, canonical: bool, indent: int | None) -> tuple[Any, ValueError | str | None]:
    """A JSON payload's value, and what is wrong with it: the JSON error (the text is then kept
    as it is), NONCANONICAL (JSON, but not as the template writes it; only when ``canonical``),
    or None."""
    try:
        value = json.loads(raw)
    except ValueError as e:
        return raw, e
    except RecursionError:  # brackets nested deeper than the decoder goes: not JSON it can read
        return raw, ValueError("nested too deep")
    if canonical and tojson(value, indent) != raw:
        return value, NONCANONICAL
    return value, None
