"""Grammar -> compiled format: message shapes, automaton, slot patterns, guard.

The compiled form is what the renderer, the scanner and the Lark parser share;
each derives its own machinery from it (``_render``, ``_scanner``, ``_larkparser``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ._automaton import Dfa, positions
from ._errors import GrammarError
from ._grammar import GrammarSpec
from ._ir import Alt, Gen, Lit, Msg, Node, Opt, Seq, Slot, Star, walk
from ._patterns import Guard, SlotRules, derive_slot_rules, guard_for, re_escape, slot_pattern, triggers_for

__all__ = ["ASSISTANT", "Compiled", "Piece", "RegexPart", "Shape", "SlotPart", "compile_spec"]

ASSISTANT = "assistant"  # the role the generation prompt opens


@dataclass(frozen=True)
class SlotPart:
    """A slot inside a message's regex: a capture group the scanner makes atomic."""

    field: str  # "role" or "content"
    pattern: str
    optional: bool  # the slot alone is optional: absent only when nothing matches


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
    head_body: Node  # the body cut right before the content: the turn opened empty
    pieces: list[Piece]
    open_pieces: list[Piece]
    head_pieces: list[Piece]
    regex: list[RegexPart]  # the body as regex text and slots (see ``_regex``)
    open_regex: list[RegexPart]
    head_regex: list[RegexPart]


@dataclass
class Compiled:
    spec: GrammarSpec
    dfa: Dfa
    shapes: dict[str, Shape]
    gen_text: str | None  # the generation prompt when it is fixed text ("" for none)
    gen_rule: str | None  # the message rule whose head is the generation prompt
    rules: dict[int, SlotRules]  # id(slot) -> what it refuses
    guards: dict[int, Guard]  # id(content slot) -> its cheap safety test
    role_pattern: str | None
    tokens: list[str] = field(default_factory=list)
    markers: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def has_gen(self) -> bool:
        return self.gen_text is not None or self.gen_rule is not None


def compile_spec(spec: GrammarSpec) -> Compiled:
    origin = spec.origin
    tokens = [t.strip() or t for t in spec.terminal_texts("tokens")]
    markers = [m.strip() or m for m in spec.terminal_texts("markers")]
    _check_top(spec.start, origin)
    for msg in _messages(spec.start):
        _check_message(msg, origin)
    gen_text, gen_rule = _generation(spec.start, origin)
    rules = derive_slot_rules(spec.start, tokens, markers, origin)
    _merge_occurrences(spec.start, rules)
    shapes: dict[str, Shape] = {}
    for msg in _messages(spec.start):
        if msg.rule not in shapes:
            shapes[msg.rule] = _shape(msg, origin)
    if gen_rule is not None and gen_rule not in shapes:
        raise GrammarError(f"the generation rule refers to {gen_rule!r}, which is not a message rule", source=origin)
    dfa = Dfa.build(positions(spec.start, lambda n: isinstance(n, (Lit, Msg, Gen))))
    role_slots = [s for s in walk(spec.start) if isinstance(s, Slot) and s.field == "role"]
    content_rules = {id(s.content): rules[id(s.content)] for s in shapes.values()}
    triggers = triggers_for(content_rules.values())
    return Compiled(
        spec=spec,
        dfa=dfa,
        shapes=shapes,
        gen_text=gen_text,
        gen_rule=gen_rule,
        rules=rules,
        guards={key: guard_for(r, triggers) for key, r in content_rules.items()},
        role_pattern=role_slots[0].pattern if role_slots else None,
        tokens=tokens,
        markers=markers,
    )


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
        if isinstance(n, Slot):
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


def _generation(start: Node, origin: str) -> tuple[str | None, str | None]:
    """The generation prompt: fixed text, or a message rule's head.

    ``generation:`` is either literals (possibly none), or one message rule,
    meaning that message's turn opened for the assistant with no content yet.
    The Gen node's body is replaced by that head, so that the automata see the
    text the prompt really writes.
    """
    texts: set[str] = set()
    rules: set[str] = set()
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
            rules.add(msg.rule)
        else:
            texts.add(_fixed_text(g.body, origin))
    if len(texts) + len(rules) > 1:
        raise GrammarError("the generation rule must write one text", source=origin)
    return next(iter(texts), None), next(iter(rules), None)


