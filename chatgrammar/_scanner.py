"""The fast parser: the format's automaton run with one Python regex per state.

At each state, one compiled alternation holds what may come next (literals,
whole messages, open final turns, the generation prompt); the alternative that
matched says which message to emit and which state follows. Messages are read
whole, so the loop runs once per message, not once per token. When the scanner
does not match, the Lark parser reads the text again to say where and why.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from typing import Any

from ._compiler import ASSISTANT, Compiled, RegexPart, SlotPart
from ._ir import STRUCTURAL, Gen, Lit, Msg, Slot
from ._message import BUILD, NONE_EXTRAS, Message, make_message
from ._patterns import date_check, re_escape
from ._render import READERS, ROLE_TRANSFORMS, TRANSFORMS

__all__ = ["Scanner"]

_LIT, _MSG, _OPEN, _GEN = range(4)
_FOLD_DEPTH = 2  # literals folded into what follows them, per step

# An alternative: its regex parts, its action, and how many of its parts are literals
# folded in before the message's own text (the positioned reader marks where that starts).
Alt = tuple[list[RegexPart], tuple[Any, ...], int]

# [match, actions]: ``match`` compiles the alternation on its first call and puts the compiled
# matcher in its place (a format has many states, and a text visits few of them).
Alternation = list[Any]


class Scanner:
    def __init__(self, compiled: Compiled) -> None:
        dfa = compiled.parse_dfa
        self.accepting = list(dfa.accepting)
        self.table: list[Alternation | None] = []
        self._compiled = compiled
        self._finishes = dfa.finishing()
        # The states from which a structural turn (reasoning, a call, a tool definition) is read.
        self._structural_states = {
            s
            for s, trs in enumerate(dfa.transitions)
            if any(isinstance(t.atom, Msg) and compiled.shapes[t.atom.rule].role in STRUCTURAL for t in trs)
        }
        for state in range(len(dfa.transitions)):
            turns, gens, lits = self._alternatives(state, 0)
            # The generation prompt first, where it ends the text (a turn it begins, as
            # Functionary's ">>>" begins a call, is not read for it); then each turn complete,
            # then left open (only at the end of the text), in grammar order; a bare literal
            # last, when nothing that follows it matched with it.
            self.table.append(_alternation(gens + turns + lits, compiled.date_format))
        # Link each action to the entry of the state it leads to: [match, actions, accepting].
        entries: list[list[Any] | None] = [
            [*t, acc] if t else None for t, acc in zip(self.table, self.accepting, strict=True)
        ]
        for e in entries:
            if e is not None:
                e[0] = _compiling(e, e[0].pattern)
        for e in entries:
            if e is not None:
                e[1] = {g: (a[0], _end_entry(entries, a[1], self.accepting), *a[2:]) for g, a in e[1].items()}
        self.start = entries[0] if entries[0] is not None else _end_entry(entries, 0, self.accepting)

    def _alternatives(self, state: int, depth: int) -> tuple[list[Alt], list[Alt], list[Alt]]:
        """What may come next at ``state``: complete turns, open turns, prompts, literals.

        A literal is folded into the alternatives of the state it leads to (up to
        a small depth), so that a BOS or a separator costs no step of its own.
        """
        compiled = self._compiled
        turns: list[Alt] = []
        gens: list[Alt] = []
        lits: list[Alt] = []
        for t in compiled.parse_dfa.transitions[state]:
            a = t.atom
            if isinstance(a, (Lit, Slot)):  # a literal, or a variable (a date)
                lit: RegexPart = (
                    re_escape(a.text) if isinstance(a, Lit) else SlotPart("var", a.pattern, False, a.terminal)
                )
                if depth < _FOLD_DEPTH:
                    for group, out in zip(self._alternatives(t.target, depth + 1), (turns, gens, lits), strict=True):
                        out += [([lit, *parts], action, folded + 1) for parts, action, folded in group]
                lits.append(([lit], (_LIT, t.target, None, None, None), 0))
            elif isinstance(a, Msg):
                shape = compiled.shapes[a.rule]
                inv = _inverse(shape.role_slot)
                reader = _reader(shape.content)
                regex = shape.regex
                if not shape.text_after_content:
                    # Nothing of the message's own ends its content: what may follow it must
                    # (DeepSeek's system text, then a user turn or the end; not an answer), and
                    # written empty, not what its optional part would have begun with
                    # (Functionary's answer, ">>>all\n" + text, before a call's ">>>").
                    after = compiled.rules[id(shape.content)].after
                    regex = [*regex, *_not_followed_by(shape.pieces), _followed_by(after)]
                elif shape.ends_with_content and (leads := self._leads(t.target)) is not None:
                    # Written empty it has no literal after its head: what follows tells it apart
                    # (an answer before its tool calls, from a plain answer).
                    regex = [*regex, _followed_by(leads)]
                complete = (regex, (_MSG, t.target, shape.role, inv, reader), 0)
                if self._finishes[t.target] and shape.openable:  # an open turn is the one that ends the document
                    opened = (shape.open_regex + [r"\Z"], (_OPEN, t.target, shape.role, inv, reader), 0)
                    # When literal text follows the content, the open turn cannot be read as a
                    # complete one; try it first, since the complete turn may match a prefix of
                    # it (an optional group holding the content, left out).
                    turns += [opened, complete] if shape.text_after_content else [complete, opened]
                else:
                    turns.append(complete)
            elif isinstance(a, Gen):
                role = None if compiled.gen_role_slot is not None else ASSISTANT
                action = (_GEN, t.target, role, _inverse(compiled.gen_role_slot), None)
                gens.append(([*compiled.gen_regex, r"\Z"], action, 0))
        if compiled.structural:
            turns = self._specific_first(turns)
        return turns, gens, lits

    def _leads(self, state: int) -> list[str] | None:
        """The literal texts the steps from ``state`` start with ("" for the end of the text).

        None when a step starts with no literal of its own (a bare content, a date, a prompt
        that writes nothing): then what follows cannot be told by its first characters.
        """
        compiled = self._compiled
        out: list[str] = [""] if compiled.parse_dfa.accepting[state] else []
        for t in compiled.parse_dfa.transitions[state]:
            a = t.atom
            lead = (
                a.text
                if isinstance(a, Lit)
                else compiled.shapes[a.rule].lead
                if isinstance(a, Msg)
                else compiled.gen_text
                if isinstance(a, Gen)
                else None
            )
            if not lead:
                return None
            out.append(lead)
        return out

    def _specific_first(self, turns: list[Alt]) -> list[Alt]:
        """Turns ordered so that a structure is read before plain content could swallow it.

        A turn with a longer literal head first (a tool result before the user turn it is
        written in); then one that leads into a structural turn (the answer before its tool
        calls, the system message before the tool definitions). Otherwise grammar order.
        """
        structural = self._structural_states

        def key(alt: Alt) -> tuple[int, int]:
            parts, action, folded = alt
            lead = 0
            for p in parts[folded:]:
                if not isinstance(p, str) or p in ("(?:", ")?"):
                    break
                lead += len(p)
            return (-lead, 0 if action[1] in structural else 1)

        return sorted(turns, key=key)

    def scan(self, text: str, found: dict[str, str] | None = None) -> list[Message] | None:
        """The messages of ``text``, or None when it is not a document of the format.

        ``found``, when given, receives the text of each variable (a date) by slot name.
        """
        pos = 0
        end = len(text)
        entry = self.start
        out: list[Message] = []
        append = out.append
        new, set_dict, set_fields, set_extra, set_private = BUILD or (None,) * 5
        while pos < end:
            if entry is None:
                return None
            m = entry[0](text, pos)
            if m is None:
                return None
            kind, entry, role, role_group, content_group, inverse, reader, variables = entry[1][m.lastindex]
            for group, name, check in variables:  # a date: only as strftime writes one
                if not check(m[group]):
                    return None
                if found is not None:
                    found[name] = m[group]
            if kind == _LIT:
                pos = m.end()
                continue
            complete = True
            if kind == _MSG:
                content = m[content_group] or ""
            elif kind == _OPEN:
                content, complete = m[content_group], False
            else:
                content, complete = "", False
            if reader is not None:  # written encoded (JSON): read it back, as the template wrote it
                content = reader(content)
                if content is None:
                    return None
            if role is None:
                role = m[role_group]
                if inverse is not None:  # the template wrote the role transformed (title-cased)
                    written, role = role, inverse[1](role)
                    if inverse[0](role) != written:
                        return None  # not how the template writes any role
                if kind == _GEN and role != ASSISTANT:
                    return None  # a turn opened empty for someone else is not a prompt
            if new is None:  # pragma: no cover - a pydantic without the slots make_message sets
                append(make_message(role, content, complete))
            else:  # make_message, inlined: this loop runs once per message of every document
                msg = new(Message)
                set_dict(msg, {"role": role, "content": content, "complete": complete, **NONE_EXTRAS})
                set_fields(msg, {"role", "content"} if complete else {"role", "content", "complete"})
                set_extra(msg, None)
                set_private(msg, None)
                append(msg)
            if kind == _OPEN:  # anchored at the end: an open turn ends the text, wherever it stands
                return out
            pos = m.end()
        return out if entry is None or entry[2] else None


def _not_followed_by(pieces: list[Any]) -> list[str]:
    """A lookahead refusing the literal an optional part holding the content begins with."""
    for p in pieces:
        if isinstance(p, tuple) and p[0] == "?" and p[2] and isinstance(p[2][0], str):
            return [f"(?!{re_escape(p[2][0])})"]
    return []


def _followed_by(after: list[str]) -> str:
    """A lookahead for any of ``after`` (the empty text: the end)."""
    ordered = sorted(set(after), key=lambda a: (-len(a), a))
    return "(?=" + "|".join(re_escape(a) if a else r"\Z" for a in ordered) + ")"


def _reader(slot: Slot) -> Callable[[str], str | None] | None:
    """For content the template writes encoded: the decoder, None for text that is not
    exactly how the template would have written a string."""
    if slot.transform not in READERS:
        return None
    read, write = READERS[slot.transform], TRANSFORMS[slot.transform]

    def decode(text: str) -> str | None:
        try:
            value = read(text)
        except ValueError:
            return None
        return value if isinstance(value, str) and write(value) == text else None

    return decode


def _inverse(slot: Slot | None) -> tuple[Callable[[str], str], Callable[[str], str]] | None:
    return ROLE_TRANSFORMS[slot.transform] if slot is not None and slot.transform else None


def _end_entry(entries: list[list[Any] | None], state: int, accepting: list[bool]) -> list[Any] | None:
    """The entry of ``state``; a state with nowhere to go has a stand-in that only ends."""
    entry = entries[state]
    if entry is None and accepting[state]:
        return [_no_match, {}, True]
    return entry


def _no_match(text: str, pos: int) -> None:
    return None


_ATOMIC = sys.version_info >= (3, 11)


def _alternation(alts: list[Alt], date_format: str | None = None, marks: bool = False) -> Alternation | None:
    """One regex for all alternatives; actions[g] for the alternative whose outer group is g.

    With ``marks``, each action ends with two more groups: an empty group where the
    message's own text starts (after folded literals), and one where its content
    starts (or would, when the content is absent).
    """
    if not alts:
        return None
    out: list[str] = []
    actions: dict[int, tuple[Any, ...]] = {}
    group = 0
    for parts, (kind, target, role, inverse, reader), folded in alts:
        group += 1
        outer = group
        role_group = content_group = None
        variables: list[tuple[int, str, Callable[[str], bool]]] = []
        out.append("|(" if out else "(")
        own_mark = None
        content_marks: list[int] = []
        before_content = _parts_before_content(parts) if marks else 0
        for k, part in enumerate(parts):
            if marks and k == folded:
                group += 1
                own_mark = group
                out.append("()")
            if (
                marks
                and k < before_content
                and (part == "(?:" or isinstance(part, SlotPart) and part.field == "content")
            ):
                group += 1
                content_marks.append(group)
                out.append("()")
            if isinstance(part, str):
                out.append(part)
                continue
            group += 1
            if part.field == "role":
                role_group = group
            elif part.field == "content":
                content_group = group
            else:
                variables.append((group, part.name, date_check(date_format or "")))
            out.append(_atomic(part, group))
        if marks and own_mark is None:  # nothing of its own (an empty generation prompt)
            group += 1
            own_mark = group
            out.append("()")
        out.append(")")
        actions[outer] = (kind, target, role, role_group, content_group, inverse, reader, tuple(variables))
        if marks:
            actions[outer] += (own_mark, tuple(content_marks))
    holder: Alternation = [None, actions]
    holder[0] = _compiling(holder, "".join(out))
    return holder


def _compiling(holder: list[Any], pattern: str) -> Callable[[str, int], re.Match[str] | None]:
    """A matcher that compiles ``pattern`` when first called and puts the compiled one in ``holder[0]``."""

    def match(text: str, pos: int) -> re.Match[str] | None:
        compiled = re.compile(pattern).match
        holder[0] = compiled  # concurrent first calls compile twice, harmlessly (re caches)
        return compiled(text, pos)

    match.pattern = pattern  # type: ignore[attr-defined]
    return match


def _parts_before_content(parts: list[RegexPart]) -> int:
    """The index just past the content slot (len(parts) when there is none)."""
    for k, part in enumerate(parts):
        if isinstance(part, SlotPart) and part.field == "content":
            return k + 1
    return len(parts)


def _atomic(part: SlotPart, group: int) -> str:
    """A capture group that, like a lexer's token, never gives back what it matched."""
    optional = "?" if part.optional else ""
    if _ATOMIC:
        return f"(?>({part.pattern}){optional})"
    # Python 3.10 has no atomic groups: capture in a lookahead (atomic by nature), then consume.
    name = f"g{group}"
    return f"(?=(?P<{name}>{part.pattern}){optional})(?({name})(?P={name}))"
