"""Declarative formats: a mapping of per-role texts, compiled to a chatgrammar grammar.

The shapes people already write are accepted:

* **turns** (chatgrammar's own): ``{"roles": {"user": {"pre": "<u>", "post": "</u>"}, ...}}``
  with ``bos``, ``eos``, ``initial``, ``final``, ``generation``, ``order``, ``strip``...
* **litellm** (``register_prompt_template``): ``roles`` with ``pre_message``/``post_message``,
  ``initial_prompt_value``, ``final_prompt_value``, ``bos_token``, ``eos_token``; rendered as
  litellm's ``custom_prompt`` does (the EOS after every answer, the BOS again before a system
  message that follows an answer, the final value after the last message, always).
* **chatformat** (rounds): ``with_system``/``without_system`` templates holding ``{system}``,
  ``{user}`` and ``{assistant}``, a ``round_seperator`` and an optional ``system_default``.

Whatever the shape, the result is grammar source in the same form as the built-ins
(:func:`grammar_source`), so every property of a built-in holds: the renderer, the parser,
the refusals and the stop strings all come from the one grammar.

>>> src = grammar_source(turns_spec({"name": "demo", "roles": {
...     "user": {"pre": "<u>", "post": "</u>"}, "assistant": {"pre": "<a>", "post": "</a>"}}}))
>>> print(src.split("%declare")[1].strip())
TEXT
<BLANKLINE>
start: _turn* [generation]
_turn: user | assistant
user: _U [TEXT] _U_END
assistant: _A [TEXT] _A_END
generation: assistant
<BLANKLINE>
_U: "<u>"
_U_END: "</u>"
_A: "<a>"
_A_END: "</a>"
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._errors import GrammarError

__all__ = ["FlatSpec", "Turn", "grammar_source", "spec_source", "turns_spec"]

TRIMS = ("", "strip", "lstrip", "rstrip")
ORDERS = ("any", "system-first", "alternate", "user-even", "system-first-user-even")
# Texts that look like special tokens, where no tokenizer says which are: <|im_start|>,
# <start_of_turn>, </s>, [INST], <<SYS>>.
_TOKENISH = re.compile(r"<\|[^|<>\s]{1,40}\|>|<<?/?[A-Za-z_][\w\-./]{0,40}>>?|\[/?[A-Z][A-Z_]{1,20}\]")


@dataclass
class Turn:
    """What a message of one role is written between: ``pre + content + post``."""

    pre: str = ""
    post: str = ""
    trim: str = ""  # "", "strip", "lstrip" or "rstrip": what the template does to the content


@dataclass
class FlatSpec:
    """A format whose messages are each written as ``pre + content + post`` of their role.

    ``any_role`` (its ``pre`` holding ``{role}``) writes every role without a turn of its own.
    """

    name: str
    description: str = ""
    bos: str = ""
    eos: str = ""
    initial: str = ""  # after the BOS, before the first message
    final: str = ""  # after the last message, always
    roles: dict[str, Turn] = field(default_factory=dict)
    any_role: Turn | None = None
    generation: str | None = None  # what add_generation_prompt writes; None: the assistant's pre
    order: str = "any"
    needs_message: bool = False  # the template refuses an empty conversation
    empty_renders_nothing: bool = False  # an empty conversation is written as nothing at all
    empty_generation: bool = True  # an empty conversation gets the generation prompt when asked
    generation_when_empty_writes_nothing: bool = True  # (when it does not) asking writes nothing, not an error
    final_without_generation: bool = False  # the final text is written only without the generation prompt
    default_system_if: str = "not-first"  # or "not-first-or-empty": the default also for no message
    eos_after_assistant: bool = False  # litellm: the EOS after every answer
    bos_reopen: bool = False  # litellm: the BOS again before a system message after an answer
    default_system: str | None = None
    tokens: list[str] = field(default_factory=list)  # special tokens (refused in content)
    stop: list[str] | None = None
    order_error: str | None = None
    aliases: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    reference: str | None = None

    def turns(self) -> list[Turn]:
        """Every role's turn, the one of any other role last."""
        return [*self.roles.values(), *([self.any_role] if self.any_role else [])]

    def literals(self) -> list[str]:
        """The texts written around the messages: start, end, generation prompt, openings, closings."""
        return [
            self.initial,
            self.final,
            self.generation or "",
            *(t for turn in self.turns() for t in (turn.pre, turn.post)),
        ]


