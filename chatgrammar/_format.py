"""Format: one chat format, compiled from its grammar on first use."""

from __future__ import annotations

import datetime
import json
import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import product
from typing import Any, Literal, overload

from ._compiler import ASSISTANT, Compiled, compile_spec
from ._errors import (
    ChatGrammarError,
    GrammarError,
    ParseError,
    RenderError,
    UnsafeContentError,
    UnsupportedConversationError,
)
from ._grammar import GrammarSpec, load_grammar, located, read_header
from ._ir import STRUCTURAL, TOOL_CALL, TOOL_DEF, TOOL_RESULT_NAME, Msg
from ._larkparser import LarkParser
from ._message import Message, MessageLike, make_message, read_messages
from ._payloads import JSON_DEFS, index_problems
from ._reader import Reader
from ._render import READERS, ROLE_TRANSFORMS, Plan, Planner
from ._results import Completion, Diagnostic, Parsed, Span
from ._scanner import Scanner
from ._structure import CALL_PARTS, MISNAMED, collapse, expand, has_structure

__all__ = ["Format", "RolePolicy"]

SystemPolicy = Literal["native", "merged-first-user", "merged-last-user", "dropped", "none"]

_TRIMS = {
    "strip": "leading and trailing whitespace is trimmed",
    "lstrip": "leading whitespace is trimmed",
    "rstrip": "trailing whitespace is trimmed",
    "strip_nl": "leading and trailing newlines are trimmed",
    "lstrip_nl": "leading newlines are trimmed",
    "rstrip_nl": "trailing newlines are trimmed",
}


@dataclass(frozen=True)
class RolePolicy:
    """Which conversations a format can write, and what it loses writing them.

    Derived from the grammar (by asking its planner), never declared twice.
    """

    system: SystemPolicy
    """``native``: a turn of its own; ``merged-first-user`` / ``merged-last-user``: written
    inside that user turn (it reads back as part of it); ``dropped``: the template writes nothing for it;
    ``none``: the format refuses it."""
    system_anywhere: bool
    """A system message may come after other messages, not only first."""
    alternation: bool
    """User and assistant turns must alternate (two user or two assistant messages in a row are refused)."""
    roles: tuple[str, ...] | None
    """The roles the format writes; None when it writes any role."""
    default_system: str | None
    """What the template writes when the conversation has no system message (``{date}`` stands for the date)."""
    losses: tuple[str, ...]
    """What ``normalize`` changes, in words: trimmed content, merged or dropped messages, defaults."""


