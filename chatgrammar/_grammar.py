"""Reading a grammar file: its metadata header, and its rules as IR.

A format grammar is a Lark grammar with a few conventions:

* a header of ``// key: value`` lines at the top (see ``HEADER_KEYS``);
* ``%declare``'d terminals are *slots*: ``ROLE`` is a message's role, any other
  one its content; the compiler derives their patterns;
* a rule named after a role (``user``, or ``user__variant`` for a second shape
  of the same role) is one message of that role, and a rule named ``message``
  is a message whose ``ROLE`` slot gives the role;
* the rule ``generation`` is the generation prompt (it may be empty);
* the templates ``_strip{X}``, ``_lstrip{X}`` and ``_rstrip{X}`` declare that
  the template trims the content it puts in slot ``X``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lark import Token, Tree
from lark.exceptions import GrammarError as LarkGrammarError
from lark.exceptions import UnexpectedInput
from lark.grammar import NonTerminal, Terminal
from lark.lexer import PatternStr
from lark.load_grammar import GrammarBuilder, _literal_to_pattern

from ._errors import GrammarError
from ._ir import STRUCTURAL, Alt, Cond, Gen, Lit, Msg, Node, Opt, Seq, Slot, Star
from ._payloads import ARGS_MODES, CALL_IDS, DEFS_MODES, def_fields

__all__ = ["HEADER_KEYS", "GrammarSpec", "load_grammar", "read_header"]

HEADER_KEYS: dict[str, str] = {
    "name": "canonical name of the format (a lowercase slug)",
    "aliases": "other names users type for it, comma-separated",
    "models": "model ids that use it, comma-separated",
    "reference": "the Hugging Face chat template it reproduces (a file name)",
    "roles": "the roles it has, comma-separated, or * for any role",
    "tokens": "terminals that are special tokens: refused anywhere in content",
    "markers": "terminals that are plain-text markers: refused at the start of a line in content",
    "stop": "terminals whose text ends an assistant turn (the stop strings)",
    "bos": "the terminal holding the BOS token",
    "eos": "the terminal holding the EOS token",
    "options": "the template's switches with their values, the default first: enable_thinking=true|false",
    "option-flags": "texts in a first system message that set an option, and that the template takes out of it, "
    "the first found winning: enable_thinking=false /no_think, enable_thinking=true /think",
    "date": "a slot the template fills with a date, and its strftime format: DATE %d %b %Y",
    "date-default": "the date text the template writes when no date is given (default: today)",
    "default-system": "a rule whose text the template writes as the system message when there is none",
    "default-system-if": "when the default applies: not-first (default), no-system, or not-first-or-empty",
    "merge-system": "the separator of a system message the template writes into a user turn",
    "system-at": "where the template writes the system message: first (default) or last-user",
    "system-gather": "the template writes its system messages, wherever they are, first: last (the last one) or "
    "join TERMINAL (all of them, that terminal between)",
    "generation": "on-request (default) or always: the template writes the generation prompt either way",
    "generation-elsewhere": "refused (default) or nothing: where the grammar has no generation prompt, "
    "the template writes none (asking for one there writes nothing)",
    "role-alias": "roles the template writes as another role: tool=ipython, chatbot=assistant",
    "order-error": "the template's reason when the role order is not allowed",
    "role-error": "the template's reason when a role is not allowed",
    "calls-error": "the template's reason when an answer has more tool calls than it writes",
    "completion-reasoning": "the terminals that open and close the thinking a model writes at the start of its "
    "answer, where the template writes answers as they are: parse_completion reads it as reasoning_content",
    "tool-args": "how the template writes tool-call arguments: json (the default: arguments | tojson), raw-string "
    "(a string as it is, a value as JSON) or text (the template concatenates them: text only, read back as text)",
    "tool-defs": "how the template writes a tool definition: json (the default: tool | tojson), json-indent4, "
    "function (its function object), json-list (the whole list as one text, as json.dumps(tools) writes it), "
    "typescript-harmony (OpenAI harmony's TypeScript-like type: it reads back as its text), typescript-functionary "
    "(Functionary's TypeScript declaration: it reads back as its text), "
    'or fields and the fields the template writes of its function object: "name" '
    "(the text between quotes, as it is), parameters (as JSON), responses=null (a constant); or * (every key in "
    "its order, a string between quotes as it is, another value as JSON) and -keys it leaves out: * -return",
    "call-type": "the terminal holding the type the template writes for each tool call (the grammar writes it as "
    "that literal): a call of another type, or of none, is refused",
    "call-function": "tojson: the template writes each call's function object as JSON, every key in its order (the "
    "grammar writes the name and the arguments): a function holding anything else, or those in another order, is "
    "refused",
    "calls-content": "how the template is given an answer that only calls tools: empty (the default: content '') "
    "or none (content None, OpenAI's shape); chatgrammar's empty content stands for it",
    "id-length": "the length the template requires of tool call ids (and of a tool result's tool_call_id)",
    "id-error": "the template's reason when a call id is missing or not of that length",
    "call-ids": "given (the default: the template writes the caller's ids) or index: it writes each tool call's "
    "running index in the conversation as its id, and a result's tool_call_id as the index of the call with that id; "
    "they read back as those numbers, and a text whose numbers are not so does not parse",
    "beside-calls": "reasoning: the template writes the content of an answer with tool calls where its thinking "
    "goes (it reads back as reasoning_content)",
    "beside-calls-error": "the template's reason when an answer with tool calls has both content and reasoning",
    "result-error": "the template's reason when a tool result has no tool call before it (since the last answer "
    "without calls) whose name it writes",
    "reasoning-field": "the message key the template reads an assistant's thinking from, when not reasoning_content "
    "(render takes it as another name of reasoning_content; the tests pass reasoning_content to the template so)",
    "tools-key": "the key of a system message the template reads the tool definitions from, as a text its users "
    "write (json.dumps(tools)), instead of its tools variable: render writes tools=... there, in the first message, "
    "and refuses them when that is not a system message",
    "tools-at": "where the template writes the tool definitions among the messages: after-system (the default), "
    "first, before-last-user; several when a template switch moves them",
    "refuse-empty": "tools, tool_calls: the lists the template writes when empty, unlike when missing (it tests "
    "is not none), as no grammar turn writes them: tools=[], or an answer's tool_calls=[], is refused",
    "description": "one line saying what the format is",
}
_MESSAGE_KEYS = ("role", "content", "complete", "reasoning_content", "tool_calls", "tool_call_id", "name")
_LIST_KEYS = {"aliases", "models", "roles", "tokens", "markers", "stop", "tools-at", "refuse-empty"}
_PLACES = ("after-system", "first", "before-last-user")
_EMPTY_LISTS = ("tools", "tool_calls")
_HEADER_LINE = re.compile(r"//\s*([a-z][a-z-]*)\s*:(.*)$")
_TRANSFORMS = {
    "_strip": "strip",
    "_lstrip": "lstrip",
    "_rstrip": "rstrip",
    "_strip_nl": "strip_nl",
    "_lstrip_nl": "lstrip_nl",
    "_rstrip_nl": "rstrip_nl",
    "_tojson": "json",
    "_drop": "drop",
    "_empty": "empty",
}
_ROLE_TRANSFORMS = {"_title": "title"}
CONDITION = "_if"
ROLE_SLOT = "ROLE"
GENERIC_RULE = "message"
GENERATION_RULE = "generation"


@dataclass
class GrammarSpec:
    """A loaded grammar: header, IR of ``start``, and the literal terminals."""

    source: str
    origin: str
    header: dict[str, Any]
    start: Node
    terminals: dict[str, str]  # literal terminal name -> its text
    slots: list[str]  # declared slot terminal names
    roles: list[str] | None  # None: any role
    default_system: Node | None = None  # the header's default-system rule, as IR

    @property
    def name(self) -> str:
        return str(self.header["name"])

    def terminal_texts(self, key: str) -> list[str]:
        """The texts of the terminals a header key lists (``tokens``, ``stop``...)."""
        return [self.terminals[t] for t in self.header.get(key, [])]


def read_header(source: str, origin: str = "<grammar>") -> dict[str, Any]:
    """The ``// key: value`` lines at the top of a grammar, parsed."""
    header: dict[str, Any] = {}
    for lineno, raw in enumerate(source.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if not line.startswith("//"):
            break
        m = _HEADER_LINE.match(line)
        if not m:
            continue  # an ordinary comment
        key, value = m.group(1), m.group(2).strip()
        if key not in HEADER_KEYS:
            raise GrammarError(
                f"unknown header key {key!r}; known keys: {', '.join(HEADER_KEYS)}",
                source=origin,
                line=lineno,
            )
        if key in header:
            raise GrammarError(f"header key {key!r} given twice", source=origin, line=lineno)
        try:
            header[key] = _header_value(key, value)
        except ValueError as e:
            raise GrammarError(f"header {key!r}: {e}", source=origin, line=lineno) from None
    if "name" not in header:
        raise GrammarError("the header has no '// name: ...' line", source=origin, line=1)
    if not re.fullmatch(r"[a-z0-9][a-z0-9.\-]*", header["name"]):
        raise GrammarError(
            f"format name {header['name']!r} is not a lowercase slug (letters, digits, '.', '-')",
            source=origin,
            line=1,
        )
    return header


_CHOICES = {
    "default-system-if": ("not-first", "no-system", "not-first-or-empty"),
    "system-at": ("first", "last-user"),
    "generation": ("on-request", "always"),
    "generation-elsewhere": ("refused", "nothing"),
    "tool-args": ARGS_MODES,
    "calls-content": ("empty", "none"),
    "call-function": ("tojson",),
    "call-ids": CALL_IDS,
    "beside-calls": ("reasoning",),
}


def _words_of(value: str, allowed: tuple[str, ...], how_many: str) -> list[str]:
    """A header value listing some of ``allowed`` (separated by commas or spaces); ValueError otherwise."""
    words = [v for v in re.split(r"[,\s]+", value) if v]
    wrong = [w for w in words if w not in allowed]
    if not words or wrong:
        raise ValueError(f"{', '.join(wrong) or 'nothing'}: write {how_many} of {', '.join(allowed)}")
    return words


def _header_value(key: str, value: str) -> Any:
    if key in ("aliases", "models"):
        return [v.strip() for v in value.split(",") if v.strip()]
    if key in ("tokens", "markers", "stop", "roles"):
        return [v for v in re.split(r"[,\s]+", value) if v]
    if key == "tools-at":
        return _words_of(value, _PLACES, "one or more")
    if key == "refuse-empty":
        return _words_of(value, _EMPTY_LISTS, "one or both")
    if key == "options":
        return _options(value)
    if key == "option-flags":
        flags = []
        for item in (v.strip() for v in value.split(",")):
            setting, _, flag = item.partition(" ")
            name, eq, choice = setting.partition("=")
            if not eq or not flag.strip() or not name.strip():
                raise ValueError(f"{item!r} is not option=value FLAG")
            flags.append((name.strip(), _option_value(choice.strip()), flag.strip()))
        return flags
    if key == "role-alias":
        pairs = [item.split("=") for item in (v.strip() for v in value.split(",")) if item]
        if any(len(p) != 2 or not all(x.strip() for x in p) for p in pairs):
            raise ValueError("write role=written_as pairs: tool=ipython")
        return {a.strip(): b.strip() for a, b in pairs}
    if key == "date":
        terminal, _, fmt = value.partition(" ")
        if not terminal or not fmt.strip():
            raise ValueError("write the slot then the strftime format: DATE %d %b %Y")
        return (terminal, fmt.strip())
    if key == "completion-reasoning":
        tags = value.split()
        if len(tags) != 2:
            raise ValueError("write the opening terminal then the closing one: _THINK _THINK_END")
        return tags
    if key == "system-gather":
        how, _, sep = value.partition(" ")
        if how == "last" and not sep.strip():
            return ("last", None)
        if how == "join" and re.fullmatch(r"_?[A-Z][A-Z0-9_]*", sep.strip()):
            return ("join", sep.strip())
        raise ValueError("write last, or join and the separator's terminal: join _BLANK")
    if key == "tool-defs":
        mode, _, fields = value.partition(" ")
        if mode not in DEFS_MODES or (mode == "fields") != bool(fields.strip()):
            raise ValueError(f"{value!r} is not one of {', '.join(DEFS_MODES)} (fields with its fields)")
        return (mode, def_fields(fields) if fields.strip() else ())
    if key == "reasoning-field" and (not re.fullmatch(r"[a-z_][a-z0-9_]*", value) or value in _MESSAGE_KEYS):
        raise ValueError(f"{value!r} is not a message key of its own (a lowercase name: thinking)")
    if key in _CHOICES and value not in _CHOICES[key]:
        raise ValueError(f"{value!r} is not one of {', '.join(_CHOICES[key])}")
    return value


def _options(value: str) -> dict[str, list[Any]]:
    """``name=default|other, ...`` -> {name: [default, other]}, "true"/"false" as bools."""
    options: dict[str, list[Any]] = {}
    for item in (v.strip() for v in value.split(",")):
        name, eq, choices = item.partition("=")
        if not eq or not re.fullmatch(r"[a-z_][a-z0-9_]*", name.strip()) or not choices.strip():
            raise ValueError(f"{item!r} is not name=default|other")
        values = [_option_value(v.strip()) for v in choices.split("|")]
        if values in ([True], [False]):
            values = [values[0], not values[0]]
        options[name.strip()] = values
    return options


def _option_value(text: str) -> Any:
    return {"true": True, "false": False}.get(text, text)


def load_grammar(source: str, *, origin: str, import_paths: Sequence[str]) -> GrammarSpec:
    """Load a grammar's text into a GrammarSpec; GrammarError on any problem."""
    header = read_header(source, origin)
    builder = GrammarBuilder(False, list(import_paths))
    try:
        builder.load_grammar(source, origin)
        builder.validate()
    except UnexpectedInput as e:
        raise GrammarError(
            f"not valid Lark syntax: {_first_line(e)}", source=origin, line=e.line, column=e.column
        ) from None
    except (LarkGrammarError, OSError) as e:
        text = str(e)
        at = re.search(r"at line (\d+) column (\d+)", text)
        if at:  # Lark could not read the grammar itself
            raise GrammarError(
                f"not valid Lark syntax: {_first_line(e)}",
                source=origin,
                line=int(at.group(1)),
                column=int(at.group(2)),
            ) from None
        raise GrammarError(text, source=origin, line=_line_of_name(source, text)) from None
    return _Builder(builder._definitions, header, source, origin).build()


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0]