def _slug(name: str) -> str:
    slug = re.sub(r"[^a-z0-9.]+", "-", name.strip().lower()).strip("-")
    if not slug or not slug[0].isalnum():
        raise GrammarError(f"the format's name {name!r} has no letters or digits to make a slug of")
    return slug


class _Terminals:
    """Names the literals of a grammar: one terminal per distinct text, tokens on their own."""

    def __init__(self, tokens: Sequence[str]) -> None:
        self.tokens = sorted({t for t in tokens if t}, key=len, reverse=True)
        self.names: dict[str, str] = {}
        self.token_names: list[str] = []

    def name(self, text: str, hint: str) -> str:
        if text in self.names:
            return self.names[text]
        if not text.strip():
            base = "_".join({" ": "SP", "\n": "NL", "\t": "TAB"}.get(c, "WS") for c in text[:6])
        else:
            base = re.sub(r"[^A-Z0-9]+", "_", text.upper()).strip("_")
        if base and text.lstrip("<[").startswith("/"):
            base += "_END"
        base = "_" + (base if base and not base[0].isdigit() and len(base) <= 24 else re.sub(r"\W", "_", hint.upper()))
        name, n = base, 2
        while name in self.names.values():
            name, n = f"{base}_{n}", n + 1
        self.names[text] = name
        if text in self.tokens:
            self.token_names.append(name)
        return name

    def pieces(self, text: str, hint: str) -> list[str]:
        """The terminals writing ``text``: each special token its own, the text between as one."""
        out: list[str] = []
        if not text:
            return out
        if self.tokens:
            parts = re.split("(" + "|".join(map(re.escape, self.tokens)) + ")", text)
        else:
            parts = [text]
        for part in parts:
            if part:
                out.append(self.name(part, hint))
        return out

    def definitions(self) -> list[str]:
        return [f"{name}: {json.dumps(text, ensure_ascii=False)}" for text, name in self.names.items()]


def _tokens_in(texts: Sequence[str]) -> list[str]:
    found: list[str] = []
    for text in texts:
        found.extend(m.group() for m in _TOKENISH.finditer(text))
    return list(dict.fromkeys(found))


def _content(trim: str) -> str:
    return f"[_{trim}{{TEXT}}]" if trim else "[TEXT]"


