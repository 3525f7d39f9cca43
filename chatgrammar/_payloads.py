"""How a format writes the payloads of its structural turns, and how they read back.

A tool call's arguments and a tool definition are values (JSON), written into a content
slot as text. The grammar's header says how its template writes them:

* ``tool-args``: ``json`` (``arguments | tojson``: a string is written as a JSON string);
  ``raw-string`` (a string is written as it is, anything else as JSON: Qwen 3, the OpenAI
  shape where arguments are JSON text); ``text`` (the template concatenates the arguments
  and takes text only, raising on a value: a value is refused, and arguments read back as
  the text written, reported when it is not JSON: DeepSeek V3).
* ``tool-defs``: ``json`` (``tool | tojson``), ``json-indent4`` (``tool | tojson(indent=4)``),
  ``function`` (the definition's ``function`` object, for a grammar that writes the list's
  ``{"type": "function", "function": ...}`` around it: Mistral's ``tools | tojson``),
  ``typescript-harmony`` (the definition as the TypeScript-like type that OpenAI's harmony
  format writes, ``// description`` then ``type name = (_: {...}) => any;``, as gpt-oss's
  template writes it with its ``render_tool_namespace`` macro; TypeScript does not say which
  JSON schema it was written from: such a definition reads back as its text), or
  ``fields`` and a list of them (``fields "name" "description" parameters responses=null``):
  the template writes an object of its own, field by field, from the definition's ``function``
  object. A quoted field is the template's ``"{{ function.name }}"``: the text as it is between
  quotes (empty when missing), so a text JSON would escape is refused (it could not be read
  back), and one written empty reads back missing; a bare field is ``{{ function.parameters |
  tojson }}`` (refused when missing: the template fails); ``key=JSON`` is a constant the
  template writes whatever the definition holds (not read back). Cohere's Command R7B. ``*``
  alone is every key of the function object, in its order, its value a text as it is between
  quotes when it is a string and JSON otherwise (the key too between quotes as it is: a key or a
  text JSON would escape is refused), and ``-key`` a key the template leaves out (a declared
  loss: it does not read back): ``fields * -return``, Mistral Nemo's.
* ``id-length``: the length a template requires of call ids (Mistral's 9); ``id-error`` its reason.
* ``call-function``: ``tojson``: the template writes each call's ``function`` object as JSON, all its
  keys in their order, where the grammar writes the name and the arguments: a call whose function
  holds anything else, or those two in the other order, is refused (Mistral Nemo).
* ``call-type``: the type a template writes for each call (DeepSeek's ``function``, a literal of
  the grammar): a call of another type, or with none, is refused.
* ``call-ids``: ``index``: the template writes no id of the caller's, but each call's running
  index among the conversation's calls (from 0), and a result's ``tool_call_id`` as the index of
  the first call with that id (empty when no call has it). Rendering writes these numbers;
  reading gives them back as the ids (a loss ``normalize`` shows), and a text whose numbers are
  not so does not parse (``index_problems``).
* ``beside-calls``: ``reasoning`` (the template writes the content of an answer with tool calls
  where its thinking goes: gpt-oss's analysis message; both given is refused, with the
  template's reason ``beside-calls-error``).
* ``refuse-empty``: ``tools``, ``tool_calls``: the template tests ``is not none``, not whether the list
  holds anything, and writes an empty one as no grammar turn does (Mistral Nemo's lone ``[``):
  ``tools=[]``, or an answer's ``tool_calls=[]``, is refused.
* ``result-error``: the template's reason when a tool result has no tool call before it to take
  its name from (a grammar with ``tool_result_name`` turns: the name of the call a result
  answers, the last call since the last answer without calls).

Reading back decodes the JSON (a TypeScript definition stays its text). Text that is not JSON
is kept as it is (and reported); JSON that is not written the way the template writes a value
is its value (and reported in transcripts, where the template wrote it). A definition given to
``render`` as text is written as it is, so a definition read back as text renders back the same.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._errors import RenderError, UnsupportedConversationError
from ._ir import TOOL_CALL_ID, TOOL_RESULT_ID

__all__ = [
    "ARGS_MODES",
    "CALL_IDS",
    "DEFS_MODES",
    "JSON_DEFS",
    "NONCANONICAL",
    "Field",
    "Payloads",
    "def_fields",
    "index_problems",
    "tojson",
    "typescript",
]

ARGS_MODES = ("json", "raw-string", "text")
JSON_DEFS = frozenset(("json", "json-indent4", "function", "fields", "json-list"))  # definitions read back as JSON
DEFS_MODES = ("json", "json-indent4", "function", "fields", "json-list", "typescript-harmony", "typescript-functionary")
CALL_IDS = ("given", "index")  # how call ids are written: as given, or as the running index
NONCANONICAL = "noncanonical"  # a payload that is JSON, but not written as the template writes it


def tojson(value: Any, indent: int | None = None) -> str:
    """JSON as Hugging Face's ``tojson`` filter writes it (``json.dumps``, non-ASCII kept)."""
    return json.dumps(value, ensure_ascii=False, indent=indent)