class Format:
    """A chat format: renders conversations to text and parses text back.

    Both directions come from one grammar (``grammar`` holds its source), so
    ``parse(render(m)) == normalize(m)`` for every conversation ``m`` the format
    can represent. Formats are built by the registry (``get_format``); compiling
    happens on first use and is safe to share between threads.
    """

    def __init__(self, source: str, *, origin: str = "<grammar>", import_paths: Sequence[str] = ()) -> None:
        try:
            self._header = read_header(source, origin)
        except GrammarError as e:
            raise located(e, source) from None
        self.grammar: str = source
        self.origin = origin
        self._import_paths = list(import_paths)
        self._lock = threading.RLock()
        self._spec: GrammarSpec | None = None
        self._variants: dict[tuple[Any, ...], _Variant] = {}
        self._default: _Variant | None = None
        # The fast paths of render() and parse() read these directly; compiling the
        # default variant fills them in (until then they send the call down the slow path).
        self._plans: dict[Any, Plan] = {}
        self._scan_text: Callable[[str], list[Message] | None] = self._compile_and_scan
        self._no_variables = False  # the default variant prints no date: render needs no values
        self._has_dropped = False  # the template drops messages: readings may need them back
        # The structural roles (reasoning, tool calls, tool definitions) the format writes.
        self._structural: frozenset[str] = frozenset()
        header = self._header
        self._always_gen = header.get("generation") == "always"
        self._fast_ok = header.get("default-system-if") != "not-first-or-empty"
        self._gather: tuple[str, str | None] | None = header.get("system-gather")
        self._option_flags: list[tuple[str, Any, str]] = header.get("option-flags", [])
        self._reasoning_field: str | None = header.get("reasoning-field")

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any] | str | os.PathLike[str]) -> Format:
        """A format from a declarative spec: a mapping, or JSON/TOML text or a ``.json``/``.toml`` file.

        Three shapes are read: chatgrammar's ``roles`` of ``pre``/``post``; litellm's
        ``register_prompt_template`` arguments (``pre_message``/``post_message``,
        ``initial_prompt_value``, ``final_prompt_value``, ``bos_token``, ``eos_token``); and
        chatformat's rounds (``with_system``/``without_system``). The spec is compiled to a
        grammar (``.grammar`` holds it), so the format parses as well as it renders.

        >>> fmt = Format.from_spec({"name": "tiny", "roles": {
        ...     "user": {"pre": "<|user|>\\n", "post": "<|end|>\\n"},
        ...     "assistant": {"pre": "<|bot|>\\n", "post": "<|end|>\\n"}}})
        >>> text = fmt.render([{"role": "user", "content": "Hi"}], add_generation_prompt=True)
        >>> text
        '<|user|>\\nHi<|end|>\\n<|bot|>\\n'
        >>> fmt.parse(text + "Hello<|end|>\\n")[-1].content, fmt.stop
        ('Hello', ['<|end|>'])

        A spec that cannot be read back (two contents with nothing between them) raises
        GrammarError, showing the grammar it compiled to.
        """
        from ._custom import format_from_spec

        return format_from_spec(spec)

    def to_lark(self) -> str:
        """The grammar's source (the spec both directions are derived from).

        ``%import .fragments.…`` lines refer to chatgrammar's ``grammars/fragments``.
        """
        return self.grammar

    def to_jinja(self) -> str:
        """A Hugging Face ``chat_template`` that renders byte-identically to this format.

        The format's renders are probed for what it writes around each role's content,
        written as a template, and the template is checked against the format on
        generated conversations (with jinja2 under Hugging Face's settings) before it is
        returned. Formats outside that family (a system message merged into the first user
        turn, tool calls, thinking) raise ``TemplateCaptureError`` naming the probe.

        >>> from chatgrammar import get_format
        >>> print(get_format("chatml").to_jinja().splitlines()[-5])
        {{ '<|im_start|>' }}{{ message['role'] }}{{ '\\n' }}{{ message['content'] }}{{ '<|im_end|>\\n' }}
        """
        from ._export import to_jinja

        return to_jinja(self)

    def constraint_grammar(self, dialect: str = "lark", *, special_tokens: bool = False) -> str:
        """A grammar of one assistant answer (content, then a stop string) for constrained decoding.

        ``dialect="lark"`` is llguidance's Lark (vLLM, SGLang and llama.cpp read it through
        llguidance); ``"gbnf"`` is llama.cpp's GBNF. Tool calls and thinking are not in it.
        """
        from ._constrain import assistant_grammar

        return assistant_grammar(self, dialect=dialect, special_tokens=special_tokens)

    # -- metadata --------------------------------------------------------------

    @property
    def name(self) -> str:
        """The canonical name (a lowercase slug)."""
        return str(self._header["name"])

    @property
    def aliases(self) -> list[str]:
        """Other names users type for this format (chat_format names, model ids...)."""
        return list(self._header.get("aliases", []))

    @property
    def models(self) -> list[str]:
        """Model ids known to use this format."""
        return list(self._header.get("models", []))

    @property
    def reference(self) -> str | None:
        """The file name of the Hugging Face chat template this format reproduces."""
        value = self._header.get("reference")
        return str(value) if value else None

    @property
    def description(self) -> str:
        return str(self._header.get("description", ""))

    @property
    def roles(self) -> list[str] | None:
        """The roles this format has; None when it takes any role."""
        roles = self._header.get("roles")
        return None if roles is None or "*" in roles else list(roles)

    @property
    def stop(self) -> list[str]:
        """Strings that end an assistant turn: stop generating at any of them."""
        return [t.strip() or t for t in self._c.spec.terminal_texts("stop")]

    @property
    def bos(self) -> str | None:
        """The BOS token the format writes, if any."""
        return self._terminal("bos")

    @property
    def eos(self) -> str | None:
        """The EOS token the format writes, if any."""
        return self._terminal("eos")

    @property
    def generation_prompt(self) -> str | None:
        """What ``add_generation_prompt=True`` writes after the last turn; None if the format has none."""
        c = self._c
        if c.gen_pieces is None:
            return None
        write = ROLE_TRANSFORMS[c.gen_role_slot.transform][0] if c.gen_role_slot and c.gen_role_slot.transform else str
        return "".join(p if isinstance(p, str) else write(ASSISTANT) for p in c.gen_pieces)

    @property
    def tokens(self) -> list[str]:
        """The special tokens the format writes: refused anywhere in content."""
        return list(self._c.tokens)

    @property
    def markers(self) -> list[str]:
        """Plain-text markers (``### Response:``): refused at the start of a line in content."""
        return list(self._c.markers)

    @property
    def delimiters(self) -> list[str]:
        """The special tokens and line-start markers refused inside content."""
        c = self._c
        return list(dict.fromkeys(c.tokens + c.markers))

    @property
    def policy(self) -> RolePolicy:
        """The format's role policy: system message, alternation, roles, losses.

        >>> from chatgrammar import get_format
        >>> p = get_format("llama2").policy
        >>> p.system, p.alternation
        ('native', True)
        >>> get_format("gemma3").system
        'merged-first-user'
        """
        policy = self.__dict__.get("_policy")
        if policy is None:
            policy = self.__dict__["_policy"] = self._role_policy()
        return policy

    @property
    def system(self) -> SystemPolicy:
        """Where a system message goes (see ``RolePolicy.system``)."""
        return self.policy.system

    @property
    def alternation(self) -> bool:
        """Whether user and assistant turns must alternate."""
        return self.policy.alternation

    @property
    def losses(self) -> list[str]:
        """What rendering loses, in words (``normalize`` shows it on a conversation)."""
        return list(self.policy.losses)

    def _accepts(self, roles: list[str]) -> Plan | None:
        try:
            return self._planner.plan(list(roles), False, False)
        except UnsupportedConversationError:
            return None

    def _role_policy(self) -> RolePolicy:
        c = self._c
        header = self._header
        system: SystemPolicy
        plan = self._accepts(["system", "user"])
        if c.merge_sep is not None:
            system = "merged-last-user" if header.get("system-at") == "last-user" else "merged-first-user"
        elif plan is not None and 0 in plan.order:
            system = "native"
        elif plan is not None:
            system = "dropped"
        else:
            system = "none"
        later = self._accepts(["user", "assistant", "system", "user"])
        anywhere = system == "native" and (self._gather is not None or (later is not None and 2 in later.order))
        alternation = (
            self._accepts(["user", "user"]) is None and self._accepts(["user", "assistant", "assistant"]) is None
        )
        default = None
        if c.default_system is not None:
            default = "".join(p if isinstance(p, str) else "{date}" for p in c.default_system)
        losses: list[str] = []
        by_role: dict[str, set[str]] = {}
        dropped_beside_calls: set[str] = set()
        for shape in c.shapes.values():
            t = shape.content.transform
            if t == "drop" and shape.role == ASSISTANT:
                dropped_beside_calls.add(shape.role)
            elif t in _TRIMS and shape.role not in STRUCTURAL:
                by_role.setdefault(shape.role or "other roles'", set()).add(_TRIMS[t])
        for role, trims in sorted(by_role.items()):
            how = " or ".join(sorted(trims)) + (" (depending on the turn's position)" if len(trims) > 1 else "")
            losses.append(f"{role} content: {how}")
        if c.payloads.defs not in JSON_DEFS and any(shape.role == TOOL_DEF for shape in c.shapes.values()):
            losses.append(
                f"tool definitions: written as {c.payloads.defs}, which does not say which JSON schema it came "
                "from: each reads back as its text (in .tools), which renders back the same"
            )
        if c.payloads.beside_calls is not None:
            losses.append(
                f"{ASSISTANT} content beside tool calls: written as its {c.payloads.beside_calls} (it reads back as "
                "reasoning_content)"
            )
        else:
            for role in sorted(dropped_beside_calls):
                losses.append(f"{role} content beside tool calls: not written (it reads back empty)")
        if c.payloads.call_ids == "index":
            losses.append(
                "tool call ids: the template writes each call's running index instead (they read back as "
                "'0', '1'...), and a result's tool_call_id as the index of its call (empty for none)"
            )
        if c.merge_sep is not None:
            where = "last" if system == "merged-last-user" else "first"
            losses.append(
                f"a system message is written into the {where} user turn after {c.merge_sep!r}: "
                "it reads back as part of that user message"
            )
        if self._gather is not None:
            how, sep = self._gather
            sep_text = c.spec.terminals[sep] if sep else None
            which = "only the last one is written" if how == "last" else f"they are written joined by {sep_text!r}"
            losses.append(
                f"system messages are written first, wherever they are, and {which}: they read back as one "
                "system message at the start; an empty one writes nothing and does not read back"
            )
        if default is not None and header.get("default-system-if") == "not-first-or-empty":
            losses.append(
                "with no system message, or an empty one, the template writes a default one: it reads back as an "
                "empty system message"
            )
        elif default is not None:
            losses.append("with no system message the template writes a default one: it reads back as a system message")
        if self._planner.has_dropped:
            dropped = sorted(
                {
                    t.atom.role or "a"
                    for trs in c.dfa.transitions
                    for t in trs
                    if isinstance(t.atom, Msg) and t.atom.dropped
                }
            )
            for role in dropped:
                losses.append(
                    f"the template writes nothing for a {role} message in some positions: "
                    "it reads back empty where the reading needs it, else not at all"
                )
        if self._header.get("generation-elsewhere") == "nothing":
            losses.append(
                "where the template writes no generation prompt (see the grammar), asking for one writes "
                "nothing: it does not read back as an open assistant turn"
            )
        if c.has_gen and c.gen_text == "":
            losses.append("the generation prompt writes nothing: it does not read back as an open assistant turn")
        roles = self.roles
        return RolePolicy(
            system, anywhere, alternation, tuple(roles) if roles is not None else None, default, tuple(losses)
        )

    def _terminal(self, key: str) -> str | None:
        name = self._header.get(key)
        return self._c.spec.terminals[name] if name else None

    def __repr__(self) -> str:
        return f"<Format {self.name!r}>"

    @property
    def options(self) -> dict[str, Any]:
        """The template's switches (``enable_thinking``...) and their defaults; render and parse take them."""
        return {name: values[0] for name, values in self._header.get("options", {}).items()}

    @property
    def option_values(self) -> dict[str, list[Any]]:
        """Every value each option takes, the default first."""
        return {name: list(values) for name, values in self._header.get("options", {}).items()}

    # -- compiled state --------------------------------------------------------

    @property
    def _c(self) -> Compiled:
        return self._variant(None).compiled

    @property
    def _planner(self) -> Planner:
        return self._variant(None).planner

    @property
    def _scanner(self) -> Scanner:
        return self._variant(None).scanner

    @property
    def lark(self) -> LarkParser:
        """The format's Lark LALR parser (with the default options; built on first use)."""
        return self._variant(None).lark

    def _variant(self, options: dict[str, Any] | None) -> _Variant:
        """The format compiled for these option values (None: the defaults)."""
        default = self._default
        if options is None and default is not None:
            return default
        declared = self._header.get("options", {})
        values = {name: vals[0] for name, vals in declared.items()}
        for name, value in (options or {}).items():
            if name not in declared:
                known = ", ".join(declared) or "none"
                raise ChatGrammarError(f"{self.name} has no option {name!r} (its options: {known})")
            if value not in declared[name]:
                allowed = ", ".join(repr(v) for v in declared[name])
                raise ChatGrammarError(f"{self.name}: option {name!r} takes {allowed}, not {value!r}")
            values[name] = value
        key = tuple(values[name] for name in declared)
        variant = self._variants.get(key)
        if variant is None:
            with self._lock:
                variant = self._variants.get(key)
                if variant is None:
                    try:
                        if self._spec is None:
                            self._spec = load_grammar(self.grammar, origin=self.origin, import_paths=self._import_paths)
                        variant = _Variant(compile_spec(self._spec, values))
                    except GrammarError as e:
                        raise located(e, self.grammar) from None
                    self._variants[key] = variant
                    if key == tuple(vals[0] for vals in declared.values()):
                        self._default = variant
                        self._plans = variant.planner.cache
                        self._scan_text = variant.scanner.scan
                        self._no_variables = not variant.compiled.variables
                        self._has_dropped = variant.planner.has_dropped
                        self._structural = frozenset(
                            s.role for s in variant.compiled.shapes.values() if s.role in STRUCTURAL
                        )
        return variant

    def _all_variants(self) -> list[_Variant]:
        """Every option assignment, the defaults first."""
        declared = self._header.get("options", {})
        return [self._variant(dict(zip(declared, combo, strict=True))) for combo in product(*declared.values())]

    def _values(self, variant: _Variant, date: datetime.date | None) -> tuple[str, ...]:
        """The text of each variable (the date) for one render."""
        if not variant.compiled.variables:
            return ()
        _, fmt = self._header["date"]
        if date is not None:
            return (date.strftime(fmt),)
        default = self._header.get("date-default")
        return (default if default is not None else datetime.date.today().strftime(fmt),)

    # -- render ----------------------------------------------------------------

    def render(
        self,
        messages: Iterable[MessageLike],
        *,
        add_generation_prompt: bool = False,
        on_unsafe: Literal["raise", "allow"] = "raise",
        date: datetime.date | None = None,
        tools: Sequence[Any] | None = None,
        **options: Any,
    ) -> str:
        r"""The prompt text for ``messages``, exactly as the model's chat template writes it.

        A last message with ``complete=False`` is left open (a prefilled reply);
        ``add_generation_prompt=True`` opens the assistant's turn after the last message.
        Content holding the format's own delimiters raises UnsafeContentError unless
        ``on_unsafe="allow"``. ``date`` is the date a template prints (today, as the
        template does, when not given); ``options`` are the template's switches
        (see ``Format.options``). ``tools`` are the tool definitions (JSON schemas) and
        messages may carry ``reasoning_content`` and ``tool_calls``, as for Hugging Face's
        ``apply_chat_template``; a format that does not write them raises
        UnsupportedConversationError rather than drop them. Messages from ``parse`` bring
        the tools they were read with: ``render(parse(text)) == text``.

        >>> from chatgrammar import get_format
        >>> get_format("chatml").render([{"role": "user", "content": "Hi"}], add_generation_prompt=True)
        '<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n'
        """
        if tools is None and isinstance(messages, Parsed):
            tools = messages.tools
        msgs: list[Any] = messages if type(messages) is list else list(messages)
        gen = add_generation_prompt or self._always_gen
        # The common case in few steps: complete messages of a shape seen before, default
        # options. The plan's compiled code reads the contents itself, and declines anything unusual.
        if on_unsafe == "raise" and not options and date is None and self._fast_ok and tools is None:
            try:
                roles = tuple([m["role"] for m in msgs if len(m) == 2])
                models = False
            except (KeyError, TypeError):
                roles, models = _model_roles(msgs), True
            plan = self._plans.get((roles, False, gen))
            if plan is not None and len(roles) == len(msgs) and (not self._structural or _plain(roles)):
                values = () if self._no_variables else self._values(self._variant(None), None)
                try:
                    text = plan.fast_models(msgs, values) if models else plan.fast(msgs, values)
                except KeyError:
                    text = None
                if text is not None:
                    return text
        if self._option_flags:
            msgs, options = self._flagged(msgs, options)
        r = self._prepare(self._variant(options), msgs, gen, date, tools)
        if on_unsafe == "allow":
            return r.plan.build(r.roles, r.contents, r.values)
        if on_unsafe != "raise":
            raise ValueError(f"on_unsafe must be 'raise' or 'allow', not {on_unsafe!r}")
        try:
            return self._checked(r)
        except RenderError as e:
            raise r.pointed_back(e) from None

    def render_spans(
        self,
        messages: Iterable[MessageLike],
        *,
        add_generation_prompt: bool = False,
        on_unsafe: Literal["raise", "allow"] = "raise",
        date: datetime.date | None = None,
        tools: Sequence[Any] | None = None,
        **options: Any,
    ) -> tuple[str, list[Span | None]]:
        r"""Render, and say where each message stands in the text: ``(text, spans)``.

        ``spans[i]`` is the ``Span`` of ``messages[i]``: its whole turn and its content as
        written (trimmed or encoded as the template writes it), or None for a message the
        template writes nothing for. A system message written into a user turn has that
        turn as its turn and its own part of the content. Build an assistant-only loss mask
        from the assistant spans, for any format.

        >>> from chatgrammar import get_format
        >>> text, spans = get_format("chatml").render_spans(
        ...     [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}])
        >>> text[spans[1].content_start:spans[1].content_end], text[spans[1].start:spans[1].end]
        ('Hello!', '<|im_start|>assistant\nHello!<|im_end|>\n')
        """
        msgs: list[Any] = messages if type(messages) is list else list(messages)
        gen = add_generation_prompt or self._always_gen
        if self._option_flags:
            msgs, options = self._flagged(msgs, options)
        variant = self._variant(options)
        r = self._prepare(variant, msgs, gen, date, tools)
        if on_unsafe == "allow":
            text = r.plan.build(r.roles, r.contents, r.values)
        elif on_unsafe != "raise":
            raise ValueError(f"on_unsafe must be 'raise' or 'allow', not {on_unsafe!r}")
        else:
            try:
                text = self._checked(r)
            except RenderError as e:
                raise r.pointed_back(e) from None
        read = variant.reader.read(text, tolerant=False)
        if not read.ok:
            raise RenderError(
                f"the {self.name} text of these messages does not read back (content holding delimiters, "
                "rendered with on_unsafe='allow'), so it has no spans",
                format=self.name,
            )
        joiner = 0
        if self._gather is not None and self._gather[1] is not None:
            joiner = len(variant.compiled.spec.terminals[self._gather[1]])
        given = len(r.expanded) if r.expanded is not None else len(msgs)
        found = _spans_of(r, read.messages, read.spans, variant.compiled, given - r.replaced, joiner)
        if r.replaced:  # the empty system message stands where the template wrote its default
            found.insert(0, read.spans[0] if read.spans else None)
        if r.expanded is not None:
            found = _folded_spans(found, r.expanded, r.expanded_roles, len(msgs))
        return text, found

    def normalize(
        self,
        messages: Iterable[MessageLike],
        *,
        add_generation_prompt: bool = False,
        date: datetime.date | None = None,
        tools: Sequence[Any] | None = None,
        **options: Any,
    ) -> list[Message]:
        r"""The messages that ``parse(render(messages))`` gives back.

        This is where a format's losses show: content the template trims, a
        system message it merges into a user turn or writes by default, an empty
        open turn a format cannot mark, the generation prompt as an open
        assistant message.

        >>> from chatgrammar import get_format
        >>> get_format("llama2").normalize([{"role": "user", "content": " Hi\n"}])
        [Message(role='user', content='Hi', complete=True)]
        """
        gen = add_generation_prompt or self._always_gen
        msgs: list[Any] = messages if type(messages) is list else list(messages)
        if self._option_flags:
            msgs, options = self._flagged(msgs, options)
        return self._prepare(self._variant(options), msgs, gen, date, tools).expected()

    def _flagged(self, msgs: list[Any], options: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        """The messages and options as the template reads them when a first system message holds
        one of its flags (``option-flags``: SmolLM3's /think and /no_think): the first flag found
        sets its option, and every flag is taken out of the message."""
        if not msgs:
            return msgs, options
        first = msgs[0]
        if isinstance(first, Message):
            role, content = first.role, first.content
        elif isinstance(first, dict) and isinstance(first.get("content"), str):
            role, content = str(first.get("role")), str(first["content"])
        else:
            return msgs, options  # read_messages says what is wrong with it
        if role != "system":
            return msgs, options
        for option, value, flag in self._option_flags:
            if flag in content:
                options = {**options, option: value}
                break
        stripped = content
        for _, _, flag in self._option_flags:
            stripped = stripped.replace(flag, "")
        if stripped == content:
            return msgs, options
        changed = (
            first.model_copy(update={"content": stripped})
            if isinstance(first, Message)
            else {**first, "content": stripped}
        )
        return [changed, *msgs[1:]], options

    def _prepare(
        self,
        variant: _Variant,
        messages: Iterable[MessageLike],
        gen: bool,
        date: datetime.date | None,
        tools: Sequence[Any] | None = None,
    ) -> _Rendering:
        msgs = messages if isinstance(messages, list) else list(messages)
        if self._reasoning_field is not None:
            msgs = _reasoning_named(msgs, self._reasoning_field)
        if tools is None and not has_structure(msgs):
            roles, contents, open_last = read_messages(msgs)
            # A result written with the name of the call it answers is written with structure, below.
            if "tool" not in roles or TOOL_RESULT_NAME not in self._structural_roles():
                if self._structural_roles() and not _plain(roles):
                    i = next(k for k, role in enumerate(roles) if role in STRUCTURAL)
                    raise RenderError(
                        f"message {i} has role {roles[i]!r}, which chatgrammar keeps for the parts of a message; "
                        "write reasoning as 'reasoning_content' and calls as 'tool_calls' of an assistant message",
                        index=i,
                        format=self.name,
                    )
                return self._prepare_flat(variant, roles, contents, open_last, gen, date)
        ex = expand(msgs, tools, self._structural_roles(), variant.compiled.payloads, self.name)
        key = self._header.get("tools-key")
        if key and ex.defs and ex.roles[:1] != ["system"]:
            raise UnsupportedConversationError(
                f"{self.name}'s template reads the tool definitions (tools=...) from the {key!r} of a system message, "
                "where chatgrammar writes them, in the first message, and this conversation does not start with a "
                "system message: add one first (its content may be empty)",
                format=self.name,
            )
        first: RenderError | None = None
        for placed in ex.placements(self.name, self._header.get("tools-at", ["after-system"])):
            try:
                r = self._prepare_flat(variant, list(placed.roles), list(placed.contents), placed.open_last, gen, date)
            except UnsupportedConversationError as e:
                reason = self._header.get("calls-error")
                first = first or _too_many_calls(e, placed.origin, placed.roles, self.name, reason)
                first = first or _from_expanded(e, placed.origin, placed.roles)
                continue
            except RenderError as e:
                raise _from_expanded(e, placed.origin, placed.roles) from None
            r.expanded = placed.origin
            r.expanded_roles = placed.roles
            return r
        assert first is not None
        at = first.index
        merged = _calls_merged(msgs, at)
        if merged is not None and at is not None:  # an answer that only calls tools, right after another's calls
            try:
                self._prepare(variant, merged, gen, date, tools)
            except RenderError:
                pass
            else:
                raise UnsupportedConversationError(
                    f"message {at} only calls tools, right after the calls of message {at - 1}, and {self.name} "
                    "does not write one answer's calls right after another's (its grammar says why: they may "
                    f"read back as one answer). Give message {at - 1} all the calls, or put a message between.",
                    index=at,
                    format=self.name,
                )
        raise first

    def _structural_roles(self) -> frozenset[str]:
        self._variant(None)  # compiling the default variant fills it in
        return self._structural

    def _prepare_flat(
        self,
        variant: _Variant,
        roles: list[str],
        contents: list[str],
        open_last: bool,
        gen: bool,
        date: datetime.date | None,
    ) -> _Rendering:
        alias = self._header.get("role-alias")
        if alias:  # roles the template writes as another (normalize shows it)
            roles = [alias.get(r, r) for r in roles]
        origin: list[Any] | None = None
        if self._gather is not None and "system" in roles:
            roles, contents, open_last, origin = self._gathered(roles, contents, open_last)
        if open_last and gen:
            raise RenderError(
                "the last message is open (complete=False) and a generation prompt was asked "
                "for (add_generation_prompt=True, or a format that always writes one); use one or the other",
                index=len(roles) - 1,
                format=self.name,
            )
        try:
            r = self._plan(variant, roles, contents, open_last, gen, self._values(variant, date))
        except RenderError as e:
            if origin is None:
                raise
            raise _pointed_back(e, origin) from None
        r.origin = origin
        return r

    def _gathered(
        self, roles: list[str], contents: list[str], open_last: bool
    ) -> tuple[list[str], list[str], bool, list[Any]]:
        """The system messages moved first, as the template writes them (``system-gather``).

        The last one, or all of them joined; an empty result is no system message (the
        template writes nothing for it), and the moved message is complete. The last item
        says where each message came from: an index, or for the system message the
        (index, offset) of each part.
        """
        assert self._gather is not None
        how, sep = self._gather
        systems = [(i, c) for i, (r, c) in enumerate(zip(roles, contents, strict=True)) if r == "system"]
        parts: list[tuple[int, int]] = []
        if how == "last":
            content = systems[-1][1]
            parts.append((systems[-1][0], 0))
        else:
            assert sep is not None
            joiner = self._c.spec.terminals[sep]
            content = joiner.join(c for _, c in systems)
            at = 0
            for i, c in systems:
                parts.append((i, at))
                at += len(c) + len(joiner)
        if roles[-1] == "system":
            open_last = False
        rest = [(i, r, c) for i, (r, c) in enumerate(zip(roles, contents, strict=True)) if r != "system"]
        origin: list[Any] = [i for i, _, _ in rest]
        if content:
            rest.insert(0, (-1, "system", content))
            origin.insert(0, parts)
        return [r for _, r, _ in rest], [c for _, _, c in rest], open_last, origin

    def _plan(
        self,
        variant: _Variant,
        roles: list[str],
        contents: list[str],
        open_last: bool,
        gen: bool,
        values: tuple[str, ...],
        default: bool = False,
    ) -> _Rendering:
        c = variant.compiled
        if open_last and not contents[-1]:
            # An open turn with no content is the generation prompt.
            if roles[-1] != ASSISTANT:
                raise RenderError(
                    f"message {len(roles) - 1} is an open {roles[-1]!r} turn with no content; "
                    "only the assistant's turn can be opened empty (as the generation prompt)",
                    index=len(roles) - 1,
                    format=self.name,
                )
            del roles[-1], contents[-1]
            open_last, gen = False, True
        if gen and not c.has_gen:
            raise UnsupportedConversationError(
                f"{self.name} has no generation prompt", index=len(roles) - 1 if roles else None, format=self.name
            )
        try:
            plan = variant.planner.plan(roles, open_last, gen, default)
        except UnsupportedConversationError:
            if not gen or self._header.get("generation-elsewhere") != "nothing":
                raise
            try:  # the template writes no generation prompt here: write none, if the rest can be
                plan = variant.planner.plan(roles, open_last, False, default)
            except UnsupportedConversationError:
                pass
            else:
                gen = False
            if gen:
                raise
        for i, slot in zip(plan.contents, plan.slots, strict=True):
            if slot.transform == "empty" and contents[i]:
                raise _content_refused(self.name, roles, i)
        given = list(contents)
        for i, fn in plan.transforms:
            contents[i] = fn(contents[i])
        if open_last and not contents[-1]:  # only whitespace, which the template trims away
            return self._plan(variant, roles, contents, True, False, values, default)
        if not self._fast_ok and roles and roles[0] == "system" and plan.order[0] == 0 and not contents[0]:
            # The template writes its default for an empty system message, as for none.
            try:
                r = self._plan(variant, roles[1:], given[1:], open_last, gen, values, default=True)
            except RenderError as e:  # about the messages after the system message
                raise _pointed_back(e, list(range(1, len(roles) + 1))) from None
            r.replaced = True
            return r
        n = len(roles)
        if gen:  # what a generation prompt written from a message rule is written for
            roles.append(ASSISTANT)
            contents.append("")
        r = _Rendering(variant, plan, roles, contents, n, open_last, gen and c.gen_text != "", given, values)
        if plan.open_bare:  # an open turn written as its bare content: it must read back as itself
            text = plan.build(roles, contents, values)
            read = variant.scanner.scan(text)
            if read is None or _with_dropped(variant, read) != r.expected_flat():
                raise UnsupportedConversationError(
                    f"{self.name} writes message {n - 1}, an open {roles[n - 1]!r} turn, as its bare content "
                    "with nothing to mark it as a turn, and here it would read back as something else; "
                    "leave it complete (complete=True)",
                    index=n - 1,
                    format=self.name,
                )
        return r

    def _checked(self, r: _Rendering) -> str:
        plan, contents = r.plan, r.contents
        guards = r.variant.compiled.guards
        suspect = False
        c = r.variant.compiled
        for k, (i, s) in enumerate(zip(plan.contents, plan.slots, strict=True)):
            guard = guards[id(s)]
            if guard.passes(contents[i]) or guard.passes_exactly(contents[i]):
                continue
            # A system message written into the user turn after it reads back as part of that
            # turn: what its own slot refuses (the separator) does not matter, only that the
            # two together are a plain user turn's content.
            if r.roles[i] == "system" and k + 1 < len(plan.contents):
                if _merged_system(c, contents[i], contents[plan.contents[k + 1]]) is not None:
                    continue
            suspect = True
            break
        if r.open_last and plan.open_check is not None and not plan.open_check(contents[r.n - 1]):
            suspect = True
        for i, slot in zip(plan.contents, plan.slots, strict=True):
            if id(slot) in c.trimmed_before_calls and r.given[i] and not contents[i]:
                raise UnsafeContentError(
                    f"message {i} ({r.roles[i]!r}) holds only what {self.name} trims, before tool calls: the "
                    "template still writes a newline for it, which reads back as no content. Give it text, "
                    "leave it empty, or pass on_unsafe='allow' to render it anyway.",
                    index=i,
                    offset=0,
                    delimiter="",
                    format=self.name,
                )
        if c.struct_marks and not suspect:  # content that could spell a tool call, a result...
            suspect = any(m in contents[i] for i in plan.contents for m in c.struct_marks)
        if c.lead_checks and not suspect:  # content that could begin with a tool definition
            suspect = any(
                check(contents[i])
                for i, slot in zip(plan.contents, plan.slots, strict=True)
                for check, _ in c.lead_checks.get(id(slot), ())
            )
        text = plan.build(r.roles, contents, r.values)
        if suspect:
            read = r.variant.scanner.scan(text)
            if read is None or _with_dropped(r.variant, read) != r.expected_flat():
                raise self._unsafe(r)
        return text

    def _unsafe(self, r: _Rendering) -> UnsafeContentError:
        c = r.variant.compiled
        rules = c.rules
        # The format's own tokens and markers first, in any message; then what only breaks
        # the structure where it stands (a separator the text around it makes ambiguous).
        delimiters = set(c.tokens) | {"\n" + m for m in c.markers} | set(c.markers)
        candidates = [
            (i, slot, [d for d in rules[id(slot)].anywhere if d in delimiters], rules[id(slot)].at_start)
            for i, slot in zip(r.plan.contents, r.plan.slots, strict=True)
        ] + [(i, slot, rules[id(slot)].anywhere, []) for i, slot in zip(r.plan.contents, r.plan.slots, strict=True)]
        for i, slot, anywhere, at_start in candidates:
            encoded = slot.transform in READERS  # written as JSON: delimiters stand as they are in it
            found = _find_delimiter(r.given[i] if encoded else r.contents[i], anywhere, at_start)
            if found:
                delim, offset = found
                if not encoded and r.contents[i]:
                    offset += r.given[i].find(r.contents[i])  # back to the caller's text, before trimming
                return UnsafeContentError(
                    f"message {i} ({r.roles[i]!r}) contains {delim!r} at offset {offset}, which is a "
                    f"delimiter of {self.name}: the model would read a different conversation. "
                    "Remove or escape it, or pass on_unsafe='allow' to render it anyway.",
                    index=i,
                    offset=offset,
                    delimiter=delim,
                    format=self.name,
                )
        for i, slot in zip(r.plan.contents, r.plan.slots, strict=True):
            if c.guards[id(slot)].required and not r.contents[i]:
                return UnsafeContentError(
                    f"message {i} ({r.roles[i]!r}) is empty where {self.name} needs content: its template "
                    "writes an empty one differently, so the prompt would not read back as the same "
                    "conversation. Give it content, or pass on_unsafe='allow' to render it anyway.",
                    index=i,
                    offset=0,
                    delimiter="",
                    format=self.name,
                )
        for i, slot in zip(r.plan.contents, r.plan.slots, strict=True):
            what = next((w for check, w in c.lead_checks.get(id(slot), ()) if check(r.contents[i])), None)
            if what is not None:
                return UnsafeContentError(
                    f"message {i} ({r.roles[i]!r}) begins with text that {self.name} would read as {what}: "
                    "the model would read a different conversation. Change its start, or pass "
                    "on_unsafe='allow' to render it anyway.",
                    index=i,
                    offset=0,
                    delimiter="",
                    format=self.name,
                )
        i = r.plan.contents[-1]
        return UnsafeContentError(
            f"message {i} ({r.roles[i]!r}) ends with text that joins with what {self.name} writes "
            "after it, so the prompt would not read back as the same conversation. Change the end "
            "of the message, or pass on_unsafe='allow' to render it anyway.",
            index=i,
            offset=len(r.given[i]),
            delimiter="",
            format=self.name,
        )

    # -- parse -----------------------------------------------------------------

    @overload
    def parse(
        self, text: str, *, strict: Literal[True] = ..., spans: Literal[False] = ..., **options: Any
    ) -> list[Message]: ...

    @overload
    def parse(self, text: str, *, strict: bool = ..., spans: bool = ..., **options: Any) -> Parsed: ...

    def parse(self, text: str, *, strict: bool = True, spans: bool = False, **options: Any) -> list[Message]:
        r"""Read a prompt or transcript back into messages.

        A text that ends inside a turn (a generation prompt, a prefilled reply)
        gives that turn last, with ``complete=False``. Text that is not a
        document of the format raises ParseError with the line, column and what
        was expected. A text written with other values of the template's options
        (``enable_thinking=False``...) is read too; ``options_in`` tells which.

        ``strict=False`` never raises for the text: truncated text (cut inside a
        delimiter, missing its end token or final newline) gives its last turn open,
        and what cannot be read is reported in ``.diagnostics`` of the returned
        ``Parsed`` list. ``spans=True`` gives each message's ``Span`` in ``.spans``.

        >>> from chatgrammar import get_format
        >>> get_format("chatml").parse("<|im_start|>user\nHi<|im_end|>\n")
        [Message(role='user', content='Hi', complete=True)]
        >>> r = get_format("chatml").parse("<|im_start|>user\nHi<|im_e", strict=False)
        >>> r, [d.code for d in r.diagnostics]
        ([Message(role='user', content='Hi', complete=False)], ['truncated'])
        """
        got = self._parse_flat(text, strict, spans, options)
        if not self._structural or _plain(m.role for m in got):
            return got
        return self._folded(text, got, strict, spans, options)

    def _folded(self, text: str, got: list[Message], strict: bool, spans: bool, options: dict[str, Any]) -> Parsed:
        """A reading with its reasoning, tool calls and tool definitions folded into messages."""
        positioned = got if isinstance(got, Parsed) and got.spans is not None else None
        payloads = self._c.payloads
        diagnostics = list(got.diagnostics) if isinstance(got, Parsed) else []
        if payloads.call_ids == "index":
            wrong = index_problems([m.role for m in got], [m.content for m in got])
            if wrong and positioned is None:  # said where they stand: read again with positions
                again = self._parse_flat(text, strict, True, options)
                assert isinstance(again, Parsed)
                positioned = got = again
            for k, what in wrong:
                assert positioned is not None and positioned.spans is not None
                at = positioned.spans[k]
                if strict:
                    raise ParseError(
                        f"{what} ({self.name} writes the running index of each tool call as its id)",
                        text=text,
                        pos=at.content_start,
                        format=self.name,
                    )
                diagnostics.append(
                    Diagnostic.at(
                        text,
                        "call-index",
                        what,
                        f"{self.name} writes each tool call's running index as its id, and a result's as the index "
                        "of its call: this text renders back with those numbers",
                        at.content_start,
                        at.content_end,
                    )
                )
        folded = collapse(got, payloads, positioned.spans if positioned is not None else None, text)
        if positioned is None and folded.problems:
            # Payloads that are not JSON as the template writes it are reported where they stand:
            # read again with positions.
            again = self._parse_flat(text, strict, True, options)
            assert isinstance(again, Parsed) and again.spans is not None
            folded = collapse(again, payloads, again.spans, text)
            folded.spans = None
        if strict:  # a tool result named after another call than the one it answers: never written
            for d in folded.diagnostics:
                if d.code == MISNAMED:
                    raise ParseError(d.message, text=text, pos=d.pos, format=self.name)
        diagnostics += folded.diagnostics
        return Parsed(folded.messages, folded.spans if spans else None, diagnostics, folded.tools)

    def _parse_flat(self, text: str, strict: bool, spans: bool, options: dict[str, Any]) -> list[Message]:
        if not strict or spans:
            return self._parse_positioned(text, strict, spans, options)
        if not options:
            got = self._scan_text(text)
            if got is not None:
                return got if not self._has_dropped else _with_dropped(self._variant(None), got)
            if not isinstance(text, str):
                raise TypeError(f"parse() takes a str, not {type(text).__name__}")
            for variant in self._all_variants()[1:]:
                got = variant.scanner.scan(text)
                if got is not None:
                    return _with_dropped(variant, got)
            return self._lark_parse(self._all_variants(), text)
        variants = self._given(options)
        for variant in variants:
            got = variant.scanner.scan(text)
            if got is not None:
                return _with_dropped(variant, got)
        return self._lark_parse(variants, text)

    def _lark_parse(self, variants: list[_Variant], text: str) -> list[Message]:
        """The Lark parser's reading of a text the scanners did not read, or its ParseError; a
        missing BOS is said as such when adding it makes the text read."""
        try:
            return _with_dropped(variants[0], variants[0].lark.parse(text))
        except ParseError:
            bos = self.bos
            if bos and not text.startswith(bos) and any(v.reader.read(bos + text, tolerant=False).ok for v in variants):
                raise ParseError(
                    f"the text does not start with the BOS token {bos!r} that {self.name} writes first "
                    "(add it, or read with strict=False, which reads the text without it)",
                    text=text,
                    pos=0,
                    expected=[json.dumps(bos, ensure_ascii=False)],
                    format=self.name,
                ) from None
            raise

    def _given(self, options: dict[str, Any]) -> list[_Variant]:
        """The variants a text written with these options may be in: theirs, then those a flag in
        the system message switches to (SmolLM3's /think sets enable_thinking whatever was passed;
        the flag is not written, so the text does not say)."""
        variants = [self._variant(options)]
        for option, value, _flag in self._option_flags:
            if option in options and options[option] != value:
                flagged = self._variant({**options, option: value})
                if flagged not in variants:
                    variants.append(flagged)
        return variants

    def _parse_positioned(self, text: str, strict: bool, spans: bool, options: dict[str, Any]) -> Parsed:
        if not isinstance(text, str):
            raise TypeError(f"parse() takes a str, not {type(text).__name__}")
        variants = self._given(options) if options else self._all_variants()
        for variant in variants:
            r = variant.reader.read(text, tolerant=False)
            if r.ok:
                if not strict:  # an open last turn may still end with part of its closing delimiter
                    r = variant.reader.read(text, tolerant=True)
                msgs, sp = (
                    _with_dropped_spans(variant, r.messages, r.spans) if not r.diagnostics else (r.messages, r.spans)
                )
                return Parsed(msgs, sp if spans else None, r.diagnostics)
        if strict:
            self._lark_parse(variants, text)  # raises the positioned error
            raise AssertionError("the scanner and the Lark parser disagree")  # pragma: no cover
        # The reading of the variant (the option values) that finds the fewest problems.
        readings = [(v, v.reader.read(text, tolerant=True)) for v in variants]
        variant, r = min(
            readings,
            key=lambda vr: (sum(d.code != "truncated" for d in vr[1].diagnostics), len(vr[1].diagnostics)),
        )
        # Messages a template writes nothing for are put back only into a whole reading.
        msgs, sp = _with_dropped_spans(variant, r.messages, r.spans) if r.ok else (r.messages, r.spans)
        return Parsed(msgs, sp if spans else None, r.diagnostics)

    def parse_completion(
        self,
        completion: str,
        *,
        prompt: str | Iterable[MessageLike] | None = None,
        stopped: bool = False,
        **options: Any,
    ) -> Completion:
        r"""Read what a model wrote after a prompt: the turn(s) it produced, up to its stop string.

        ``prompt`` is the prompt the model continued, as text or as messages (rendered
        with the generation prompt unless the last message is open); without it, the
        completion is read as the answer to a one-message user prompt. The completion is
        cut at the first of the format's stop strings (``Format.stop``): what follows it is
        returned in ``rest``, never dropped, and the last message is complete. Without a
        stop string the text ran out (max_tokens): the last message is ``complete=False``.
        Text that is not the format is reported in ``diagnostics``; nothing raises.

        ``stopped=True`` says the model did stop (a server's ``finish_reason == "stop"``) but
        the server left the stop string out of the text, as most do: the completion is read
        as if it ended with the format's first stop string (``Format.stop[0]``, which is then
        ``.stop``), so its last message is complete.

        >>> from chatgrammar import get_format
        >>> c = get_format("chatml").parse_completion("Hello!<|im_end|>\n<|im_start|>user")
        >>> c.message, c.stop, c.rest
        (Message(role='assistant', content='Hello!', complete=True), '<|im_end|>', '\n<|im_start|>user')
        >>> get_format("chatml").parse_completion("Hello!", stopped=True).message
        Message(role='assistant', content='Hello!', complete=True)
        """
        if not isinstance(completion, str):
            raise TypeError(f"parse_completion() takes a str, not {type(completion).__name__}")
        if stopped and self.stop and not any(s in completion for s in self.stop):
            completion += self.stop[0]
        if prompt is None:
            prompt_text = self._default_prompt(options)
        elif isinstance(prompt, str):
            prompt_text = prompt
        else:
            msgs = list(prompt)
            _, _, open_last = read_messages(msgs)
            prompt_text = self.render(msgs, add_generation_prompt=not open_last, **options)
        before = self._parse_flat(prompt_text, True, True, options)
        assert isinstance(before, Parsed)
        # The completion's turns: those that reach past the prompt, and the prompt's open turn
        # (the generation prompt), which the completion continues. Read as the format's turns
        # first (reasoning and each call a turn of its own), then folded into messages.
        opened = before.spans[-1].start if before and before.spans and not before[-1].complete else None
        cut, stop = len(completion), None
        for s in self.stop:
            k = completion.find(s)
            if k != -1 and (k < cut or (k == cut and stop is not None and len(s) > len(stop))):
                cut, stop = k, s
        body = completion[:cut]
        rest = completion[cut + len(stop) :] if stop is not None else ""
        whole = prompt_text + body
        read = self._parse_flat(whole, False, True, options)
        assert isinstance(read, Parsed) and read.spans is not None
        shift = len(prompt_text)
        firsts = [
            k
            for k, sp in enumerate(read.spans)
            if sp.end > shift or (opened is not None and sp.start >= opened and sp.end > sp.start)
        ]
        n0 = firsts[0] if firsts else len(read)
        messages = list(read[n0:])
        spans = read.spans[n0:]
        if stop is not None and messages and not messages[-1].complete:
            messages[-1] = messages[-1].model_copy(update={"complete": True})  # the stop string ended it
        # (diagnostic, whether its index counts among the completion's messages already)
        found = [(d, False) for d in read.diagnostics]
        if self._structural and not _plain(m.role for m in messages):
            # Model output need not write JSON as the template does: only JSON errors are reported.
            folded = collapse(messages, self._c.payloads, spans, whole, canonical=False)
            messages = folded.messages
            found += [(d, True) for d in folded.diagnostics]
        diagnostics: list[Diagnostic] = []
        for d, counted in found:
            if stop is not None and d.code == "truncated" and d.end >= shift + len(body):
                continue  # the stop string ended the turn: what would have closed it is not missing
            pos, end = max(d.pos - shift, 0), max(d.end - shift, 0)
            index = d.index if counted else d.index - n0 if d.index is not None and d.index >= n0 else None
            diagnostics.append(Diagnostic.at(completion, d.code, d.message, d.hint, pos, end, index))
        if not messages:  # the turn the prompt opened, with nothing in it
            messages = [make_message(ASSISTANT, "", False)]
        tags = self._header.get("completion-reasoning")
        if tags is not None and messages[-1].role == ASSISTANT:
            messages[-1] = _thinking_split(messages[-1], *(self._c.spec.terminals[t] for t in tags))
        if stop is not None and not messages[-1].complete:
            messages[-1] = messages[-1].model_copy(update={"complete": True})
        return Completion(messages, stop, rest, diagnostics)

    def _default_prompt(self, options: dict[str, Any]) -> str:
        """The prompt a completion is read after when none is given: one user message, then the prompt."""
        for conversation in (
            [{"role": "user", "content": "x"}],
            [{"role": "system", "content": "x"}, {"role": "user", "content": "x"}],
        ):
            try:
                return self.render(conversation, add_generation_prompt=True, **options)
            except RenderError:
                continue
        raise ChatGrammarError(f"{self.name}: pass the prompt the completion continues (prompt=...)")

    def options_in(self, text: str) -> dict[str, Any]:
        """The render options ``text`` was written with: the template's switches, and the date.

        ``render(parse(text), **options_in(text)) == text`` for every text that parses.
        """
        for variant in self._all_variants():
            found: dict[str, str] = {}
            if variant.scanner.scan(text, found) is not None:
                out: dict[str, Any] = dict(variant.compiled.options)
                if found:
                    terminal, fmt = self._header["date"]
                    written = found[terminal]
                    if written != self._header.get("date-default"):
                        out["date"] = datetime.datetime.strptime(written, fmt).date()
                return out
        self.lark.parse(text)  # raises the positioned error
        raise AssertionError("unreachable")  # pragma: no cover

    def _compile_and_scan(self, text: str) -> list[Message] | None:
        self._variant(None)  # compiling replaces self._scan_text with the scanner's method
        return self._scan_text(text)


class _Variant:
    """A format compiled for one assignment of its options."""

    def __init__(self, compiled: Compiled) -> None:
        self.compiled = compiled
        self.planner = Planner(compiled)
        self.scanner = Scanner(compiled)
        self._lark: LarkParser | None = None
        self._reader: Reader | None = None
        self._lock = threading.Lock()

    @property
    def reader(self) -> Reader:
        if self._reader is None:
            with self._lock:
                if self._reader is None:
                    self._reader = Reader(self.compiled, self.scanner)
        return self._reader

    @property
    def lark(self) -> LarkParser:
        if self._lark is None:
            with self._lock:
                if self._lark is None:
                    self._lark = LarkParser(self.compiled)
        return self._lark


class _Rendering:
    """A conversation ready to write: its plan, roles and (trimmed) contents."""

    __slots__ = (
        "variant",
        "plan",
        "roles",
        "contents",
        "n",
        "open_last",
        "gen_marker",
        "given",
        "values",
        "origin",
        "expanded",
        "expanded_roles",
        "replaced",
    )

    def __init__(
        self,
        variant: _Variant,
        plan: Plan,
        roles: list[str],
        contents: list[str],
        n: int,
        open_last: bool,
        gen_marker: bool,
        given: list[str],
        values: tuple[str, ...],
    ) -> None:
        self.variant = variant
        self.plan = plan
        self.roles = roles
        self.contents = contents
        self.n = n  # the caller's messages (a generation prompt adds an entry after them)
        self.open_last = open_last
        self.gen_marker = gen_marker  # parsing the text ends with the open assistant turn
        self.given = given  # the contents as the caller gave them, before trimming
        self.values = values  # the variables' texts (the date)
        self.origin: list[Any] | None = None  # where each message came from, when system-gather moved them
        # The caller's message of each turn, when reasoning, tool calls or tools were expanded into turns.
        self.expanded: list[int] | None = None
        self.expanded_roles: list[str] = []
        self.replaced = False  # an empty first system message the template writes its default for

    def pointed_back(self, e: RenderError) -> RenderError:
        """``e`` about the messages as the caller gave them."""
        if self.replaced:  # written without the caller's empty system message: one more before
            e = _pointed_back(e, list(range(1, self.n + 2)))
        if self.origin is not None:
            e = _pointed_back(e, self.origin)
        if self.expanded is not None:
            e = _from_expanded(e, self.expanded, self.expanded_roles)
        return e

    def expected(self) -> list[Message]:
        """What parsing the written text must give back, in the order the text holds it."""
        out = self.expected_flat()
        if self.expanded is None and not self.variant.compiled.structural:
            return out
        folded = collapse(out, self.variant.compiled.payloads)
        return Parsed(folded.messages, tools=folded.tools)

    def expected_flat(self) -> list[Message]:
        """``expected``, with reasoning, calls and tool definitions as the turns they are written as."""
        c = self.variant.compiled
        out: list[Message] = []
        # A turn with nothing after its content reads the same open or complete: as complete.
        open_marked = self.open_last and self.plan.open_marked
        for i in self.plan.order:
            if i == -1:
                text = "".join(
                    p if isinstance(p, str) else self.values[c.variables.index(p[1].terminal)]
                    for p in c.default_system or []
                )
                # Where the template writes its default for an empty system message too, its
                # grammar reads the default back as that: an empty system message.
                empty = c.spec.header.get("default-system-if") == "not-first-or-empty"
                out.append(make_message("system", "" if empty else text, True))
                continue
            role = self.plan.role_forms.get(i, _same)(self.roles[i])
            content = self.plan.readers[i](self.contents[i]) if i in self.plan.readers else self.contents[i]
            out.append(make_message(role, content, not (open_marked and i == self.n - 1)))
        if c.merge_sep is not None:
            _merge_first_system(out, c)
        if self.gen_marker:
            out.append(make_message(ASSISTANT, "", False))
        return _with_dropped(self.variant, out)


def _spans_of(
    r: _Rendering, parsed: list[Message], spans: list[Span], c: Compiled, given_count: int, joiner: int = 0
) -> list[Span | None]:
    """The span of each message of a rendering, from the reading of its text (in text order).

    ``joiner`` is the length of the text joining gathered system messages (``system-gather``).
    """
    found: list[Span | None] = [None] * r.n
    order = list(r.plan.order)
    p = k = 0
    while k < len(order) and p < len(parsed):
        i = order[k]
        if i == -1 or i >= r.n:  # the default system message, the generation prompt
            p += 1
            k += 1
            continue
        sp = spans[p]
        if c.merge_sep is not None and r.roles[i] == "system" and parsed[p].role == "user" and k + 1 < len(order):
            j = order[k + 1]  # the user turn the system message is written into
            cut = sp.content_start + len(r.contents[i])
            found[i] = Span(sp.start, sp.end, sp.content_start, cut)
            if j < r.n:
                found[j] = Span(sp.start, sp.end, cut + len(c.merge_sep), sp.content_end)
            p += 1
            k += 2
            continue
        found[i] = sp
        p += 1
        k += 1
    if r.origin is None:
        return found
    given: list[Span | None] = [None] * given_count
    for idx, o in enumerate(r.origin):
        at = found[idx] if idx < len(found) else None
        if isinstance(o, int):
            given[o] = at
            continue
        if at is None:
            continue
        sp = at
        joined, written = r.given[idx], r.contents[idx]
        lead = joined.find(written) if written else 0
        for n, (ci, offset) in enumerate(o):
            stop = o[n + 1][1] - joiner if n + 1 < len(o) else len(joined)
            start = min(max(sp.content_start + offset - lead, sp.content_start), sp.content_end)
            end = min(max(sp.content_start + stop - lead, start), sp.content_end)
            given[ci] = Span(sp.start, sp.end, start, end)
    return given


def _pointed_back(e: RenderError, origin: list[Any]) -> RenderError:
    """``e`` about the messages as given, not as gathered (``system-gather``)."""

    def where(index: int, offset: int = 0) -> tuple[int, int]:
        if not 0 <= index < len(origin):
            return index, offset
        o = origin[index]
        if isinstance(o, int):
            return o, offset
        i, start = next(((i, start) for i, start in reversed(o) if start <= offset), o[0])
        return i, offset - start

    offset = e.offset if isinstance(e, UnsafeContentError) else 0
    index, offset = where(e.index, offset) if e.index is not None else (None, offset)

    def back(m: re.Match[str]) -> str:
        i = int(m[1])
        return f"message {index if i == e.index else where(i)[0]}"

    text = re.sub(r"\bmessage (\d+)", back, str(e))
    if isinstance(e, UnsafeContentError):
        assert index is not None
        text = text.replace(f"at offset {e.offset}", f"at offset {offset}", 1)
        return UnsafeContentError(text, index=index, offset=offset, delimiter=e.delimiter, format=e.format)
    return type(e)(text, index=index, format=e.format)


def _with_dropped(variant: _Variant, messages: list[Message]) -> list[Message]:
    """Put back, empty, the dropped messages a reading needs (see Planner.dropped_back)."""
    planner = variant.planner
    if not planner.has_dropped:
        return messages
    gen = bool(messages) and not messages[-1].complete and not messages[-1].content
    body = messages[:-1] if gen else messages
    open_last = bool(body) and not body[-1].complete
    back = planner.dropped_back(tuple(m.role for m in body), open_last, gen)
    if not back:
        return messages
    out = list(messages)
    for position, role in reversed(back):
        out.insert(position, make_message(role, "", True))
    return out


def _with_dropped_spans(
    variant: _Variant, messages: list[Message], spans: list[Span]
) -> tuple[list[Message], list[Span]]:
    """``_with_dropped``, keeping a span for each message: the put-back ones are empty, where they stand."""
    full = _with_dropped(variant, messages)
    if len(full) == len(messages):
        return full, spans
    out: list[Span] = []
    k = 0
    for m in full:
        if k < len(messages) and m is messages[k]:
            out.append(spans[k])
            k += 1
        else:
            at = out[-1].end if out else (spans[k].start if k < len(spans) else 0)
            out.append(Span(at, at, at, at))
    return full, out


_STRUCTURAL = frozenset(STRUCTURAL)


def _plain(roles: Iterable[str]) -> bool:
    """No structural role among ``roles`` (those are written from reasoning_content, tool_calls, tools)."""
    return _STRUCTURAL.isdisjoint(roles)


def _from_expanded(e: RenderError, origin: list[int], roles: list[str]) -> RenderError:
    """``e`` about the caller's messages, not the turns their reasoning, calls and tools were expanded into."""

    def back(m: re.Match[str]) -> str:
        i = int(m[1])
        if not 0 <= i < len(origin):
            return m[0]
        if origin[i] == -1:
            return f"tool definition {sum(1 for o in origin[:i] if o == -1)}"
        part = _PARTS.get(roles[i])
        if part is None:
            return f"message {origin[i]}{m[2] or ''}"
        k = sum(1 for j in range(i) if origin[j] == origin[i] and roles[j] == roles[i])
        return f"message {origin[i]} ({part.format(k)})"

    text = re.sub(r"\bmessage (\d+)( \('[^']*'\))?", back, str(e))
    index = e.index
    if index is not None and 0 <= index < len(origin):
        index = origin[index] if origin[index] != -1 else None
    if isinstance(e, UnsafeContentError):
        return UnsafeContentError(text, index=index, offset=e.offset, delimiter=e.delimiter, format=e.format)
    return type(e)(text, index=index, format=e.format)


def _calls_merged(msgs: list[Any], i: int | None) -> list[Any] | None:
    """The messages with answer ``i``'s calls given to answer ``i - 1``, when both only call tools
    (``i`` with no content); None otherwise."""
    if i is None or not 0 < i < len(msgs):
        return None
    a, b = (m.to_dict() if isinstance(m, Message) else m for m in msgs[i - 1 : i + 1])
    if not (isinstance(a, Mapping) and isinstance(b, Mapping)):
        return None
    if a.get("role") != ASSISTANT or b.get("role") != ASSISTANT or b.get("content"):
        return None
    if not (isinstance(a.get("tool_calls"), list) and isinstance(b.get("tool_calls"), list) and b["tool_calls"]):
        return None
    return [*msgs[: i - 1], {**a, "tool_calls": [*a["tool_calls"], *b["tool_calls"]]}, *msgs[i + 1 :]]


def _content_refused(name: str, roles: list[str], i: int) -> UnsupportedConversationError:
    """A message with content where the template writes its shape only without any (``_empty{X}``)."""
    calls = i + 1 < len(roles) and roles[i + 1] in CALL_PARTS
    what = (
        f"content beside its tool calls, and {name} writes an answer's calls"
        if calls
        else f"content, and {name} writes this turn"
    )
    return UnsupportedConversationError(
        f"message {i} ({roles[i]!r}) has {what} only when it has no content: its template writes a message with "
        "content differently (the grammar's comments say how), and it would not read back as this message. "
        "Leave the content empty, or send it as a message of its own.",
        index=i,
        format=name,
    )


def _too_many_calls(
    e: UnsupportedConversationError, origin: list[int], roles: list[str], name: str, reason: str | None
) -> UnsupportedConversationError | None:
    """``e`` said plainly when it refuses a tool call after the first ones of an answer."""
    i = e.index
    if i is None or not 0 <= i < len(roles) or roles[i] != TOOL_CALL:
        return None
    owner = origin[i]
    calls = [j for j, (o, r) in enumerate(zip(origin, roles, strict=True)) if o == owner and r == TOOL_CALL]
    written = calls.index(i)
    if not written:
        return None
    text = (
        f"{name} writes at most {written} tool call{'s' * (written > 1)} in an answer; message {owner} has {len(calls)}"
    )
    return UnsupportedConversationError(f"{reason} ({text})" if reason else text, index=owner, format=name)


# How an error names the part of a message a structural turn holds.
_PARTS = {
    "reasoning": "its reasoning_content",
    "tool_call": "the name of its tool call {}",
    "tool_args": "the arguments of its tool call {}",
    "tool_call_id": "the id of its tool call {}",
    "tool_result_id": "its tool_call_id",
    "tool_result_name": "its name",
}


def _folded_spans(found: list[Span | None], origin: list[int], roles: list[str], n: int) -> list[Span | None]:
    """One span per caller's message: the turns its reasoning and calls were written as, joined.

    Its content span is that of its own turn (the answer), when it has one.
    """
    out: list[Span | None] = [None] * n
    for k, sp in enumerate(found):
        i = origin[k] if k < len(origin) else -1
        if sp is None or i < 0:
            continue
        o = out[i]
        if o is None:
            out[i] = sp
            continue
        own = sp if roles[k] not in _STRUCTURAL else o
        out[i] = Span(min(o.start, sp.start), max(o.end, sp.end), own.content_start, own.content_end)
    return out


def _thinking_split(m: Message, opening: str, closing: str) -> Message:
    """An answer that starts with a thinking block, with the block as its reasoning_content
    (all of the rest when the text stops before the block closes)."""
    if not m.content.startswith(opening) or m.reasoning_content is not None:
        return m
    thought, closed, answer = m.content[len(opening) :].partition(closing)
    return m.model_copy(update={"content": answer if closed else "", "reasoning_content": thought})


def _reasoning_named(msgs: list[Any], key: str) -> list[Any]:
    """The messages with the template's own name of the thinking (``reasoning-field``: gpt-oss's
    ``thinking``) read as ``reasoning_content``; both, unless equal, are refused."""
    if not any(isinstance(m, Mapping) and key in m for m in msgs):
        return msgs
    out: list[Any] = []
    for i, m in enumerate(msgs):
        if isinstance(m, Mapping) and key in m:
            m = dict(m)
            value = m.pop(key)
            if m.get("reasoning_content") not in (None, value):
                raise RenderError(
                    f"message {i} has both 'reasoning_content' and {key!r} (another name of it), and they differ; "
                    "give one of them",
                    index=i,
                )
            if value is not None:
                m["reasoning_content"] = value
        out.append(m)
    return out


def _same(role: str) -> str:
    return role


def _merged_system(c: Compiled, system: str, user: str) -> str | None:
    """The user turn's content with a system message written into it (``merge-system``),
    when that reads back as a plain user turn; else None."""
    if c.merge_sep is None or c.user_match is None:
        return None
    merged = system + c.merge_sep + user
    return merged if c.user_match(merged) is not None else None


def _merge_first_system(out: list[Message], c: Compiled) -> None:
    """A system message written into the user turn after it reads back as that user turn.

    That is the first message (or, where the template writes it in the last user turn, the one
    before that turn): a system message elsewhere is a turn of its own.
    """
    k = len(out) - 2 if c.spec.header.get("system-at") == "last-user" else 0
    if not 0 <= k < len(out) - 1:
        return
    system, user = out[k], out[k + 1]
    if system.role == "system" and user.role == "user":
        merged = _merged_system(c, system.content, user.content)
        if merged is not None:
            out[k : k + 2] = [make_message("user", merged, user.complete)]


def _find_delimiter(text: str, anywhere: list[str], at_start: list[str]) -> tuple[str, int] | None:
    """The first refused string in ``text``: its delimiter (the string without the
    whitespace around it) and that delimiter's offset."""
    found: list[tuple[int, str]] = []
    for d in at_start:
        if text.startswith(d):
            core = d.strip() or d
            found.append((d.find(core), core))
    for d in anywhere:
        k = text.find(d)
        if k != -1:
            core = d.strip() or d
            found.append((k + d.find(core), core))
    if not found:
        return None
    offset, core = min(found)
    return core, offset


def _model_roles(msgs: list[Any]) -> tuple[str, ...]:
    """The roles of a list of Message objects; () for anything else."""
    try:
        roles = tuple([m.role for m in msgs if type(m) is Message])
    except TypeError:  # pragma: no cover
        return ()
    # A message with reasoning or tool calls takes the full path (the fast one writes contents only).
    return () if has_structure(msgs) else roles