def grammar_source(spec: FlatSpec) -> str:
    """The grammar of a :class:`FlatSpec`, in the form of the built-in grammar files."""
    name = _slug(spec.name)
    for role, turn in spec.roles.items():
        if turn.trim not in TRIMS:
            raise GrammarError(f"role {role!r}: trim {turn.trim!r} is not one of {', '.join(map(repr, TRIMS))}")
    if spec.order not in ORDERS:
        raise GrammarError(f"order {spec.order!r} is not one of {', '.join(ORDERS)}")
    if not spec.roles and spec.any_role is None:
        raise GrammarError("the spec writes no role: give 'roles'")
    if spec.order != "any" and not {"user", "assistant"} <= set(spec.roles):
        raise GrammarError(f"order {spec.order!r} needs turns for the roles 'user' and 'assistant'")
    texts = [spec.bos, spec.eos, *spec.literals()]
    tokens = list(dict.fromkeys([*spec.tokens, *([spec.bos] if spec.bos else []), *([spec.eos] if spec.eos else [])]))
    if not spec.tokens:
        tokens = list(dict.fromkeys([*tokens, *_tokens_in(texts)]))
    terms = _Terminals(tokens)
    rules: list[str] = []
    turn_names: list[str] = []
    assistant_post: list[str] = []

    def seq(items: list[str]) -> str:
        return " ".join(i for i in items if i)

    bos = terms.pieces(spec.bos, "bos")
    eos_after = terms.pieces(spec.eos, "eos") if spec.eos_after_assistant else []
    for role, turn in spec.roles.items():
        rule = re.sub(r"\W+", "_", role.lower()).strip("_")
        if not rule or rule[0].isdigit() or rule != role:
            raise GrammarError(f"role {role!r}: a role with a turn of its own is a lowercase identifier (user, tool)")
        pre = terms.pieces(turn.pre, role)
        post = terms.pieces(turn.post, f"{role}_end") + (eos_after if role == "assistant" else [])
        if role == "assistant":
            assistant_post = post
        rules.append(f"{role}: {seq([*pre, _content(turn.trim), *post])}")
        turn_names.append(role)
    if spec.any_role is not None:
        if spec.any_role.pre.count("{role}") != 1:
            raise GrammarError("the turn of any other role writes its role once: its 'pre' holds '{role}' once")
        before, after = spec.any_role.pre.split("{role}")
        opening = [*terms.pieces(before, "role"), "ROLE", *terms.pieces(after, "role_end")]
        post = terms.pieces(spec.any_role.post, "end")
        rules.append(f"message: {seq([*opening, _content(spec.any_role.trim), *post])}")
        turn_names.append("message")
        if "assistant" not in spec.roles:
            assistant_post = post

    def alts(names: list[str]) -> str:
        return " | ".join(names)

    start_rules: list[str] = []
    others = [r for r in turn_names if r != "system"]
    if spec.bos_reopen and spec.bos and "assistant" in spec.roles:
        # litellm: after an answer, the BOS comes again before the next system message.
        not_assistant = [r for r in turn_names if r != "assistant"]
        not_system = [r for r in turn_names if r != "system"]
        start_rules.append(f"_open: {alts(not_assistant)}" if not_assistant else "")
        start_rules.append(f"_closed: {alts(not_system)}")
        open_star = "_open*" if not_assistant else ""
        reopen = f"{' '.join(bos)} system {open_star}" if "system" in spec.roles else ""
        loop = f"(assistant _closed* {reopen})* [assistant _closed*]" if reopen else "[assistant _closed*]"
        body = f"{open_star} {loop}".strip()
        if spec.needs_message:
            raise GrammarError("litellm specs render an empty conversation; needs_message does not apply")
        plus = body  # litellm specs always accept an empty conversation
    elif spec.order == "any":
        start_rules.append(f"_turn: {alts(turn_names)}")
        body, plus = "_turn*", "_turn+"
    elif spec.order == "system-first":
        if not others:
            raise GrammarError("order 'system-first' needs a role other than 'system'")
        start_rules.append(f"_other: {alts(others)}")
        if "system" in spec.roles:
            body, plus = "[system] _other*", "(system _other* | _other+)"
        else:
            body, plus = "_other*", "_other+"
    else:  # the user's turns at even places, after an optional system message (not for user-even)
        if spec.order == "alternate":  # then user, assistant, user...
            pairs = "user (assistant user)* [assistant]"
            extra = [r for r in turn_names if r not in ("system", "user", "assistant")]
            if extra:
                raise GrammarError(f"order 'alternate' has no place for the roles {', '.join(map(repr, extra))}")
        else:  # Llama 2's and Gemma's check: any other role at the odd places
            not_user = [r for r in turn_names if r != "user"]
            start_rules.append(f"_not_user: {alts(not_user)}")
            pairs = "user (_not_user user)* [_not_user]"
        if spec.order != "user-even" and "system" in spec.roles:
            body, plus = f"[system] [{pairs}]", f"(system [{pairs}] | {pairs})"
        else:
            body, plus = f"[{pairs}]", pairs
    start_rules = [r for r in start_rules if r]
    prefix = [*bos, *terms.pieces(spec.initial, "initial")]
    suffix = terms.pieces(spec.final, "final")
    # The end: the generation prompt, then the final text; or one of the two (Phi-3.5 ends
    # with its EOS only when no answer is asked for).
    end = (
        f"(generation | {seq(suffix)})" if spec.final_without_generation and suffix else seq(["[generation]", *suffix])
    )
    if spec.empty_renders_nothing:
        alone = " | [generation]" if spec.empty_generation else ""
        start = f"start: [{seq([*prefix, plus, end])}]{alone}"
    elif spec.needs_message:
        start = f"start: {seq([*prefix, plus, end])}"
    elif not spec.empty_generation:
        # An empty conversation gets no generation prompt.
        start = f"start: {seq([*prefix, f'[{plus} {end}]' if not suffix else f'[{plus} [generation]]', *suffix])}"
        if spec.final_without_generation and suffix:
            raise GrammarError("a final text written only without the generation prompt needs the prompt when empty")
    else:
        start = f"start: {seq([*prefix, body, end])}"
    gen = spec.generation
    if gen is None:
        assistant_pre = spec.roles["assistant"].pre if "assistant" in spec.roles else None
        if assistant_pre is None and spec.any_role is not None:
            assistant_pre = spec.any_role.pre.replace("{role}", "assistant")
        gen = assistant_pre or ""
    if gen and "assistant" in spec.roles and gen == spec.roles["assistant"].pre:
        generation = "generation: assistant"  # the answer's turn, opened
    elif (
        gen
        and "assistant" not in spec.roles
        and spec.any_role
        and gen == spec.any_role.pre.replace("{role}", "assistant")
    ):
        generation = "generation: message"
    else:
        generation = f"generation: {seq(terms.pieces(gen, 'generation'))}".rstrip()

    # The stop strings: the first special token after an answer's content, or its whole end,
    # or (when an answer ends with nothing) the opening of the user's turn.
    if spec.stop is not None:
        stop_names = [terms.name(s, "stop") for s in spec.stop]
    else:
        stop_names = [n for n in assistant_post if n in terms.token_names][:1]
        if not stop_names:
            ends = [n for n in assistant_post if _text_of(terms, n).strip()]
            if ends:
                stop_names = ends[:1]
            elif "user" in spec.roles:
                stop_names = [n for n in terms.pieces(spec.roles["user"].pre, "user") if _text_of(terms, n).strip()][:1]
        if spec.eos:
            stop_names.append(terms.name(spec.eos, "eos"))
    stop_names = list(dict.fromkeys(stop_names))

    header = [f"// name: {name}"]
    description = spec.description or f"{spec.name}: declared per role"
    header.append(f"// description: {' '.join(description.split())}")
    if spec.aliases:
        header.append(f"// aliases: {', '.join(spec.aliases)}")
    if spec.models:
        header.append(f"// models: {', '.join(spec.models)}")
    if spec.reference:
        header.append(f"// reference: {spec.reference}")
    header.append(f"// roles: {', '.join([r for r in spec.roles] + (['*'] if spec.any_role else []))}")
    definitions = terms.definitions()
    if terms.token_names:
        header.append(f"// tokens: {' '.join(dict.fromkeys(terms.token_names))}")
    if stop_names:
        header.append(f"// stop: {' '.join(stop_names)}")
    if spec.bos:
        header.append(f"// bos: {terms.name(spec.bos, 'bos')}")
    if spec.eos and spec.eos in terms.names:
        header.append(f"// eos: {terms.names[spec.eos]}")
    if spec.default_system is not None:
        header.append("// default-system: _default_system")
        if spec.default_system_if != "not-first":
            header.append(f"// default-system-if: {spec.default_system_if}")
    if spec.empty_renders_nothing and not spec.empty_generation and spec.generation_when_empty_writes_nothing:
        header.append("// generation-elsewhere: nothing")
    if spec.order_error:
        header.append(f"// order-error: {' '.join(spec.order_error.split())}")
    imports = []
    trims = {t.trim for t in spec.turns() if t.trim}
    if trims:
        imports.append(f"%import .fragments.common ({', '.join('_' + t for t in sorted(trims))})")
    declare = "%declare TEXT ROLE" if spec.any_role else "%declare TEXT"
    lines = [*header, *imports, declare, "", start, *start_rules, *rules, generation]
    if spec.default_system is not None:
        lines.append(f"_default_system: {json.dumps(spec.default_system, ensure_ascii=False)}")
    return "\n".join([*lines, "", *definitions]) + "\n"