@dataclass(frozen=True)
class Field:
    """One field of a definition written field by field (``tool-defs: fields ...``)."""

    key: str
    how: str  # "quoted" (a text between quotes, as it is), "json" (tojson), "const" (always ``value``),
    # "rest" (``*``: every key, in its order, a string quoted and any other value as JSON), "skip" (``-key``)
    value: Any = None  # the constant's value


def def_fields(spec: str) -> tuple[Field, ...]:
    """``"name" "description" parameters responses=null`` (or ``* -return``) -> its fields; ValueError
    when malformed."""
    out: list[Field] = []
    for word in spec.split():
        if word == "*":
            out.append(Field("*", "rest"))
            continue
        if word.startswith("-") and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", word[1:]):
            out.append(Field(word[1:], "skip"))
            continue
        key, eq, const = word.partition("=")
        quoted = len(key) > 2 and key[0] == key[-1] == '"'
        key = key[1:-1] if quoted else key
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) or (quoted and eq):
            raise ValueError(f'{word!r} is not a field: write "key" (a text), key (JSON) or key=JSON (a constant)')
        if eq:
            try:
                value = json.loads(const)
            except ValueError:
                raise ValueError(f"{word!r}: {const!r} is not JSON") from None
            out.append(Field(key, "const", value))
        else:
            out.append(Field(key, "quoted" if quoted else "json"))
    if not out or len({f.key for f in out}) != len(out):
        raise ValueError("write the fields, each once, after fields")
    if any(f.how in ("rest", "skip") for f in out) and any(f.how not in ("rest", "skip") for f in out):
        raise ValueError("* (every key) stands alone, with the -keys the template leaves out")
    if any(f.how == "skip" for f in out) and not any(f.how == "rest" for f in out):
        raise ValueError("-key leaves a key out of *: write * too")
    return tuple(out)