def _fixed_text(n: Node, origin: str) -> str:
    if isinstance(n, Lit):
        return n.text
    if isinstance(n, Seq):
        return "".join(_fixed_text(i, origin) for i in n.items)
    raise GrammarError(
        "the generation rule must be literals, nothing, or one message rule (that turn opened empty)",
        source=origin,
    )


def _merge_occurrences(start: Node, rules: dict[int, SlotRules]) -> None:
    """One pattern per slot of a rule: the union of what every occurrence refuses.

    A rule used in several places is one message shape; its slots must read the
    same text wherever it stands. ROLE slots share one pattern across the format.
    """
    groups: dict[tuple[str, ...] | tuple[str, int], list[Slot]] = {}
    for msg in _messages(start):
        for k, slot in enumerate(s for s in walk(msg.body) if isinstance(s, Slot)):
            key = ("role",) if slot.field == "role" else (msg.rule, k)
            groups.setdefault(key, []).append(slot)
    for g in (n for n in walk(start) if isinstance(n, Gen)):
        for slot in (s for s in walk(g.body) if isinstance(s, Slot)):
            groups.setdefault(("role",), []).append(slot)
    for slots in groups.values():
        merged = SlotRules()
        for s in slots:
            r = rules[id(s)]
            merged.anywhere += [x for x in r.anywhere if x not in merged.anywhere]
            merged.at_end += [x for x in r.at_end if x not in merged.at_end]
            merged.at_start += [x for x in r.at_start if x not in merged.at_start]
            merged.last += [x for x in r.last if x not in merged.last]
        merged.pattern = slot_pattern(merged, slots[0].transform)
        for s in slots:
            s.pattern = merged.pattern
            rules[id(s)] = merged


def _content_slot(msg: Msg, origin: str) -> Slot:
    contents = [s for s in walk(msg.body) if isinstance(s, Slot) and s.field == "content"]
    if len(contents) != 1:
        raise GrammarError(f"message rule {msg.rule!r} must hold exactly one content slot", source=origin)
    return contents[0]


def _check_message(msg: Msg, origin: str) -> None:
    """A message rule: one content slot, a ROLE slot iff its name is no role, no choices."""
    rule = msg.rule
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
    if not _writes_text(msg.body):
        raise GrammarError(f"message rule {rule!r} can be empty; a message needs a literal", source=origin)


def _shape(msg: Msg, origin: str) -> Shape:
    content = _content_slot(msg, origin)
    roles = [s for s in walk(msg.body) if isinstance(s, Slot) and s.field == "role"]
    open_body = _cut(msg.body, content, keep=True) or Seq(())
    head_body = _cut(msg.body, content, keep=False) or Seq(())
    return Shape(
        rule=msg.rule,
        role=msg.role,
        body=msg.body,
        content=content,
        role_slot=roles[0] if roles else None,
        open_body=open_body,
        head_body=head_body,
        pieces=_pieces(msg.body),
        open_pieces=_pieces(open_body, unwrap=True),
        head_pieces=_pieces(head_body, unwrap=True),
        regex=_regex(msg.body),
        open_regex=_regex(open_body, unwrap=True),
        head_regex=_regex(head_body, unwrap=True),
    )


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
        return [("c" if n.field == "content" else "r", n)]
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
            parts.append(SlotPart(n.field, n.pattern, optional=False))
        elif isinstance(n, Seq):
            for i in n.items:
                go(i)
        elif isinstance(n, Opt):
            if unwrap:
                go(n.item)
            elif isinstance(n.item, Slot):
                parts.append(SlotPart(n.item.field, n.item.pattern, optional=True))
            else:
                parts.append("(?:")
                go(n.item)
                parts.append(")?")
        else:
            raise AssertionError(n)

    go(n)
    return parts