def _text_of(terms: _Terminals, name: str) -> str:
    return next(text for text, n in terms.names.items() if n == name)


# -- the shapes people write ----------------------------------------------------------------------


def _str(spec: Mapping[str, Any], key: str, default: str = "") -> str:
    value = spec.get(key, default)
    if value is None:
        return default
    if isinstance(value, Mapping) and "content" in value:  # an AddedToken written out
        value = value["content"]
    if not isinstance(value, str):
        raise GrammarError(f"spec key {key!r} must be a string, not {type(value).__name__}")
    return value


_TURNS_KEYS = {
    "name", "description", "aliases", "models", "bos", "eos", "initial", "final", "roles", "generation",
    "order", "needs_message", "default_system", "tokens", "stop", "order_error", "strip", "reference",
}  # fmt: skip
_LITELLM_KEYS = {
    "name", "description", "aliases", "models", "roles", "initial_prompt_value", "final_prompt_value",
    "bos_token", "eos_token", "tokens", "stop", "model",
}  # fmt: skip
_ROUNDS_KEYS = {
    "name", "description", "aliases", "models", "with_system", "without_system", "round_seperator",
    "round_separator", "system_default", "stop", "tokens", "bos",
}  # fmt: skip


def _unknown(spec: Mapping[str, Any], known: set[str], shape: str) -> None:
    extra = sorted(set(spec) - known)
    if extra:
        raise GrammarError(
            f"unknown key{'s' if len(extra) > 1 else ''} {', '.join(map(repr, extra))} in a {shape} spec "
            f"(it takes {', '.join(sorted(known))})"
        )


