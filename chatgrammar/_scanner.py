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
from ._ir import Gen, Lit, Msg
from ._message import BUILD, Message, make_message
from ._patterns import re_escape

__all__ = ["Scanner"]

_LIT, _MSG, _OPEN, _GEN = range(4)
_FOLD_DEPTH = 2  # literals folded into what follows them, per step

Alt = tuple[list[RegexPart], tuple[Any, ...]]

Alternation = tuple[Callable[[str, int], "re.Match[str] | None"], dict[int, tuple[Any, ...]]]


class Scanner:
    def __init__(self, compiled: Compiled) -> None:
        dfa = compiled.dfa
        empty_gen = compiled.gen_text == ""
        self.accepting = [
            dfa.accepting[s] or any(isinstance(t.atom, Gen) and empty_gen and dfa.accepting[t.target] for t in trs)
            for s, trs in enumerate(dfa.transitions)
        ]
        self.table: list[Alternation | None] = []
        self._compiled = compiled
        for state in range(len(dfa.transitions)):
            alts, opens, gens, lits = self._alternatives(state, 0)
            # Complete turns first; a turn left open or only opened is what remains at the
            # end; a bare literal last, when nothing that follows it matched with it.
            self.table.append(_alternation(alts + opens + gens + lits))
        # Link each action to the entry of the state it leads to: [match, actions, accepting].
        entries: list[list[Any] | None] = [
            [t[0], t[1], acc] if t else None for t, acc in zip(self.table, self.accepting, strict=True)
        ]
        for e in entries:
            if e is not None:
                e[1] = {g: (a[0], _end_entry(entries, a[1], self.accepting), *a[2:]) for g, a in e[1].items()}
        self.start = entries[0] if entries[0] is not None else _end_entry(entries, 0, self.accepting)

    def _alternatives(self, state: int, depth: int) -> tuple[list[Alt], list[Alt], list[Alt], list[Alt]]:
        """What may come next at ``state``: complete turns, open turns, prompts, literals.

        A literal is folded into the alternatives of the state it leads to (up to
        a small depth), so that a BOS or a separator costs no step of its own.
        """
        compiled = self._compiled
        alts: list[Alt] = []
        opens: list[Alt] = []
        gens: list[Alt] = []
        lits: list[Alt] = []
        for t in compiled.dfa.transitions[state]:
            a = t.atom
            if isinstance(a, Lit):
                lit = re_escape(a.text)
                if depth < _FOLD_DEPTH:
                    for group, out in zip(
                        self._alternatives(t.target, depth + 1), (alts, opens, gens, lits), strict=True
                    ):
                        out += [([lit, *parts], action) for parts, action in group]
                lits.append(([lit], (_LIT, t.target, None)))
            elif isinstance(a, Msg):
                shape = compiled.shapes[a.rule]
                alts.append((shape.regex, (_MSG, t.target, shape.role)))
                opens.append((shape.open_regex + [r"\Z"], (_OPEN, t.target, shape.role)))
            elif isinstance(a, Gen) and compiled.gen_rule is not None:
                shape = compiled.shapes[compiled.gen_rule]
                gens.append((shape.head_regex, (_GEN, t.target, shape.role)))
            elif isinstance(a, Gen) and compiled.gen_text:
                gens.append(([re_escape(compiled.gen_text)], (_GEN, t.target, ASSISTANT)))
        return alts, opens, gens, lits

    def scan(self, text: str) -> list[Message] | None:
        """The messages of ``text``, or None when it is not a document of the format."""
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
            kind, entry, role, role_group, content_group = entry[1][m.lastindex]
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
            if role is None:
                role = m[role_group]
                if kind == _GEN and role != ASSISTANT:
                    return None  # a turn opened empty for someone else is not a prompt
            if new is None:  # pragma: no cover - a pydantic without the slots make_message sets
                append(make_message(role, content, complete))
            else:  # make_message, inlined: this loop runs once per message of every document
                msg = new(Message)
                set_dict(msg, {"role": role, "content": content, "complete": complete})
                set_fields(msg, {"role", "content"} if complete else {"role", "content", "complete"})
                set_extra(msg, None)
                set_private(msg, None)
                append(msg)
            if kind == _OPEN:  # anchored at the end: an open turn ends the text, wherever it stands
                return out
            pos = m.end()
        return out if entry is None or entry[2] else None


def _end_entry(entries: list[list[Any] | None], state: int, accepting: list[bool]) -> list[Any] | None:
    """The entry of ``state``; a state with nowhere to go has a stand-in that only ends."""
    entry = entries[state]
    if entry is None and accepting[state]:
        return [_no_match, {}, True]
    return entry


def _no_match(text: str, pos: int) -> None:
    return None


_ATOMIC = sys.version_info >= (3, 11)


def _alternation(alts: list[Alt]) -> Alternation | None:
    """One regex for all alternatives; actions[g] for the alternative whose outer group is g."""
    if not alts:
        return None
    out: list[str] = []
    actions: dict[int, tuple[Any, ...]] = {}
    group = 0
    for parts, (kind, target, role) in alts:
        group += 1
        outer = group
        role_group = content_group = None
        out.append("|(" if out else "(")
        for part in parts:
            if isinstance(part, str):
                out.append(part)
                continue
            group += 1
            if part.field == "role":
                role_group = group
            else:
                content_group = group
            out.append(_atomic(part, group))
        out.append(")")
        actions[outer] = (kind, target, role, role_group, content_group)
    return re.compile("".join(out)).match, actions


def _atomic(part: SlotPart, group: int) -> str:
    """A capture group that, like a lexer's token, never gives back what it matched."""
    optional = "?" if part.optional else ""
    if _ATOMIC:
        return f"(?>({part.pattern}){optional})"
    # Python 3.10 has no atomic groups: capture in a lookahead (atomic by nature), then consume.
    name = f"g{group}"
    return f"(?=(?P<{name}>{part.pattern}){optional})(?({name})(?P={name}))"
