"""The fast parser: the format's automaton run with one Python regex per state.

At each state, one compiled alternation holds what may come next (literals,
whole messages, open final turns, the generation prompt); the alternative that
matched says which message to emit and which state follows. Messages are read
whole, so the loop runs once per message, not once per token. When the scanner
does not match, the Lark parser reads the text again to say where and why.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import sys

from ._compiler import ASSISTANT, Compiled, RegexPart, SlotPart
from ._ir import Gen, Lit, Msg
from ._message import Message, make_message
from ._patterns import re_escape

__all__ = ["Scanner"]

_LIT, _MSG, _OPEN, _GEN = range(4)

Alternation = tuple[Callable[[str, int], "re.Match[str] | None"], dict[int, tuple]]


class Scanner:
    def __init__(self, compiled: Compiled) -> None:
        dfa = compiled.dfa
        empty_gen = compiled.gen_text == ""
        self.accepting = [
            dfa.accepting[s] or any(isinstance(t.atom, Gen) and empty_gen and dfa.accepting[t.target] for t in trs)
            for s, trs in enumerate(dfa.transitions)
        ]
        self.table: list[Alternation | None] = []
        for trs in dfa.transitions:
            alts: list[tuple[list[RegexPart], tuple]] = []
            opens: list[tuple[list[RegexPart], tuple]] = []
            gens: list[tuple[list[RegexPart], tuple]] = []
            for t in trs:
                a = t.atom
                if isinstance(a, Lit):
                    alts.append(([re_escape(a.text)], (_LIT, t.target, None)))
                elif isinstance(a, Msg):
                    shape = compiled.shapes[a.rule]
                    alts.append((shape.regex, (_MSG, t.target, shape.role)))
                    opens.append((shape.open_regex + [r"\Z"], (_OPEN, t.target, shape.role)))
                elif isinstance(a, Gen) and compiled.gen_rule is not None:
                    shape = compiled.shapes[compiled.gen_rule]
                    gens.append((shape.head_regex, (_GEN, t.target, shape.role)))
                elif isinstance(a, Gen) and compiled.gen_text:
                    gens.append(([re_escape(compiled.gen_text)], (_GEN, t.target, ASSISTANT)))
            # Complete turns first; a turn left open or only opened is what remains at the end.
            self.table.append(_alternation(alts + opens + gens))

    def scan(self, text: str) -> list[Message] | None:
        """The messages of ``text``, or None when it is not a document of the format."""
        pos = 0
        end = len(text)
        state = 0
        out: list[Message] = []
        table = self.table
        while pos < end:
            entry = table[state]
            if entry is None:
                return None
            match, actions = entry
            m = match(text, pos)
            if m is None:
                return None
            kind, state, role, role_group, content_group = actions[m.lastindex]  # type: ignore[index]
            if kind == _MSG:
                out.append(make_message(role or m.group(role_group), m.group(content_group) or ""))
            elif kind == _OPEN:  # anchored at the end: an open turn ends the text, wherever it stands
                out.append(make_message(role or m.group(role_group), m.group(content_group), False))
                return out
            elif kind == _GEN:
                if (role or m.group(role_group)) != ASSISTANT:
                    return None  # a turn opened empty for someone else is not a prompt
                out.append(make_message(ASSISTANT, "", False))
            pos = m.end()
        return out if self.accepting[state] else None


_ATOMIC = sys.version_info >= (3, 11)


def _alternation(alts: list[tuple[list[RegexPart], tuple]]) -> Alternation | None:
    """One regex for all alternatives; actions[g] for the alternative whose outer group is g."""
    if not alts:
        return None
    out: list[str] = []
    actions: dict[int, tuple] = {}
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