def _list(spec: Mapping[str, Any], key: str) -> list[str]:
    value = spec.get(key) or []
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()] if key in ("aliases", "models") else [value]
    if not all(isinstance(v, str) for v in value):
        raise GrammarError(f"spec key {key!r} must be a list of strings")
    return list(value)


def turns_spec(spec: Mapping[str, Any]) -> FlatSpec:
    """chatgrammar's own shape: ``roles`` of ``pre``/``post``/``strip`` (a role ``"*"`` writes any other role)."""
    _unknown(spec, _TURNS_KEYS, "turns")
    roles: dict[str, Turn] = {}
    any_role: Turn | None = None
    default_trim = spec.get("strip", "")
    raw = spec.get("roles")
    if not isinstance(raw, Mapping) or not raw:
        raise GrammarError("a spec needs 'roles': a mapping of each role to its 'pre' and 'post' texts")
    for role, value in raw.items():
        if not isinstance(value, Mapping):
            raise GrammarError(f"role {role!r}: give a mapping with 'pre' and 'post'")
        _unknown(value, {"pre", "post", "strip"}, f"role {role!r}")
        given = value.get("strip", default_trim)
        trim: Any = "strip" if given is True else "" if given is False else given  # checked in grammar_source
        turn = Turn(_str(value, "pre"), _str(value, "post"), trim)
        if role == "*":
            any_role = turn
        else:
            roles[str(role)] = turn
    order = spec.get("order", "any")
    return FlatSpec(
        name=_str(spec, "name", "custom"),
        description=_str(spec, "description"),
        aliases=_list(spec, "aliases"),
        models=_list(spec, "models"),
        bos=_str(spec, "bos"),
        eos=_str(spec, "eos"),
        initial=_str(spec, "initial"),
        final=_str(spec, "final"),
        roles=roles,
        any_role=any_role,
        generation=spec["generation"] if "generation" in spec else None,
        order=order,
        needs_message=bool(spec.get("needs_message", False)),
        default_system=spec.get("default_system"),
        tokens=_list(spec, "tokens"),
        stop=_list(spec, "stop") if "stop" in spec else None,
        order_error=spec.get("order_error"),
        reference=spec.get("reference"),
    )


def litellm_spec(spec: Mapping[str, Any]) -> FlatSpec:
    """litellm's ``register_prompt_template`` arguments, rendered as its ``custom_prompt`` does."""
    _unknown(spec, _LITELLM_KEYS, "litellm")
    raw = spec.get("roles")
    if not isinstance(raw, Mapping) or not raw:
        raise GrammarError("a litellm spec needs 'roles': each role's 'pre_message' and 'post_message'")
    roles: dict[str, Turn] = {}
    for role, value in raw.items():
        if not isinstance(value, Mapping):
            raise GrammarError(f"role {role!r}: give a mapping with 'pre_message' and 'post_message'")
        _unknown(value, {"pre_message", "post_message"}, f"litellm role {role!r}")
        roles[str(role)] = Turn(_str(value, "pre_message"), _str(value, "post_message"))
    eos = _str(spec, "eos_token")
    bos = _str(spec, "bos_token")
    return FlatSpec(
        name=_str(spec, "name") or _str(spec, "model") or "custom",
        description=_str(spec, "description") or "declared as a litellm prompt template",
        aliases=_list(spec, "aliases"),
        models=_list(spec, "models"),
        bos=bos,
        eos=eos,
        initial=_str(spec, "initial_prompt_value"),
        final=_str(spec, "final_prompt_value"),
        roles=roles,
        # litellm has no generation prompt: its final value is written whatever is asked.
        generation="",
        eos_after_assistant=bool(eos) and "assistant" in roles,
        bos_reopen=bool(bos) and "assistant" in roles,
        tokens=_list(spec, "tokens"),
        stop=_list(spec, "stop") if "stop" in spec else None,
    )


