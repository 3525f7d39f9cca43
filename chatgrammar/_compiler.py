"""Grammar -> compiled format: message shapes, automaton, slot patterns, guard.

The compiled form is what the renderer, the scanner and the Lark parser share;
each derives its own machinery from it (``_render``, ``_scanner``, ``_larkparser``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._automaton import Dfa, positions
from ._errors import GrammarError
from ._grammar import GrammarSpec
from ._ir import (
    REASONING,
    STRUCTURAL,
    TOOL_ARGS,
    TOOL_CALL,
    TOOL_CALL_ID,
    TOOL_DEF,
    TOOL_RESULT_ID,
    TOOL_RESULT_NAME,
    UNWRITTEN,
    Alt,
    Gen,
    Lit,
    Msg,
    Node,
    Opt,
    Seq,
    Slot,
    Star,
    read_only_removed,
    resolve,
    silent_removed,
    walk,
)
from ._patterns import (
    INDEX,
    Guard,
    SlotRules,
    date_pattern,
    derive_slot_rules,
    guard_for,
    json_object,
    re_escape,
    slot_pattern,
    triggers_for,
)
from ._payloads import JSON_DEFS, Payloads
from ._structure import CALL_PARTS

__all__ = ["ASSISTANT", "Compiled", "Piece", "RegexPart", "Shape", "SlotPart", "compile_spec"]

ASSISTANT = "assistant"  # the role the generation prompt opens


@dataclass(frozen=True)
class SlotPart:
    """A slot inside a message's regex: a capture group the scanner makes atomic."""

    field: str  # "role", "content" or "var"
    pattern: str
    optional: bool  # the slot alone is optional: absent only when nothing matches
    name: str = ""  # the slot's terminal (variables are reported by name)


RegexPart = str | SlotPart

# A render piece: literal text, ("c", slot) content, ("r", slot) role,
# or ("?", slot, pieces): pieces written only when the slot's content is not empty.
Piece = str | tuple[Any, ...]


@dataclass
class Shape:
    """One message rule: how its messages are written and read."""

    rule: str
    role: str | None  # None: the ROLE slot gives it
    body: Node
    content: Slot
    role_slot: Slot | None
    open_body: Node  # the body cut right after the content: an open final turn
    pieces: list[Piece]
    open_pieces: list[Piece]
    regex: list[RegexPart]  # the body as regex text and slots (see ``_regex``)
    open_regex: list[RegexPart]
    # Literal text follows the content: the open turn reads differently from the complete one.
    # Without it, the two are the same text (and what follows the message must end the content).
    text_after_content: bool
    open_bare: bool  # the open turn is the content alone, with no literal of its own
    # The message can end with its optional content group: written empty, it ends with no literal of
    # its own, and only what follows it tells it apart (the answer before a tool call).
    ends_with_content: bool = False
    lead: str = ""  # the literal text it starts with
    # Its turn may end a text open (cut after its content). A tool definition never does: render
    # writes the definitions whole, only a message of the caller's is left open.
    openable: bool = True