def _line_of_name(source: str, message: str) -> int | None:
    for name in re.findall(r"'([A-Za-z_][A-Za-z0-9_]*)'", message):
        line = _definition_line(source, name)
        if line:
            return line
    return None


def _definition_line(source: str, name: str) -> int | None:
    m = re.search(rf"^\s*[?!]?{re.escape(name)}\b\s*(\{{[^}}]*\}})?\s*(\.\d+)?\s*:", source, re.MULTILINE)
    return source.count("\n", 0, m.start()) + 1 if m else None


class _Builder:
    """Turns Lark's rule definitions into IR, inlining rules and templates."""

    def __init__(self, definitions: dict[str, Any], header: dict[str, Any], source: str, origin: str):
        self.defs = definitions
        self.header = header
        self.source = source
        self.origin = origin
        self.terminals: dict[str, str] = {}
        self.slots: list[str] = []
        roles = header.get("roles")
        self.roles: list[str] | None = None if roles in (None, ["*"]) else list(roles)
        self.stack: list[str] = []

    def error(self, message: str, rule: str | None = None) -> GrammarError:
        line = _definition_line(self.source, rule) if rule else None
        return GrammarError(message, source=self.origin, line=line)

    def build(self) -> GrammarSpec:
        for name, d in self.defs.items():
            if not d.is_term:
                continue
            if d.tree is None:
                self.slots.append(name)
            else:
                self.terminals[name] = self.literal_terminal(name, d.tree)
        date = self.header.get("date")
        if date and date[0] not in self.slots:
            raise GrammarError(
                f"header 'date' names {date[0]!r}; declare it with %declare",
                source=self.origin,
                line=_header_line(self.source, "date"),
            )
        for key in ("tokens", "markers", "stop", "bos", "eos", "merge-system", "completion-reasoning", "call-type"):
            value = self.header.get(key)
            names = value if isinstance(value, list) else ([value] if value else [])
            for t in names:
                if t not in self.terminals:
                    raise GrammarError(
                        f"header '{key}' names {t!r}, which is not a literal terminal of the grammar",
                        source=self.origin,
                        line=_header_line(self.source, key),
                    )
        if "start" not in self.defs:
            raise GrammarError("the grammar has no 'start' rule", source=self.origin)
        start = self.rule("start", {})
        default_system = None
        if self.header.get("default-system"):
            default_system = self.rule(self.header["default-system"], {})
        return GrammarSpec(
            source=self.source,
            origin=self.origin,
            header=self.header,
            start=start,
            terminals=self.terminals,
            slots=self.slots,
            roles=self.roles,
            default_system=default_system,
        )

    def literal_terminal(self, name: str, tree: Tree[Any]) -> str:
        parts: list[str] = []
        for exp in tree.children:
            if len(tree.children) != 1 or exp.data != "expansion":
                raise self.error(f"terminal {name} must be a fixed string (no alternatives)", name)
            for value in exp.children:
                parts.append(self.literal_text(value, name))
        text = "".join(parts)
        if not text:
            raise self.error(f"terminal {name} is empty", name)
        return text

    def literal_text(self, value: Any, where: str) -> str:
        if isinstance(value, Tree) and value.data == "value":
            (value,) = value.children
        if isinstance(value, Tree) and value.data == "literal":
            (token,) = value.children
            pattern = _literal_to_pattern(token)  # type: ignore[no-untyped-call]
            if not isinstance(pattern, PatternStr) or pattern.flags:
                raise self.error(
                    f"{where}: {token} is a regular expression or has flags; "
                    "a format's literals are plain strings (declare a slot with %declare instead)",
                    where,
                )
            return str(pattern.value)
        if isinstance(value, Tree) and value.data == "expansions":
            # A terminal defined through another terminal: Lark has inlined it already.
            return "".join(self.literal_text(v, where) for exp in value.children for v in exp.children)
        raise self.error(f"{where}: only string literals can make up a terminal, not {value}", where)

    # -- rules -----------------------------------------------------------------

    def rule(self, name: str, env: dict[str, Any]) -> Node:
        d = self.defs.get(name)
        if d is None or d.is_term:
            raise self.error(f"rule {name!r} is used but not defined")
        if d.params:
            raise self.error(f"template {name!r} is used without arguments", name)
        if name in self.stack:
            chain = " -> ".join(self.stack[self.stack.index(name) :] + [name])
            raise self.error(
                f"rule {name!r} is recursive ({chain}); chat formats are regular: write repetition with * or + instead",
                name,
            )
        self.stack.append(name)
        try:
            body = self.expansions(d.tree, env, name)
        finally:
            self.stack.pop()
        if name == GENERATION_RULE:
            return Gen(body)
        if name == GENERIC_RULE:
            return Msg(role=None, rule=str(name), body=body)
        role = self.message_role(name)
        if role is not None:
            return Msg(role=role, rule=str(name), body=body)
        return body

    def message_role(self, name: str) -> str | None:
        """The role a rule named ``role`` or ``role__variant`` stands for, if it is one."""
        base = name.split("__", 1)[0]
        if name.startswith("_"):
            return None
        if base in STRUCTURAL or (self.roles is not None and base in self.roles):
            return base
        return None

    def expansions(self, tree: Tree[Any], env: dict[str, Any], rule: str) -> Node:
        alts = [self.expansion(c, env, rule) for c in tree.children]
        return alts[0] if len(alts) == 1 else Alt(tuple(alts))

    def expansion(self, tree: Tree[Any], env: dict[str, Any], rule: str) -> Node:
        if tree.data == "alias":
            raise self.error(f"rule {rule!r} uses an alias (->); name message rules after their role instead", rule)
        items = [self.item(c, env, rule) for c in tree.children]
        return items[0] if len(items) == 1 else Seq(tuple(items))

    def item(self, tree: Any, env: dict[str, Any], rule: str) -> Node:
        data = tree.data
        if data == "expansions":
            return self.expansions(tree, env, rule)
        if data == "maybe":
            return Opt(self.expansions(tree.children[0], env, rule))
        if data == "expr":
            atom, op = tree.children[0], tree.children[1]
            if op == "?":
                return Opt(self.item(atom, env, rule))
            if op == "*":
                return Star(self.item(atom, env, rule))
            if op == "+":
                return Seq((self.item(atom, env, rule), Star(self.item(atom, env, rule))))
            if isinstance(op, Token) and op.type == "TILDE":
                return self.repeat(atom, tree.children[2:], env, rule)
            raise self.error(f"rule {rule!r}: unsupported operator {op}", rule)
        if data == "value":
            return self.value(tree.children[0], env, rule)
        raise self.error(f"rule {rule!r}: unsupported construct {data}", rule)

    def repeat(self, atom: Any, bounds: list[Token], env: dict[str, Any], rule: str) -> Node:
        low = int(bounds[0])
        high = int(bounds[1]) if len(bounds) > 1 else low
        if not 0 <= low <= high or high > 64:
            raise self.error(f"rule {rule!r}: repetition ~{low}..{high} is out of range (at most 64)", rule)
        items: list[Node] = [self.item(atom, env, rule) for _ in range(low)]
        items += [Opt(self.item(atom, env, rule)) for _ in range(high - low)]
        return Seq(tuple(items))

    def value(self, v: Any, env: dict[str, Any], rule: str) -> Node:
        if isinstance(v, Terminal):
            return self.terminal(v.name, rule)
        if isinstance(v, NonTerminal):
            if v.name in env:
                arg, outer_env = env[v.name]
                return self.item(arg, outer_env, rule)
            return self.rule(v.name, env={})
        if isinstance(v, Tree) and v.data == "literal":
            return Lit(self.literal_text(v, f"rule {rule}"))
        if isinstance(v, Tree) and v.data == "template_usage":
            return self.template(v, env, rule)
        if isinstance(v, Tree) and v.data == "range":
            raise self.error(f"rule {rule!r}: character ranges are not allowed in a format", rule)
        raise self.error(f"rule {rule!r}: unsupported value {v}", rule)

    def terminal(self, name: str, rule: str) -> Node:
        if name in self.terminals:
            return Lit(self.terminals[name], terminal=name)
        if name in self.slots:
            if name == self.header.get("date", ("",))[0]:
                return Slot(terminal=name, field="var")
            return Slot(terminal=name, field="role" if name.rsplit("__", 1)[-1] == ROLE_SLOT else "content")
        raise self.error(f"rule {rule!r} uses terminal {name}, which is not defined", rule)

    def condition(self, args: list[Any], env: dict[str, Any], rule: str) -> Node:
        """``_if{"option=value", body}``: the body, written only under that option value."""
        if len(args) != 2:
            raise self.error(f'rule {rule!r}: _if{{"option=value", ...}} takes a condition and a body', rule)
        guard = args[0]
        try:
            text = self.literal_text(guard, f"rule {rule}")
        except GrammarError:
            raise self.error(
                f'rule {rule!r}: the condition of _if{{...}} must be a string "option=value"', rule
            ) from None
        name, _, value_text = text.partition("=")
        options = self.header.get("options", {})
        if name not in options:
            raise self.error(
                f"rule {rule!r}: _if{{...}} names option {name!r}, which the header does not declare", rule
            )
        value = _option_value(value_text)
        if value not in options[name]:
            raise self.error(f"rule {rule!r}: option {name!r} has no value {value_text!r}", rule)
        return Cond(name, value, self.item(args[1], env, rule))

    def template(self, usage: Tree[Any], env: dict[str, Any], rule: str) -> Node:
        head, *args = usage.children
        assert isinstance(head, NonTerminal)
        name = _unmangled(head.name)
        if name in _TRANSFORMS or name in _ROLE_TRANSFORMS:
            field = "content" if name in _TRANSFORMS else "role"
            if len(args) != 1:
                raise self.error(f"{name}{{...}} takes one slot", rule)
            inner = self.item(args[0], env, rule)
            if not isinstance(inner, Slot) or inner.field != field:
                raise self.error(f"rule {rule!r}: {name}{{...}} must wrap a {field} slot", rule)
            inner.transform = {**_TRANSFORMS, **_ROLE_TRANSFORMS}[name]
            return inner
        if name == CONDITION:
            return self.condition(args, env, rule)
        d = self.defs.get(name)
        if d is None or not d.params:
            raise self.error(f"rule {rule!r}: {name} is not a template", rule)
        if len(args) != len(d.params):
            raise self.error(f"rule {rule!r}: template {name} takes {len(d.params)} arguments", rule)
        if name in self.stack:
            raise self.error(f"template {name!r} is recursive; chat formats are regular", name)
        inner_env = {p: (a, env) for p, a in zip(d.params, args, strict=True)}
        self.stack.append(name)
        try:
            body = self.expansions(d.tree, inner_env, name)
        finally:
            self.stack.pop()
        return body