def _unescaped(text: Any) -> bool:
    """Whether a template writing ``text`` as it is between quotes writes the JSON string of it."""
    return isinstance(text, str) and tojson(text)[1:-1] == text


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
    call_function: str | None = None  # "tojson": the template writes each call's function object as JSON
    fields: tuple[Field, ...] = ()  # the fields of a definition, for defs == "fields"
    call_ids: str = "given"  # "index": ids are written as the running index of the calls
    result_name_first: bool = True  # the name of the call a result answers is written before it (else after it)
    result_error: str | None = None  # the template's reason when a result has no call before it
    beside_calls: str | None = None  # "reasoning": an answer's content beside its calls is written as its reasoning
    beside_calls_error: str | None = None  # the template's reason when such an answer has both
    refused_names: tuple[str, ...] = ()  # call names whose call would read as an answer's text
    refuse_empty: tuple[str, ...] = ()  # "tools", "tool_calls": lists the template writes when empty, unlike none

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

    def tool_texts(self, tools: Sequence[Any]) -> list[str]:
        """The definitions as the template writes them: one text each, or one for the list (``json-list``;
        a list of one text is that text)."""
        if self.defs != "json-list":
            return [self.tool_text(t, k) for k, t in enumerate(tools)]
        if len(tools) == 1 and isinstance(tools[0], str):
            return [tools[0]]
        return ["[" + ", ".join(self.tool_text(t, k) for k, t in enumerate(tools)) + "]"]

    def tool_text(self, tool: Any, k: int) -> str:
        """A tool definition as the template writes it (in ``json-list`` mode, as the list writes it);
        one given as text is written as it is."""
        if isinstance(tool, str):
            return tool
        if self.defs == "json-list":
            try:
                return json.dumps(tool)
            except (TypeError, ValueError) as e:
                raise RenderError(f"tool {k} is not JSON ({e})") from None
        if self.defs == "typescript-harmony":
            try:
                return typescript(tool)
            except _Raises as e:
                raise UnsupportedConversationError(
                    f"tool {k}: the template cannot write this definition ({e}); give the definition "
                    "a 'function' with a string 'name' and 'description', and JSON-schema parameters"
                ) from None
        if self.defs == "typescript-functionary":
            return _functionary_tool(tool, k)
        if self.defs == "function":
            if not isinstance(tool, dict) or list(tool) != ["type", "function"] or tool["type"] != "function":
                raise UnsupportedConversationError(
                    f"tool {k}: this template writes tool definitions as "
                    '{"type": "function", "function": {...}} (those two keys, in that order)'
                )
            tool = tool["function"]
        if self.defs == "fields":
            tool = self._fielded(tool, k)
        try:
            return tojson(tool, 4 if self.defs == "json-indent4" else None)
        except (TypeError, ValueError) as e:
            raise RenderError(f"tool {k} is not JSON ({e})") from None

    def _fielded(self, tool: Any, k: int) -> dict[str, Any]:
        """The object the template writes for a definition, field by field (``fields``)."""
        fn = tool.get("function") if isinstance(tool, Mapping) else None
        if not isinstance(fn, Mapping):
            raise UnsupportedConversationError(
                f'tool {k}: this template writes the fields of a definition\'s "function" object, '
                f'and it has none: write it as {{"type": "function", "function": {{...}}}}'
            )
        if self.fields[0].how in ("rest", "skip"):
            return self._every_key(fn, k)
        out: dict[str, Any] = {}
        for f in self.fields:
            if f.how == "const":
                out[f.key] = f.value
            elif f.how == "json":
                if f.key not in fn:
                    raise UnsupportedConversationError(
                        f"tool {k} has no {f.key!r}, which its template writes as JSON (and fails without)"
                    )
                out[f.key] = fn[f.key]
            else:
                text = fn.get(f.key, "")
                if not _unescaped(text):
                    what = "not a string" if not isinstance(text, str) else "holds characters JSON escapes"
                    raise UnsupportedConversationError(
                        f"tool {k}: its {f.key} {text!r} is {what}, and the template writes it as it is between "
                        "quotes, which would not read back as JSON; give it a string with no quote, backslash "
                        "or control character"
                    )
                out[f.key] = text
        return out

    def _every_key(self, fn: Mapping[Any, Any], k: int) -> dict[str, Any]:
        """The function object as a template writing every key (``*``) writes it, less the keys it skips."""
        skipped = {f.key for f in self.fields if f.how == "skip"}
        out: dict[str, Any] = {}
        for key, value in fn.items():
            if key in skipped:
                continue
            for what, text in (("key", key), ("value", value)):
                if (what == "key" or isinstance(text, str)) and not _unescaped(text):
                    raise UnsupportedConversationError(
                        f"tool {k}: the {what} {text!r} of its function is not a string with no quote, backslash "
                        "or control character, and the template writes it as it is between quotes, which would "
                        "not read back as JSON; leave those characters out of it"
                    )
            out[key] = value
        return out

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

    def function_check(self, call: Any, where: str, format: str) -> None:
        """Refuse a call whose function object the template would write other than as the grammar does."""
        fn = call.get("function")
        if self.call_function == "tojson" and (not isinstance(fn, Mapping) or list(fn) != ["name", "arguments"]):
            keys = list(fn) if isinstance(fn, Mapping) else "none"
            raise UnsupportedConversationError(
                f"{where}: {format}'s template writes a call's 'function' object as JSON, every key in its order, "
                f"and chatgrammar writes and reads one of 'name' then 'arguments', not {keys}; give it those two only",
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

    def read_tools(self, raw: str, canonical: bool) -> tuple[list[Any], ValueError | str | None]:
        """A definition's text (the list's, in ``json-list`` mode) -> (the definitions, what is wrong with them)."""
        if self.defs != "json-list":
            value, problem = self.read_tool(raw, canonical)
            return [value], problem
        try:
            value = json.loads(raw)
        except ValueError as e:
            return [raw], e
        except RecursionError:
            return [raw], ValueError("nested too deep")
        if not isinstance(value, list):
            return [raw], ValueError("JSON, but not a list")
        return value, NONCANONICAL if canonical and json.dumps(value) != raw else None

    def read_tool(self, raw: str, canonical: bool) -> tuple[Any, ValueError | str | None]:
        """A definition as written -> (its value, what is wrong with it); a TypeScript one is its text."""
        if self.defs not in JSON_DEFS:
            return raw, None
        value, problem = _decoded(raw, canonical, 4 if self.defs == "json-indent4" else None)
        if self.defs == "function" and not isinstance(problem, ValueError):
            value = {"type": "function", "function": value}
        if self.defs == "fields" and self.fields[0].how in ("rest", "skip") and not isinstance(problem, ValueError):
            skipped = {f.key for f in self.fields if f.how == "skip"}
            if not isinstance(value, dict) or any(
                key in skipped or not _unescaped(key) or (isinstance(v, str) and not _unescaped(v))
                for key, v in value.items()
            ):
                return raw, ValueError("not the object the template writes (its strings as they are between quotes)")
            return {"type": "function", "function": value}, problem
        if self.defs == "fields" and not isinstance(problem, ValueError):
            if (
                not isinstance(value, dict)
                or list(value) != [f.key for f in self.fields]
                or any(
                    (f.how == "quoted" and not isinstance(value[f.key], str))
                    or (f.how == "const" and value[f.key] != f.value)
                    for f in self.fields
                )
            ):
                written = ", ".join(f.key if f.how != "const" else f"{f.key}={tojson(f.value)}" for f in self.fields)
                return raw, ValueError(f"not the object the template writes ({written})")
            fn = {f.key: value[f.key] for f in self.fields if f.how == "json" or (f.how == "quoted" and value[f.key])}
            value = {"type": "function", "function": fn}
        return value, problem


def index_problems(roles: Sequence[str], contents: Sequence[str]) -> list[tuple[int, str]]:
    """Where ids written as running indexes (``call-ids: index``) are not what a render writes.

    Turns are given flat (a call's id, a result's id, the results around them): each call id
    must be the running index of its call; each result's id the index of a call of the
    conversation, or empty; and no turn of results may begin with an id that a result after
    the first of an earlier turn had, since the template skips such a result (it keeps the ids
    of those results, to skip them when it reaches them). Each problem: (turn, what is wrong).
    """
    problems: list[tuple[int, str]] = []
    calls = sum(1 for r in roles if r == TOOL_CALL_ID)
    n = 0
    seen: set[str] = set()  # the ids of the results after the first of their turn
    first = True  # the next result id begins a turn of results
    for k, (role, text) in enumerate(zip(roles, contents, strict=True)):
        if role == TOOL_CALL_ID:
            if text != str(n):
                problems.append((k, f"call id {text!r} where the template writes the running index {str(n)!r}"))
            n += 1
        elif role == TOOL_RESULT_ID:
            if text and int(text) >= calls:
                problems.append((k, f"result id {text!r}, but the text has {calls} tool call(s), indexed from 0"))
            elif first and text in seen:
                problems.append(
                    (
                        k,
                        f"result id {text!r} begins a turn of results, and an earlier turn has it after its first "
                        "result: the template skips such a result",
                    )
                )
            elif not first:
                seen.add(text)
            first = False
        elif role != "tool":
            first = True
    return problems


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


# -- TypeScript tool definitions (OpenAI's harmony format) -------------------------------------
#
# A port of gpt-oss's template macros ``render_tool_namespace`` (one definition) and
# ``render_typescript_type`` (one JSON schema), Jinja's semantics included: a key that is
# missing is undefined (false, and an error where the template adds it to text), ``{{ x }}``
# writes ``str(x)``, a ``set`` inside a loop does not outlive the loop (so a ``oneOf`` with
# object variants is never written as ``any``), and the whitespace the macros keep.


class _Raises(Exception):
    """The template raises writing this definition (the reason)."""


_UNDEFINED: Any = object()
_INDENT = " " * 16  # written before each property's type in a nested object
_DEFAULT_INDENT = " " * 20  # written before a oneOf variant's default


def _get(value: Any, key: Any) -> Any:
    return value.get(key, _UNDEFINED) if isinstance(value, Mapping) else _UNDEFINED


def _true(value: Any) -> bool:
    return value is not _UNDEFINED and bool(value)


def _text(value: Any, what: str) -> str:
    """``value`` where the template adds it to a string: it must be one."""
    if not isinstance(value, str):
        raise _Raises(f"{what} is {'missing' if value is _UNDEFINED else type(value).__name__}, not a string")
    return value


def _required(schema: Any) -> Any:
    required = _get(schema, "required")
    return required if _true(required) else []


def _optional(name: Any, required: Any) -> str:
    try:
        return "" if name in required else "?"
    except TypeError:
        raise _Raises(f"'required' is a {type(required).__name__}") from None


def _json(value: Any) -> str:
    try:
        return tojson(value)
    except (TypeError, ValueError) as e:
        raise _Raises(f"a default is not JSON ({e})") from None


def _items(value: Any, what: str) -> list[Any]:
    if isinstance(value, Mapping):
        return list(value)
    if isinstance(value, (str, list, tuple)):
        return list(value)
    raise _Raises(f"{what} is a {type(value).__name__}, not a list")


def _type(schema: Any) -> str:
    """One JSON schema as a TypeScript type (``render_typescript_type``)."""
    kind = _get(schema, "type")
    nullable = " | null" if _true(_get(schema, "nullable")) else ""
    if kind == "array":
        items = _get(schema, "items")
        item = _get(items, "type")
        if not _true(items):
            return "any[]" + nullable
        if item == "string":
            return "string[]" + nullable
        if item in ("number", "integer"):
            return "number[]" + nullable
        if item == "boolean":
            return "boolean[]" + nullable
        inner = _type(items)
        return ("any[]" if inner == "object | object" or len(inner) > 50 else inner + "[]") + nullable
    if isinstance(kind, (list, tuple)) and kind:  # several types: ["string", "null"]
        return " | ".join(map(str, kind))
    variants = _get(schema, "oneOf")
    if _true(variants):
        parts = []
        for variant in _items(variants, "'oneOf'"):
            part = _type(variant)
            if _true(_get(variant, "description")):
                part += "// " + _text(_get(variant, "description"), "a oneOf variant's 'description'")
            if _get(variant, "default") is not _UNDEFINED:
                part += _DEFAULT_INDENT + "// default: " + _json(_get(variant, "default"))
            parts.append(part)
        return " | \n".join(parts)
    if kind == "string":
        enum = _get(schema, "enum")
        if _true(enum):
            return '"' + '" | "'.join(map(str, _items(enum, "'enum'"))) + '"'
        return "string" + nullable
    if kind in ("number", "integer"):
        return "number"
    if kind == "boolean":
        return "boolean"
    if kind == "object":
        properties = _get(schema, "properties")
        if not _true(properties):
            return "object"
        if not isinstance(properties, Mapping):
            raise _Raises(f"'properties' is a {type(properties).__name__}, not an object")
        required = _required(schema)
        fields = [f"{name}{_optional(name, required)}: \n{_INDENT}{_type(spec)}" for name, spec in properties.items()]
        return "{\n" + ", ".join(fields) + "}"
    return "any"


def typescript(tool: Any) -> str:
    """A tool definition as gpt-oss's template writes it in its ``functions`` namespace, without the
    blank line after it; raises ``_Raises`` where the template raises.

    >>> print(typescript({"type": "function", "function": {"name": "now", "description": "The time.",
    ...     "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}}}))
    // The time.
    type now = (_: {
    tz: string,
    }) => any;
    """
    function = _get(tool, "function")
    if function is _UNDEFINED:
        raise _Raises("it has no 'function'")
    head = "// " + _text(_get(function, "description"), "its 'description'") + "\n"
    head += "type " + _text(_get(function, "name"), "its 'name'") + " = "
    parameters = _get(function, "parameters")
    properties = _get(parameters, "properties")
    if not (_true(parameters) and _true(properties)):
        return head + "() => any;"
    if not isinstance(properties, Mapping):
        raise _Raises(f"'properties' is a {type(properties).__name__}, not an object")
    required = _required(parameters)
    lines = []
    for name, spec in properties.items():
        line = ""
        if _true(_get(spec, "description")):
            line += "// " + _text(_get(spec, "description"), f"the 'description' of {name!r}") + "\n"
        line += f"{name}{_optional(name, required)}: {_type(spec)}"
        default = _get(spec, "default")
        if default is not _UNDEFINED:
            if _true(_get(spec, "enum")):
                line += ", // default: " + _text(default, f"the default of {name!r} (an enum)")
            elif _true(_get(spec, "oneOf")):
                line += "// default: " + _text(default, f"the default of {name!r} (a oneOf)")
            else:
                line += ", // default: " + _json(default)
        lines.append(line + ",\n")
    return head + "(_: {\n" + "".join(lines) + "}) => any;"


# -- TypeScript tool definitions (Functionary) -------------------------------------------------
#
# A port of the macros of Functionary's template (``generate_schema_from_functions`` and the
# macros it calls), one function each, Jinja's semantics included: ``x["k"]`` of a missing key
# is undefined (false; written as nothing; an error where the template adds it to text or
# calls it), ``{{ x }}`` and ``~`` write ``str(x)``, ``+`` joins texts only, ``.get`` and
# ``.items`` need a mapping, a macro that writes nothing returns "".

_NONE = "<|NONE|>"  # the macros' marker for "no comment", "no format"
_BOUNDS = (
    ("maximum", "Maximum"),
    ("minimum", "Minimum"),
    ("maxLength", "Maximum length"),
    ("minLength", "Minimum length"),
)


def _plus(*parts: Any) -> str:
    """Jinja's ``a + b + ...`` where the template writes text: every part must be a text."""
    for p in parts:
        if not isinstance(p, str):
            raise _Raises(f"it adds {'an undefined value' if p is _UNDEFINED else type(p).__name__} to a text")
    return "".join(parts)


def _str(value: Any) -> str:
    """``{{ value }}`` and ``~``: str(value), an undefined value written as nothing."""
    return "" if value is _UNDEFINED else str(value)


def _fget(value: Any, key: str, default: Any) -> Any:
    """``value.get(key, default)``: only a mapping has it."""
    if not isinstance(value, Mapping):
        raise _Raises(f"it calls .get on a {type(value).__name__}")
    return value.get(key, default)


def _in(key: Any, container: Any) -> bool:
    """``key in container``."""
    try:
        return key in container
    except TypeError:
        raise _Raises(f"it tests membership in a {type(container).__name__}") from None


def _item(value: Any, key: str) -> Any:
    """``value[key]``: a mapping's value or undefined (a text's ``format`` is a method: refused)."""
    if value is _UNDEFINED or (isinstance(value, str) and key == "format"):
        raise _Raises(f"it reads {key!r} of {'an undefined value' if value is _UNDEFINED else 'a text'}")
    return _get(value, key)


def _each(value: Any, what: str) -> list[Any]:
    """``for x in value``: an undefined value has nothing in it."""
    return [] if value is _UNDEFINED else _items(value, what)


def _iterable(value: Any) -> bool:
    try:
        iter(value)
    except TypeError:
        return False
    return True


def _length(value: Any) -> int:
    try:
        return len(value)
    except TypeError:
        raise _Raises(f"it takes the length of a {type(value).__name__}") from None


def _offset(depth: int) -> str:
    return "    " * depth if depth >= 1 else ""


def _example(example: Any) -> str:
    return "// " + _str(example).replace("'", '"')


def _fn_convert_data_type(param_type: Any) -> str:
    return "number" if param_type in ("integer", "float") else _str(param_type)


def _fn_param_type(param: Any) -> str:
    if _in("type", param):
        raw = _item(param, "type")
        if _iterable(raw) and not isinstance(raw, str):
            raw = " | ".join(map(_str, raw))
        return _fn_convert_data_type(raw)
    if _in("oneOf", param):
        seen: dict[Any, Any] = {}  # Jinja's unique: the first of each, texts compared lower-cased
        variants = _item(param, "oneOf")
        try:
            for item in _items(variants, "'oneOf'") if _true(variants) else []:  # selectattr skips a false one
                t = _get(item, "type")
                if t is not _UNDEFINED:
                    seen.setdefault(t.lower() if isinstance(t, str) else t, t)
        except TypeError as e:
            raise _Raises(f"its 'oneOf' ({e})") from None
        return _fn_convert_data_type(" | ".join(map(_str, seen.values())))
    return ""


def _fn_format(param: Any) -> str:
    if _in("format", param):
        return _str(_item(param, "format"))
    if _in("oneOf", param):
        items = param["oneOf"]
        out = ""
        for item in _items(items, "'oneOf'"):
            if _in("format", item):
                last = _get(items, -1) if isinstance(items, Mapping) else items[-1]
                value = _item(item, "format")
                out += _str(value) if value == _item(last, "format") else _plus(value, " or ")
        return out
    return _NONE


def _fn_param_info(param: Any) -> str:
    param_type = _fget(param, "type", "any")
    fmt = _fn_format(param)
    if not (
        _in("description", param)
        or _in("default", param)
        or fmt != _NONE
        or any(_true(_item(param, f)) for f, _ in _BOUNDS)
    ):
        return _NONE
    out = "//"
    if _in("description", param):
        desc = _item(param, "description")
        if not isinstance(desc, str):
            raise _Raises(f"a parameter's description is a {type(desc).__name__}, not a text")
        out += " " + (desc if desc.endswith(".") else desc + ".")
    if _in("default", param):
        default = _str(_item(param, "default"))
        out += " Default=" + ('"' + default + '"' if param_type == "string" else default) + "."
    if fmt != _NONE:
        out += " Format=" + fmt
    return out + "".join(" " + label + "=" + _str(_item(param, f)) for f, label in _BOUNDS if _in(f, param))


def _fn_enum(options: Any) -> str:
    out = ""
    values = _each(options, "'enum'")
    last = _get(options, -1) if isinstance(options, Mapping) else values[-1] if values else _UNDEFINED
    for v in values:
        out += '"' + v + '"' if isinstance(v, str) else _str(v)
        if _length(options) > 0 and v != last:
            out += " | "
    return out


def _fn_declared(declaration: str, comment: str, examples: list[Any], depth: int) -> str:
    """``append_new_param_info``: the comment and (only with it) the examples, then the declaration."""
    offset = _offset(depth)
    out = ""
    if comment != _NONE:
        out += "\n" + offset + comment + "".join("\n" + offset + _example(e) for e in examples)
    return out + "\n" + offset + declaration


def _fn_array(name: str | None, param: Any, depth: int) -> str:
    offset = _offset(depth)
    items = _fget(param, "items", {})
    if _length(items) == 0:
        return _plus("\n", offset, name, ": []") if name else "\n" + offset + "[]"
    kind = _fn_param_type(items)
    if kind == "object":
        head = _plus("\n", offset, name, ": {") if name else "\n" + offset + "{"
        body = _fn_params(_fget(items, "properties", {}), _fget(items, "required", []), depth + 1)
        return head + body + "\n" + offset + "}[]"
    if kind == "array":
        inner = _fn_array(None, items, depth + 1)
        return "\n" + inner + "[]" if not name else "\n" + offset + name + ": " + inner.strip() + "[]"
    if _in("enum", items):
        union = _fn_enum(_item(items, "enum"))
        return "(" + union + ")[]" if name is None else "\n" + offset + name + ": (" + union + ")[]"
    return "\n" + kind + "[]" if name is None else "\n" + offset + name + ": " + kind + "[],"


def _fn_params(properties: Any, required: Any, depth: int) -> str:
    """``get_parameter_typescript``: one declaration per property (a property not a mapping is skipped)."""
    if not isinstance(properties, Mapping):
        raise _Raises(f"it calls .items on a {type(properties).__name__}")
    out = ""
    offset = _offset(depth)
    for name, param in properties.items():
        if not isinstance(param, Mapping):
            continue
        if not isinstance(name, str):
            raise _Raises(f"a property's name is a {type(name).__name__}, not a text")
        comment = _fn_param_info(param)
        examples: list[Any] = []
        if _in("examples", param):
            given = param["examples"]
            if not isinstance(given, list):
                raise _Raises(f"the examples of {name!r} are a {type(given).__name__}, not a list")
            examples = [_plus("Example ", name, ":"), *given]
        declaration = name + "?" if _iterable(required) and not _in(name, required) else name
        kind = _fn_param_type(param)
        if kind == "object":
            if comment != _NONE:
                out += "\n" + offset + comment
            out += "".join("\n" + offset + _example(e) for e in examples)
            out += "\n" + offset + declaration + ": {"
            out += _fn_params(_fget(param, "properties", {}), _fget(param, "required", []), depth + 1)
            out += "\n" + offset + "},"
        elif kind == "array":
            if not _in("type", _fget(param, "items", {})):
                out += _fn_declared(declaration + ": [],", comment, examples, depth)
            else:
                if comment != _NONE:
                    out += "\n" + offset + comment
                out += "".join("\n" + offset + _example(e) for e in examples)
                array = _fn_array(declaration, param, depth)
                out += array if array.endswith(",") else array + ","
        else:
            if _in("enum", param):
                kind = _fn_enum(_item(param, "enum"))
            if _in("nullable", param) and _true(_item(param, "nullable")):
                kind += " | null"
            out += _fn_declared(declaration + ": " + kind + ",", comment, examples, depth)
    return out


def typescript_functionary(tool: Any) -> str | None:
    """A tool definition as Functionary's template writes it in its ``functions`` namespace (its
    ``generate_schema_from_functions``), without the blank line after it; None where the template
    writes nothing (a definition without a name); raises ``_Raises`` where the template raises.

    >>> print(typescript_functionary({"type": "function", "function": {"name": "now", "description": "The time",
    ...     "parameters": {"type": "object", "properties": {"tz": {"type": "string", "description": "Zone"},
    ...     "days": {"type": "integer", "default": 1}}, "required": ["tz"]}}}))
    // The time
    type now = (_: {
    // Zone.
    tz: string,
    // Default=1.
    days?: number,
    }) => any;
    """
    function = tool
    if _true(_fget(tool, "function", _UNDEFINED)):
        function = tool["function"]
    name = _fget(function, "name", _UNDEFINED)
    if not _true(name):
        return None
    description = _fget(function, "description", "")
    parameters = _fget(function, "parameters", {})
    head = _plus("// ", description, "\n", "type ", name)
    if _true(parameters) and _true(_fget(parameters, "properties", _UNDEFINED)):
        properties = parameters["properties"]
        return head + " = (_: {" + _fn_params(properties, _fget(parameters, "required", []), 0) + "\n}) => any;"
    return head + " = () => any;"


def _functionary_tool(tool: Any, k: int) -> str:
    """A definition as ``typescript-functionary`` writes it, refused where the template writes it
    otherwise than as its text in the namespace (nothing, or a further system turn) or raises."""
    if _get(tool, "type") == "code_interpreter":
        raise UnsupportedConversationError(
            f"tool {k} is a code interpreter, for which the template writes a further system turn of "
            "instructions that chatgrammar does not write; remove it"
        )
    try:
        text = typescript_functionary(tool)
    except _Raises as e:
        raise UnsupportedConversationError(
            f"tool {k}: the template cannot write this definition ({e}); give it a 'function' with a string "
            "'name' and 'description', and JSON-schema parameters"
        ) from None
    if text is None:
        raise UnsupportedConversationError(
            f"tool {k} has no name, and the template writes nothing for it (it would not read back); "
            "give its function a 'name', or remove it"
        )
    return text