@dataclass
class Compiled:
    spec: GrammarSpec
    dfa: Dfa  # what the renderer walks: every message, even those written as nothing
    parse_dfa: Dfa  # what the parsers walk: only what writes text
    shapes: dict[str, Shape]
    gen_text: str | None  # the generation prompt when it is fixed text ("" for none)
    gen_pieces: list[Piece] | None  # the generation prompt as render pieces (None: the format has none)
    gen_regex: list[RegexPart]  # ... and as the scanner reads it
    gen_role_slot: Slot | None  # the ROLE slot the prompt writes "assistant" into, if any
    rules: dict[int, SlotRules]  # id(slot) -> what it refuses
    guards: dict[int, Guard]  # id(content slot) -> its cheap safety test
    role_pattern: str | None
    tokens: list[str] = field(default_factory=list)
    markers: list[str] = field(default_factory=list)
    options: dict[str, object] = field(default_factory=dict)  # the option values of this variant
    variables: list[str] = field(default_factory=list)  # var slot terminals, in the order plans index them
    default_system: list[Piece] | None = None  # what the template writes when there is no system message
    merge_sep: str | None = None  # a system message is written into a user turn after this separator
    # The fullmatch of a plain user turn's content: a system message merged into one must read as it.
    user_match: Callable[[str], object] | None = None
    date_format: str | None = None  # the strftime format of the date slot
    # What a generic ROLE slot refuses: another rule's text in its place, and aliased roles.
    role_refused: list[str] = field(default_factory=list)
    role_after: list[str] = field(default_factory=list)
    structural: bool = False  # the format writes reasoning, tool calls or tool definitions as turns
    # Literals of the structure (a tool call's opening...) that plain content could spell: content
    # holding one is checked by reading the render back (it must not turn into structure).
    struct_marks: tuple[str, ...] = ()
    # Trimmed content slots of answers before tool calls: content trimmed to nothing is refused.
    trimmed_before_calls: frozenset[int] = frozenset()
    payloads: Payloads = field(default_factory=Payloads)  # how tool calls and definitions are written
    # Content slots that a bare structure (a tool definition written as its text alone) could be
    # read from, at their start: content matching one of these is checked by reading it back.
    # Each check comes with what such a content would be read as, for the error.
    lead_checks: dict[int, list[tuple[Callable[[str], object], str]]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def has_gen(self) -> bool:
        return self.gen_pieces is not None


def compile_spec(spec: GrammarSpec, options: dict[str, object] | None = None) -> Compiled:
    """Compile a grammar for one assignment of its options (the defaults when None)."""
    origin = spec.origin
    declared = spec.header.get("options", {})
    options = {name: values[0] for name, values in declared.items()} if options is None else options
    start = resolve(spec.start, options)
    tokens = [t.strip() or t for t in spec.terminal_texts("tokens")]
    markers = [m.strip() or m for m in spec.terminal_texts("markers")]
    _check_top(start, origin)
    for msg in _messages(start):
        _check_message(msg, origin)
    gen_body = _generation(start, origin)
    found = _struct_marks(_messages(start), tokens)
    anywhere: dict[int, list[str]] = {}
    at_start: dict[int, list[str]] = {}
    for m in _messages(start):
        if m.role not in ("system", "user", ASSISTANT):
            continue  # only the turns of these roles could spell a structure instead
        for s in walk(m.body):
            if isinstance(s, Slot) and s.field == "content" and s.transform != "drop":  # (a dropped one reads nothing)
                opener = _opener(m.body, s, tokens)
                for text, answers_only, start_only, after in found:
                    # Text after another token than the content's own is never read as content.
                    if (not answers_only or m.role == ASSISTANT) and (None in (opener, after) or opener == after):
                        (at_start if start_only else anywhere).setdefault(id(s), []).append(text)
    # The marks some content refuses: content holding one is read back before it is written.
    marks = sorted({text for texts in (*anywhere.values(), *at_start.values()) for text in texts})
    # Flags a template takes out of the first system message never stand in what it writes.
    flags = [flag for _, _, flag in spec.header.get("option-flags", [])]
    for m in _messages(start) if flags else []:
        if m.role == "system":
            for s in walk(m.body):
                if isinstance(s, Slot) and s.field == "content":
                    anywhere.setdefault(id(s), []).extend(flags)
    rules = derive_slot_rules(start, tokens, markers, origin, anywhere, at_start)
    _merge_occurrences(start, rules)
    if spec.header.get("date"):
        _date_slots(start, spec.header["date"], rules, origin)
    # Before the shapes are built: their regexes read the slots' patterns.
    aliases = sorted(spec.header.get("role-alias", {}))
    role_refused, role_after = _refuse_fixed_roles(start, rules, aliases)
    defs, fields = spec.header.get("tool-defs", ("json", ()))
    payloads = Payloads(
        spec.header.get("tool-args", "json"),
        defs,
        int(spec.header["id-length"]) if spec.header.get("id-length") else None,
        spec.header.get("id-error"),
        call_type=spec.terminals[spec.header["call-type"]] if spec.header.get("call-type") else None,
        call_function=spec.header.get("call-function"),
        fields=fields,
        call_ids=spec.header.get("call-ids", "given"),
        result_error=spec.header.get("result-error"),
        beside_calls=spec.header.get("beside-calls"),
        beside_calls_error=spec.header.get("beside-calls-error"),
        refuse_empty=tuple(spec.header.get("refuse-empty", ())),
    )
    payloads = dataclasses.replace(payloads, refused_names=_refuse_spelled_answers(start, rules))
    if payloads.defs in JSON_DEFS and payloads.defs != "json-list":  # (a list its users write: any text)
        _json_shaped(start, TOOL_DEF, rules)
    if payloads.id_length is not None:
        _fixed_length(start, (TOOL_CALL_ID, TOOL_RESULT_ID), payloads.id_length, rules)
    if payloads.call_ids == "index":
        _indexes(start, (TOOL_CALL_ID, TOOL_RESULT_ID), rules)
    shapes: dict[str, Shape] = {}
    for msg in _messages(start):
        if msg.rule not in shapes and not msg.dropped:
            shapes[msg.rule] = _shape(msg, origin)
    written = read_only_removed(start)
    if written is None:
        raise GrammarError("the grammar writes nothing: every branch holds a read-only (__read) rule", source=origin)
    dfa = Dfa.build(positions(written, _is_message_level_atom))
    parse_dfa = Dfa.build(positions(silent_removed(start), _is_message_level_atom))
    _check_unmarked(dfa, shapes, origin)
    payloads = dataclasses.replace(
        payloads,
        call_order=_call_order(dfa, origin),
        result_id_first=_always_followed(dfa, TOOL_RESULT_ID, "tool"),
        result_name_first=_precedes(dfa, shapes, TOOL_RESULT_NAME, "tool"),
    )
    lead_checks = _refuse_bare_structures(start, parse_dfa, shapes, rules, origin)
    for key, checks in _refuse_longer_siblings(start, shapes, rules, origin).items():
        lead_checks.setdefault(key, []).extend(checks)
    role_slots = [s for s in walk(start) if isinstance(s, Slot) and s.field == "role"]
    content_rules = {id(s.content): rules[id(s.content)] for s in shapes.values()}
    triggers = triggers_for(content_rules.values())
    shapes_by_content = {id(s.content): s for s in shapes.values()}
    default_system = None
    if spec.default_system is not None:
        default_system = _default_pieces(resolve(spec.default_system, options), origin)
    user = shapes.get("user")
    return Compiled(
        spec=spec,
        dfa=dfa,
        parse_dfa=parse_dfa,
        shapes=shapes,
        gen_text=_fixed_text(gen_body) if gen_body is not None else None,
        gen_pieces=_pieces(gen_body, unwrap=True) if gen_body is not None else None,
        gen_regex=_regex(gen_body, unwrap=True) if gen_body is not None else [],
        gen_role_slot=next((s for s in walk(gen_body) if isinstance(s, Slot) and s.field == "role"), None)
        if gen_body is not None
        else None,
        rules=rules,
        guards={
            key: guard_for(r, triggers, required=not _optional_content(shapes_by_content[key]))
            for key, r in content_rules.items()
        },
        role_pattern=role_slots[0].pattern if role_slots else None,
        tokens=tokens,
        markers=markers,
        options=dict(options),
        # Variables (the date) the conversation writes, then those only the default system message writes.
        variables=list(
            dict.fromkeys(
                [s.terminal for s in walk(start) if isinstance(s, Slot) and s.field == "var"]
                + [p[1].terminal for p in default_system or [] if not isinstance(p, str)]
            )
        ),
        default_system=default_system,
        merge_sep=spec.terminals[spec.header["merge-system"]] if spec.header.get("merge-system") else None,
        user_match=re.compile(user.content.pattern).fullmatch if user is not None else None,
        date_format=spec.header["date"][1] if spec.header.get("date") else None,
        role_refused=role_refused,
        role_after=role_after,
        structural=any(s.role in STRUCTURAL for s in shapes.values()),
        struct_marks=tuple(marks),
        payloads=payloads,
        lead_checks=lead_checks,
        trimmed_before_calls=frozenset(
            id(s.content)
            for s in shapes.values()
            if s.ends_with_content and s.content.transform and s.content.transform not in UNWRITTEN
        ),
    )


def _struct_marks(messages: list[Msg], tokens: list[str]) -> list[tuple[str, bool, bool, str | None]]:
    """The literals that open a structure, which plain content must not spell.

    For each structural turn, each other shape of a role and each tool result: its first
    literal that the plain system, user and assistant turns do not write (and that is no token,
    nor only whitespace); a call's arguments only continue a call. Each comes with where it is
    refused: ``answers_only``, for an answer's parts (reasoning, calls: only a plain answer
    could be read instead); ``start_only``, when the answer a call belongs to writes no text
    before it (Llama 3.1 drops it), so only a plain answer beginning so is read instead; and
    the token it follows in its turn (None: none), since content that follows another token
    cannot spell it (harmony's ``<|start|>assistant to=functions.`` after ``<|start|>``, where
    every content follows ``<|message|>``).
    """
    if not any(m.role in STRUCTURAL for m in messages):
        return []
    plain = {
        lit.text
        for m in messages
        if m.rule == m.role and m.role in ("system", "user", ASSISTANT)
        for lit in walk(m.body)
        if isinstance(lit, Lit)
    }
    # Answers before calls that write their content (Qwen's "text\n<tool_call>..."): a call can
    # then follow any text of the answer.
    answered = any(
        m.role == ASSISTANT
        and m.rule != m.role
        and any(isinstance(s, Slot) and s.field == "content" and s.transform not in UNWRITTEN for s in walk(m.body))
        for m in messages
    )
    marks: list[tuple[str, bool, bool, str | None]] = []
    for m in messages:
        if m.role in (TOOL_ARGS, None) or not (m.rule != m.role or m.role in STRUCTURAL or m.role == "tool"):
            continue  # (a generic message, any role's, is no structure)
        for lit in (n for n in walk(m.body) if isinstance(n, Lit)):
            if lit.text.strip() and lit.text not in plain and not any(t in lit.text for t in tokens):
                part = m.role in (TOOL_CALL, REASONING) or (m.role == ASSISTANT and m.rule != m.role)
                first = isinstance(m.body, Seq) and m.body.items and m.body.items[0] is lit
                start_only = part and m.role == TOOL_CALL and not answered and bool(first)
                marks.append((lit.text, part, start_only, _opener(m.body, lit, tokens)))
                break
    return list(dict.fromkeys(marks))


def _opener(body: Node, target: Node, tokens: list[str]) -> str | None:
    """The token last written before ``target`` in a message's body (None: no token before it)."""
    last: str | None = None
    for n in walk(body):
        if n is target:
            return last
        if isinstance(n, Lit):
            found = [(n.text.rfind(t) + len(t), t) for t in tokens if t in n.text]
            last = max(found)[1] if found else last
    return last


def _json_shaped(start: Node, role: str, rules: dict[int, SlotRules]) -> None:
    """The content slots of ``role`` read only a JSON object (``{`` ... ``}``), as the format writes it."""
    for m in _messages(start):
        if m.role != role:
            continue
        for s in walk(m.body):
            if isinstance(s, Slot) and s.field == "content" and not s.transform:
                s.pattern = rules[id(s)].pattern = json_object(s.pattern)


def _fixed_length(start: Node, roles: tuple[str, ...], length: int, rules: dict[int, SlotRules]) -> None:
    """The content slots of ``roles`` read exactly ``length`` characters (the ids a template requires)."""
    for m in _messages(start):
        if m.role in roles:
            for s in walk(m.body):
                if isinstance(s, Slot) and s.field == "content":
                    s.pattern = rules[id(s)].pattern = slot_pattern(rules[id(s)], s.transform, length)


def _indexes(start: Node, roles: tuple[str, ...], rules: dict[int, SlotRules]) -> None:
    """The content slots of ``roles`` read only a number as ``str(int)`` writes it (``call-ids: index``)."""
    for m in _messages(start):
        if m.role in roles:
            for s in walk(m.body):
                if isinstance(s, Slot) and s.field == "content":
                    s.pattern = rules[id(s)].pattern = INDEX


def _refuse_bare_structures(
    start: Node, dfa: Dfa, shapes: dict[str, Shape], rules: dict[int, SlotRules], origin: str
) -> dict[int, list[tuple[Callable[[str], object], str]]]:
    """Bare turns that could begin where a structure written as its text alone begins.

    After Llama's tool definitions (``{...}`` then a blank line, repeated) comes the user's
    text, with nothing between: that text must not begin with what reads as one more
    definition. Its slot refuses that at its start (so every reader takes the definition), and
    the renderer reads back a content that begins so. Returns the checks by ``id(slot)``.
    """
    checks: dict[int, list[tuple[Callable[[str], object], str]]] = {}
    refused: dict[str, list[str]] = {}
    for trs in dfa.transitions:
        bare = [shapes[t.atom.rule] for t in trs if isinstance(t.atom, Msg) and t.atom.rule in shapes]
        bare = [s for s in bare if not s.lead]
        for structure in (s for s in bare if s.role in STRUCTURAL):
            text = _regex_text(structure.regex)
            for other in (s for s in bare if s is not structure and s.role not in STRUCTURAL):
                if text not in refused.setdefault(other.rule, []):
                    refused[other.rule].append(text)
    for rule, texts in refused.items():
        guard = "(?!" + "|".join(texts) + ")"
        for m in _messages(start):
            if m.rule != rule:
                continue
            for s in walk(m.body):
                if isinstance(s, Slot) and s.field == "content" and not s.pattern.startswith(guard):
                    s.pattern = rules[id(s)].pattern = guard + s.pattern
            shapes[rule] = _shape(m, origin)
        what = "one more tool definition (a JSON object, then a blank line)"
        checks[id(shapes[rule].content)] = [(re.compile(t).match, what) for t in texts]
    return checks


def _refuse_spelled_answers(start: Node, rules: dict[int, SlotRules]) -> tuple[str, ...]:
    """The names of tool calls whose call would spell a literal of an answer.

    Functionary writes an answer's text after ``>>>all\n`` and each call as ``>>>`` + its name
    + ``\n`` + its arguments: a call named ``all`` would read as the answer's text. The name
    slot refuses such a name (so every reader takes the answer), and the calls that have one
    are refused (``Payloads.refused_names``).
    """
    answers = {n.text for m in _messages(start) if m.role == ASSISTANT for n in walk(m.body) if isinstance(n, Lit)}
    names: set[str] = set()
    for m in _messages(start):
        if m.role != TOOL_CALL:
            continue
        pieces = _pieces(m.body, unwrap=True)
        k = next(i for i, p in enumerate(pieces) if not isinstance(p, str))
        lead = "".join(p for p in pieces[:k] if isinstance(p, str))
        slot = pieces[k][1]
        assert isinstance(slot, Slot)
        spelled = {
            (text[len(lead) : len(text) - len(after)], after)
            for text in answers
            for after in rules[id(slot)].after
            if lead and after and text.startswith(lead) and text.endswith(after) and len(text) > len(lead) + len(after)
        }
        if spelled:
            guard = "(?!" + "|".join(f"{re_escape(w)}(?:{re_escape(a)}|\\Z)" for w, a in sorted(spelled)) + ")"
            slot.pattern = rules[id(slot)].pattern = guard + slot.pattern
            names |= {w for w, _ in spelled}
    return tuple(sorted(names))


def _refuse_longer_siblings(
    start: Node, shapes: dict[str, Shape], rules: dict[int, SlotRules], origin: str
) -> dict[int, list[tuple[Callable[[str], object], str]]]:
    """A shape's content does not read what a longer shape of its role writes in its place.

    SmolLM3 writes a system turn with custom instructions, or the same turn with its default
    text where they would stand (a rule whose own content is never written): the instructions'
    slot refuses at its start the other rule's text from there to its end, so every reader
    takes the default's rule, and the renderer reads back a content that is that text.
    """
    checks: dict[int, list[tuple[Callable[[str], object], str]]] = {}
    for a in shapes.values():
        pieces = a.pieces
        k = next(i for i, p in enumerate(pieces) if not isinstance(p, str))
        if not pieces[k] or pieces[k][0] not in ("c", "?"):
            continue
        for b in shapes.values():
            if b is a or b.role != a.role or b.content.transform not in UNWRITTEN or not b.lead.startswith(a.lead):
                continue
            tail = "".join(p for p in b.pieces if isinstance(p, str))[len(a.lead) :]
            # What ``a`` writes after its content: the rest of its optional group, then its end.
            inner = pieces[k][2] if pieces[k][0] == "?" else []
            after = "".join(p for p in [*inner, *pieces[k + 1 :]] if isinstance(p, str))
            if not tail.endswith(after) or len(tail) == len(after):
                continue
            guard = "(?!" + re_escape(tail) + ")"
            for m in _messages(start):
                if m.rule != a.rule:
                    continue
                for s in walk(m.body):
                    if isinstance(s, Slot) and s.field == "content" and not s.pattern.startswith(guard):
                        s.pattern = rules[id(s)].pattern = guard + s.pattern
                shapes[a.rule] = _shape(m, origin)
            written = tail[: len(tail) - len(after)]  # the content that would write ``b``'s text
            check = re.compile(re_escape(written) + r"\Z").match
            checks.setdefault(id(shapes[a.rule].content), []).append((check, "the template's own default text"))
    return checks


def _regex_text(parts: list[RegexPart]) -> str:
    """A message's regex parts as one regex (slots as plain groups)."""
    out: list[str] = []
    for p in parts:
        if isinstance(p, str):
            out.append(p)
        else:
            out.append(f"(?:{p.pattern})" + ("?" if p.optional else ""))
    return "".join(out)


def _is_message_level_atom(n: Node) -> bool:
    return isinstance(n, (Lit, Msg, Gen)) or (isinstance(n, Slot) and n.field == "var")


def _date_slots(start: Node, date: tuple[str, str], rules: dict[int, SlotRules], origin: str) -> None:
    """A date slot reads exactly what strftime writes, nothing else."""
    terminal, fmt = date
    try:
        pattern = date_pattern(fmt)
    except ValueError as e:
        raise GrammarError(f"header 'date': {e}", source=origin) from None
    for s in walk(start):
        if isinstance(s, Slot) and s.field == "var" and s.terminal == terminal:
            s.pattern = pattern
            rules[id(s)].pattern = pattern


def _refuse_fixed_roles(start: Node, rules: dict[int, SlotRules], aliases: list[str]) -> tuple[list[str], list[str]]:
    """A ROLE slot does not read what another rule writes in its place.

    When a generic message (``_START ROLE ...``) and a message of a fixed role
    (``_START "model" ...``) begin alike, the ROLE slot refuses the fixed rule's
    text at that point, and the roles the template writes as another (aliases):
    otherwise both rules could read the turn, and a lexer could pick either.
    """
    generic = [m for m in _messages(start) if m.role is None]
    bodies = [m.body for m in _messages(start) if m.role is not None]
    all_words: set[str] = set()
    all_after: set[str] = set()
    bodies += [g.body for g in walk(start) if isinstance(g, Gen)]
    for msg in generic:
        pieces = _pieces(msg.body, unwrap=True)
        k = next(i for i, p in enumerate(pieces) if not isinstance(p, str))
        slot = pieces[k][1]
        if pieces[k][0] != "r":
            continue
        before = "".join(p for p in pieces[:k] if isinstance(p, str))
        words: set[str] = set()
        for body in bodies:
            lead = _leading_text(body)
            if lead.startswith(before) and len(lead) > len(before):
                words.add(lead[len(before) :])
        after = sorted({a for a in rules[id(slot)].after}, key=lambda a: (-len(a), a))
        all_words |= words
        all_after |= set(after)
        follows = "|".join(re_escape(a) if a else r"\Z" for a in after)
        refused = [re_escape(w) for w in sorted(words, key=lambda w: (-len(w), w))]
        refused += [f"{re_escape(a)}(?:{follows})" for a in aliases]
        if refused:
            guard = "(?!" + "|".join(refused) + ")"
            for s in walk(start):  # every occurrence of the ROLE slot shares one pattern
                if isinstance(s, Slot) and s.field == "role" and not s.pattern.startswith(guard):
                    s.pattern = guard + s.pattern
                    rules[id(s)].pattern = s.pattern
    return sorted(all_words), sorted(all_after)


def _leading_text(n: Node) -> str:
    """The literal text a body starts with, up to its first slot or optional part."""
    out: list[str] = []
    for p in _pieces(n, unwrap=False):
        if not isinstance(p, str):
            break
        out.append(p)
    return "".join(out)


def _default_pieces(n: Node, origin: str) -> list[Piece]:
    """The default system message: literals and variables, as render pieces."""
    if isinstance(n, Lit):
        return [n.text]
    if isinstance(n, Slot) and n.field == "var":
        return [("v", n)]
    if isinstance(n, Seq):
        return [p for item in n.items for p in _default_pieces(item, origin)]
    raise GrammarError("the default system rule must be literals and dates only", source=origin)


def _messages(start: Node) -> list[Msg]:
    """The message occurrences of the grammar, outside the generation rule."""
    out: list[Msg] = []

    def go(n: Node) -> None:
        if isinstance(n, Msg):
            out.append(n)
        elif isinstance(n, (Seq, Alt)):
            for item in n.items:
                go(item)
        elif isinstance(n, (Opt, Star)):
            go(n.item)

    go(start)
    return out


def _check_top(start: Node, origin: str) -> None:
    """Slots only inside messages; messages not nested in messages."""

    def go(n: Node) -> None:
        if isinstance(n, Slot) and n.field != "var":
            raise GrammarError(
                f"slot {n.terminal} is outside any message rule; name the rule after a role "
                "(or 'message' with a ROLE slot)",
                source=origin,
            )
        if isinstance(n, (Seq, Alt)):
            for item in n.items:
                go(item)
        elif isinstance(n, (Opt, Star)):
            go(n.item)
        elif isinstance(n, Msg):
            for inner in walk(n.body):
                if isinstance(inner, (Msg, Gen)):
                    raise GrammarError(f"message rule {n.rule!r} contains another message rule", source=origin)

    go(start)


def _generation(start: Node, origin: str) -> Node | None:
    """The generation prompt's body, or None when the grammar has no generation rule.

    ``generation:`` is literals (possibly none), literals around the ROLE slot
    (written "assistant"), or one message rule, meaning that message's turn
    opened for the assistant with no content yet. Each Gen node's body becomes
    the text it writes, so that the automata see exactly that.
    """
    bodies: list[Node] = []
    for g in (n for n in walk(start) if isinstance(n, Gen)):
        if isinstance(g.body, Msg):
            msg = g.body
            content = _content_slot(msg, origin)
            if msg.role not in (None, ASSISTANT):
                raise GrammarError(
                    f"the generation rule opens a {msg.role!r} turn; it must open the assistant's",
                    source=origin,
                )
            g.body = _cut(msg.body, content, keep=False) or Seq(())
        for n in walk(g.body):
            if isinstance(n, (Alt, Star, Opt, Msg, Gen)) or (isinstance(n, Slot) and n.field == "content"):
                raise GrammarError(
                    "the generation rule must be literals (possibly with the ROLE slot), nothing, or one "
                    "message rule (that turn opened empty)",
                    source=origin,
                )
        bodies.append(g.body)
    if len({repr(_pieces(b, unwrap=True)) for b in bodies}) > 1:
        raise GrammarError("the generation rule must write one text", source=origin)
    return bodies[0] if bodies else None


def _fixed_text(n: Node) -> str | None:
    """The text a body of literals writes; None if it holds a slot."""
    if isinstance(n, Lit):
        return n.text
    if isinstance(n, Seq):
        parts = [_fixed_text(i) for i in n.items]
        return None if any(p is None for p in parts) else "".join(p for p in parts if p is not None)
    return None


def _merge_occurrences(start: Node, rules: dict[int, SlotRules]) -> None:
    """One pattern per slot of a rule: the union of what every occurrence refuses.

    A rule used in several places is one message shape; its slots must read the
    same text wherever it stands. ROLE slots share one pattern across the format.
    """
    groups: dict[tuple[str, ...] | tuple[str, int], list[Slot]] = {}
    for msg in _messages(start):
        for k, slot in enumerate(s for s in walk(msg.body) if isinstance(s, Slot)):
            key = (
                ("role",) if slot.field == "role" else ("var", slot.terminal) if slot.field == "var" else (msg.rule, k)
            )
            groups.setdefault(key, []).append(slot)
    for g in (n for n in walk(start) if isinstance(n, Gen)):
        for slot in (s for s in walk(g.body) if isinstance(s, Slot)):
            groups.setdefault(("role",) if slot.field == "role" else ("var", slot.terminal), []).append(slot)
    for slot in _top_vars(start):
        groups.setdefault(("var", slot.terminal), []).append(slot)
    for slots in groups.values():
        merged = SlotRules()
        for s in slots:
            r = rules[id(s)]
            merged.anywhere += [x for x in r.anywhere if x not in merged.anywhere]
            merged.at_end += [x for x in r.at_end if x not in merged.at_end]
            merged.at_start += [x for x in r.at_start if x not in merged.at_start]
            merged.last += [x for x in r.last if x not in merged.last]
            merged.after += [x for x in r.after if x not in merged.after]
        merged.pattern = slot_pattern(merged, slots[0].transform)
        for s in slots:
            s.pattern = merged.pattern
            rules[id(s)] = merged


def _top_vars(start: Node) -> list[Slot]:
    out: list[Slot] = []

    def go(n: Node) -> None:
        if isinstance(n, Slot):
            out.append(n)
        elif isinstance(n, (Seq, Alt)):
            for item in n.items:
                go(item)
        elif isinstance(n, (Opt, Star)):
            go(n.item)

    go(start)
    return out


def _content_slot(msg: Msg, origin: str) -> Slot:
    contents = [s for s in walk(msg.body) if isinstance(s, Slot) and s.field == "content"]
    if len(contents) != 1:
        raise GrammarError(f"message rule {msg.rule!r} must hold exactly one content slot", source=origin)
    return contents[0]


def _check_message(msg: Msg, origin: str) -> None:
    """A message rule: one content slot, a ROLE slot iff its name is no role, no choices."""
    rule = msg.rule
    if msg.dropped:
        if msg.role is None or any(isinstance(n, (Lit, Slot)) for n in walk(msg.body)):
            raise GrammarError(
                f"message rule {rule!r} is a dropped message: it is named after a role and writes nothing",
                source=origin,
            )
        return
    content = _content_slot(msg, origin)
    roles = [s for s in walk(msg.body) if isinstance(s, Slot) and s.field == "role"]
    if msg.role is None and len(roles) != 1:
        raise GrammarError(f"message rule {rule!r} has no fixed role, so it needs one ROLE slot", source=origin)
    if msg.role is not None and roles:
        raise GrammarError(f"message rule {rule!r} is named after its role; it cannot have a ROLE slot", source=origin)
    for n in walk(msg.body):
        if isinstance(n, (Star, Alt)):
            raise GrammarError(
                f"message rule {rule!r} uses repetition or alternatives; write each shape of a "
                "message as its own rule (role__variant)",
                source=origin,
            )
        if isinstance(n, Opt) and not any(s is content for s in walk(n)):
            raise GrammarError(
                f"message rule {rule!r} has an optional part without the content slot; the "
                "renderer could not tell whether to write it",
                source=origin,
            )
    if not _writes_text(msg.body) and msg.role != ASSISTANT:
        # An answer before tool calls is the one message allowed to write nothing when empty:
        # the call after it marks where it stood (checked on the automaton: _check_unmarked).
        raise GrammarError(f"message rule {rule!r} can be empty; a message needs a literal", source=origin)


def _call_order(dfa: Dfa, origin: str) -> tuple[str, ...]:
    """The turns of one tool call in the order the grammar writes them: the first follows another
    turn (the answer), each next one follows the one before."""
    follows: dict[str | None, set[str]] = {}
    for trs in dfa.transitions:
        for t in trs:
            if isinstance(t.atom, Msg):
                for a in dfa.transitions[t.target]:
                    if isinstance(a.atom, Msg) and a.atom.role in CALL_PARTS:
                        before = t.atom.role if t.atom.role in CALL_PARTS else None
                        follows.setdefault(before, set()).add(a.atom.role)
    if not follows:
        return (TOOL_CALL, TOOL_ARGS)
    order: list[str] = []
    nxt = follows.get(None, set())
    while len(nxt) == 1 and (role := next(iter(nxt))) not in order:
        order.append(role)
        nxt = follows.get(role, set()) - set(order)
    if len(order) != len({r for rs in follows.values() for r in rs}):
        raise GrammarError(
            f"the parts of a tool call ({', '.join(sorted(follows[None]))}) are written in no one order", source=origin
        )
    return tuple(order)


def _always_followed(dfa: Dfa, first: str, then: str) -> bool:
    """Whether the grammar writes a turn of role ``then`` after every turn of role ``first``
    (literals between), so that each ``first`` belongs to the ``then`` after it."""
    found = False
    for trs in dfa.transitions:
        for t in trs:
            if not (isinstance(t.atom, Msg) and t.atom.role == first):
                continue
            found = True
            seen, stack = {t.target}, [t.target]
            while stack:
                s = stack.pop()
                if dfa.accepting[s]:
                    return False
                for a in dfa.transitions[s]:
                    if isinstance(a.atom, (Msg, Gen)):
                        if not isinstance(a.atom, Msg) or a.atom.role != then:
                            return False
                    elif a.target not in seen:
                        seen.add(a.target)
                        stack.append(a.target)
    return found


def _precedes(dfa: Dfa, shapes: dict[str, Shape], first: str, then: str) -> bool:
    """Whether the grammar writes a turn of role ``first`` right before one of role ``then``."""
    for trs in dfa.transitions:
        for t in trs:
            if isinstance(t.atom, Msg) and t.atom.role == first:
                after = dfa.transitions[t.target]
                if any(isinstance(a.atom, Msg) and a.atom.role == then for a in after):
                    return True
    return False


def _check_unmarked(dfa: Dfa, shapes: dict[str, Shape], origin: str) -> None:
    """An answer that can write nothing is followed only by what marks it: a tool call."""
    for trs in dfa.transitions:
        for t in trs:
            if not isinstance(t.atom, Msg) or t.atom.rule not in shapes or _writes_text(shapes[t.atom.rule].body):
                continue
            after = dfa.transitions[t.target]
            if (
                dfa.accepting[t.target]
                or not after
                or any(not (isinstance(a.atom, Msg) and a.atom.role == TOOL_CALL) for a in after)
            ):
                raise GrammarError(
                    f"message rule {t.atom.rule!r} can be empty; a message needs a literal (an answer with "
                    "none of its own must be followed by its tool calls only)",
                    source=origin,
                )


def _shape(msg: Msg, origin: str) -> Shape:
    content = _content_slot(msg, origin)
    roles = [s for s in walk(msg.body) if isinstance(s, Slot) and s.field == "role"]
    open_body = _cut(msg.body, content, keep=True) or Seq(())
    regex = _regex(msg.body)
    open_pieces = _pieces(open_body, unwrap=True)
    k = next(i for i, p in enumerate(regex) if isinstance(p, SlotPart) and p.field == "content")
    return Shape(
        rule=msg.rule,
        role=msg.role,
        body=msg.body,
        content=content,
        role_slot=roles[0] if roles else None,
        open_body=open_body,
        pieces=_pieces(msg.body),
        open_pieces=open_pieces,
        regex=regex,
        open_regex=_regex(open_body, unwrap=True),
        text_after_content=any(isinstance(p, str) and p not in ("", ")?") for p in regex[k + 1 :]),
        open_bare=not any(isinstance(p, str) and p for p in open_pieces),
        ends_with_content=_ends_with_content(msg.body, content),
        lead=_leading_text(msg.body),
        openable=msg.role != TOOL_DEF,
    )


def _ends_with_content(body: Node, content: Slot) -> bool:
    last = body.items[-1] if isinstance(body, Seq) and body.items else body
    return isinstance(last, Opt) and any(s is content for s in walk(last))


def _optional_content(shape: Shape) -> bool:
    """Whether the content slot stands in an optional part (empty content writes nothing there)."""
    return any(isinstance(n, Opt) and any(s is shape.content for s in walk(n)) for n in walk(shape.body))


def _writes_text(n: Node) -> bool:
    if isinstance(n, Lit):
        return True
    if isinstance(n, Seq):
        return any(_writes_text(i) for i in n.items)
    return False


def _cut(n: Node, content: Slot, keep: bool) -> Node | None:
    """The part of a message body before its content slot (with the slot when ``keep``).

    Optional groups holding the content are unwrapped: with content there, they are
    written. Returns None when ``content`` is not in ``n``.
    """
    if n is content:
        return n if keep else Seq(())
    if isinstance(n, Seq):
        kept: list[Node] = []
        for item in n.items:
            t = _cut(item, content, keep)
            if t is not None:
                kept.append(t)
                return Seq(tuple(kept))
            kept.append(item)
        return None
    if isinstance(n, Opt):
        return _cut(n.item, content, keep)
    return None


def _pieces(n: Node, unwrap: bool = False) -> list[Piece]:
    if isinstance(n, Lit):
        return [n.text]
    if isinstance(n, Slot):
        return [({"content": "c", "role": "r", "var": "v"}[n.field], n)]
    if isinstance(n, Seq):
        return [p for item in n.items for p in _pieces(item, unwrap)]
    if isinstance(n, Opt):
        inner = _pieces(n.item, unwrap)
        if unwrap:
            return inner
        slot = next(s for s in walk(n) if isinstance(s, Slot) and s.field == "content")
        if inner == [("c", slot)]:
            return inner  # an optional bare slot: writing "" is writing nothing
        return [("?", slot, inner)]
    raise AssertionError(n)


def _regex(n: Node, unwrap: bool = False) -> list[RegexPart]:
    """A message body as regex text, with its slots left as SlotPart for the scanner.

    The scanner turns each SlotPart into an atomic capture group: like Lark's
    lexer, it reads a slot's content as far as it goes and never gives part of
    it back to make the rest match.
    """
    parts: list[RegexPart] = []

    def go(n: Node) -> None:
        if isinstance(n, Lit):
            parts.append(re_escape(n.text))
        elif isinstance(n, Slot):
            parts.append(SlotPart(n.field, n.pattern, optional=False, name=n.terminal))
        elif isinstance(n, Seq):
            for i in n.items:
                go(i)
        elif isinstance(n, Opt):
            if unwrap:
                go(n.item)
            elif isinstance(n.item, Slot):
                parts.append(SlotPart(n.item.field, n.item.pattern, optional=True, name=n.item.terminal))
            else:
                parts.append("(?:")
                go(n.item)
                parts.append(")?")
        else:
            raise AssertionError(n)

    go(n)
    return parts