def rounds_source(spec: Mapping[str, Any]) -> str:
    """chatformat's rounds: ``with_system`` and ``without_system`` templates joined by a separator.

    The last round is cut at ``{assistant}``: a trailing user turn ends with the assistant's
    opening, and a final answer is written open (chatgrammar's open turn, ``complete=False``).
    """
    _unknown(spec, _ROUNDS_KEYS, "chatformat")
    with_system = _str(spec, "with_system")
    without = _str(spec, "without_system")
    if not without:
        raise GrammarError(
            "a chatformat spec needs 'without_system' (and 'with_system'), holding {user} and {assistant}"
        )
    sep = _str(spec, "round_seperator") or _str(spec, "round_separator")

    def split(template: str, keys: list[str]) -> list[str]:
        parts: list[str] = []
        rest = template
        for key in keys:
            mark = "{" + key + "}"
            if rest.count(mark) != 1:
                raise GrammarError(f"the round template {template!r} must hold {mark} exactly once, after the others")
            head, rest = rest.split(mark)
            parts.append(head)
        return [*parts, rest]

    w0, w1, w2 = split(without, ["user", "assistant"])
    name = _slug(_str(spec, "name", "custom"))
    texts = [with_system, without, sep, _str(spec, "bos")]
    terms = _Terminals(_list(spec, "tokens") or _tokens_in(texts))

    def seq(*items: str | list[str]) -> str:
        flat: list[str] = []
        for item in items:
            flat.extend(item if isinstance(item, list) else [item])
        return " ".join(i for i in flat if i)

    rules = [
        f"user: {seq(terms.pieces(w0, 'user'), '[TEXT]', terms.pieces(w1, 'assistant'))}",
        f"assistant: {seq('[TEXT]', terms.pieces(w2, 'end'))}",
    ]
    sep_pieces = terms.pieces(sep, "sep")
    later = f"({seq(sep_pieces, 'user assistant')})* [{seq(sep_pieces, 'user')} [generation]]"
    first = f"user ([generation] | assistant {later})"
    roles = ["user", "assistant"]
    if with_system:
        s0, s1, s2, s3 = split(with_system, ["system", "user", "assistant"])
        rules.insert(0, f"system: {seq(terms.pieces(s0, 'system'), '[TEXT]', terms.pieces(s1, 'system_end'))}")
        rules.insert(1, f"user__after_system: {seq('[TEXT]', terms.pieces(s2, 'assistant'))}")
        rules.insert(2, f"assistant__after_system: {seq('[TEXT]', terms.pieces(s3, 'end'))}")
        first = f"(system user__after_system ([generation] | assistant__after_system {later}) | {first})"
        roles.insert(0, "system")
    bos = terms.pieces(_str(spec, "bos"), "bos")
    start = f"start: {seq(bos, first)}"
    stop = _list(spec, "stop") or ([w2.strip()] if w2.strip() else [])
    stop_names = [terms.name(s, "stop") for s in stop if s]
    header = [
        f"// name: {name}",
        f"// description: {_str(spec, 'description') or 'declared as chatformat rounds'}",
        f"// roles: {', '.join(roles)}",
    ]
    if terms.token_names:
        header.append(f"// tokens: {' '.join(terms.token_names)}")
    if stop_names:
        header.append(f"// stop: {' '.join(stop_names)}")
    if _str(spec, "system_default"):
        header.append("// default-system: _default_system")
    header.append(
        "// order-error: Conversation roles must be: an optional system message, then user/assistant/user/..."
    )
    lines = [
        *header,
        "%declare TEXT",
        "",
        start,
        *rules,
        "// The user's round already ends with the opening of the answer.",
        "generation:",
    ]
    if _str(spec, "system_default"):
        lines.append(f"_default_system: {json.dumps(_str(spec, 'system_default'), ensure_ascii=False)}")
    return "\n".join([*lines, "", *terms.definitions()]) + "\n"


def spec_source(spec: Mapping[str, Any]) -> str:
    """The grammar source of a spec in any of the accepted shapes (see the module's docstring)."""
    if not isinstance(spec, Mapping):
        raise GrammarError(f"a spec is a mapping (a dict, or TOML/JSON read into one), not {type(spec).__name__}")
    if "without_system" in spec or "with_system" in spec:
        return rounds_source(spec)
    roles = spec.get("roles")
    litellm = any(k in spec for k in ("initial_prompt_value", "final_prompt_value", "bos_token", "eos_token")) or (
        isinstance(roles, Mapping)
        and any(isinstance(v, Mapping) and ({"pre_message", "post_message"} & set(v)) for v in roles.values())
    )
    return grammar_source(litellm_spec(spec) if litellm else turns_spec(spec))