def _unmangled(name: str) -> str:
    """A template's own name: Lark renames ``_strip`` imported into a fragment ``_frag__strip``."""
    base = name.rsplit("__", 1)[-1]
    if name.startswith("_") and not base.startswith("_"):
        base = "_" + base
    return base if base in _TRANSFORMS or base in _ROLE_TRANSFORMS or base == CONDITION else name


def _header_line(source: str, key: str) -> int | None:
    m = re.search(rf"^\s*//\s*{re.escape(key)}\s*:", source, re.MULTILINE)
    return source.count("\n", 0, m.start()) + 1 if m else None


def located(e: GrammarError, source: str) -> GrammarError:
    """The error with the grammar's line and column, found from the rule or terminal it names.

    The compiler works on rules, not text: its errors name a rule (``message rule 'user'``)
    and this finds where that rule is defined. An error that knows its line gets the column
    of the first name it quotes on that line (or of the line's first character).
    """
    if e.line is not None and e.column is not None:
        return e
    names = re.findall(r"'([^'\n]+)'", e.message)
    lines = source.splitlines()
    if e.line is not None:
        text = lines[e.line - 1] if 0 < e.line <= len(lines) else ""
        found = [text.find(n) for n in names if n in text]
        column = (found[0] if found else len(text) - len(text.lstrip())) + 1
        return GrammarError(e.message, source=e.source, line=e.line, column=column)
    for name in names:
        m = re.search(rf"^\s*[?!]?({re.escape(name)})\b\s*(\{{[^}}]*\}})?\s*(\.\d+)?\s*:", source, re.MULTILINE)
        if m:
            line = source.count("\n", 0, m.start(1)) + 1
            column = m.start(1) - (source.rfind("\n", 0, m.start(1)) + 1) + 1
            return GrammarError(e.message, source=e.source, line=line, column=column)
    return e
