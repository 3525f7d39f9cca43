"""The renderer: conversation shape -> plan -> one string build.

A conversation's *shape* is its role sequence, whether its last turn is open,
and whether a generation prompt follows. For each shape the planner finds the
path through the format's automaton that writes exactly those messages, and
flattens it into literal text and slot references; that plan is compiled into
one f-string expression (Python's fastest way to build a string) and cached, so
rendering a known shape costs about as much as a hand-written ``str.join``.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from ._compiler import Compiled, Piece
from ._errors import UnsupportedConversationError
from ._ir import Gen, Lit, Msg, Slot

__all__ = ["Plan", "Planner"]

_CODEGEN_LIMIT = 256  # longer conversations are joined piece by piece instead of compiled
_CACHE_LIMIT = 4096
TRANSFORMS: dict[str, Callable[[str], str]] = {"strip": str.strip, "lstrip": str.lstrip, "rstrip": str.rstrip}

Key = tuple[tuple[str, ...], bool, bool]


@dataclass
class Plan:
    """How to write one conversation shape."""

    pieces: list[Piece]  # literals and ("c"|"r", i) / ("?", i, pieces) references
    transforms: tuple[tuple[int, Callable[[str], str]], ...]
    contents: tuple[int, ...]  # message indices whose content is written
    slots: tuple[Slot, ...]  # the content slot each of those is written into
    roles: tuple[int, ...]  # message indices whose role is written (ROLE slots)
    open_check: Callable[[str], object] | None  # fullmatch of the open last turn's content
    build: Callable[[list[str], list[str]], str]


class Planner:
    def __init__(self, compiled: Compiled) -> None:
        self.c = compiled
        self.cache: dict[Key, Plan] = {}
        self.roles = sorted({s.role for s in compiled.shapes.values() if s.role is not None})
        self.generic = any(s.role is None for s in compiled.shapes.values())

    def plan(self, roles: list[str], open_last: bool, gen: bool) -> Plan:
        key = (tuple(roles), open_last, gen)
        plan = self.cache.get(key)
        if plan is None:
            plan = self._make(roles, open_last, gen)
            if len(roles) <= _CODEGEN_LIMIT:
                if len(self.cache) >= _CACHE_LIMIT:
                    self.cache.clear()
                self.cache[key] = plan
        return plan

    def _make(self, roles: list[str], open_last: bool, gen: bool) -> Plan:
        steps = self._path(roles, open_last, gen)
        pieces: list[Piece] = []
        transforms: list[tuple[int, Callable[[str], str]]] = []
        contents: list[int] = []
        slots: list[Slot] = []
        role_slots: list[int] = []
        open_check = None
        for step in steps:
            if step[0] == "lit":
                pieces.append(step[1])
            elif step[0] == "gen":
                # The prompt is fixed text, or a message rule's head written for the
                # entry the caller appends after the messages: ("assistant", "").
                if self.c.gen_rule is not None:
                    shape = self.c.shapes[self.c.gen_rule]
                    pieces += _bind(shape.head_pieces, len(roles))
                    if shape.role_slot is not None:
                        role_slots.append(len(roles))
                else:
                    pieces.append(self.c.gen_text or "")
            else:
                _, shape, i, is_open = step
                pieces += _bind(shape.open_pieces if is_open else shape.pieces, i)
                if shape.content.transform:
                    transforms.append((i, TRANSFORMS[shape.content.transform]))
                contents.append(i)
                slots.append(shape.content)
                if shape.role_slot is not None:
                    role_slots.append(i)
                if is_open:
                    open_check = re.compile(shape.content.pattern).fullmatch
        merged = _merge(pieces)
        build = _compile(merged) if len(roles) <= _CODEGEN_LIMIT else _interpret(merged)
        return Plan(merged, tuple(transforms), tuple(contents), tuple(slots), tuple(role_slots), open_check, build)

    def _path(self, roles: list[str], open_last: bool, gen: bool) -> list[tuple]:
        """The steps that write ``roles`` (then the generation prompt when ``gen``)."""
        dfa = self.c.dfa
        n = len(roles)
        start = (0, 0, False, False)  # state, messages written, generation prompt written, closed
        parent: dict[tuple, tuple | None] = {start: None}
        queue = deque([start])
        while queue:
            node = queue.popleft()
            state, i, g, closed = node
            if i == n and g == gen and (closed or dfa.accepting[state]):
                return _steps(parent, node)
            if closed:
                continue
            for t in dfa.transitions[state]:
                a = t.atom
                if isinstance(a, Lit):
                    nxt, step = (t.target, i, g, False), ("lit", a.text)
                elif isinstance(a, Msg):
                    if g or i >= n:
                        continue
                    shape = self.c.shapes[a.rule]
                    if shape.role is not None and shape.role != roles[i]:
                        continue
                    if shape.role is None and roles[i] in self.roles:
                        continue  # a role with its own rule is written by that rule
                    is_open = open_last and i == n - 1
                    nxt, step = (t.target, i + 1, g, is_open), ("msg", shape, i, is_open)
                elif isinstance(a, Gen):
                    if not gen or g or i != n:
                        continue
                    nxt, step = (t.target, i, True, False), ("gen",)
                else:  # pragma: no cover
                    raise AssertionError(a)
                if nxt not in parent:
                    parent[nxt] = (node, step)
                    queue.append(nxt)
        raise self._failure(roles, open_last, gen, parent)

    def _failure(self, roles: list[str], open_last: bool, gen: bool, seen: dict[tuple, tuple | None]) -> UnsupportedConversationError:
        c = self.c
        name = c.name
        header = c.spec.header
        reached = max(i for (_, i, _, _) in seen)
        nodes = [nd for nd in seen if nd[1] == reached and not nd[3]]
        expected: list[str] = []
        can_end = False
        for state, _, g, _ in nodes:
            can_end = can_end or c.dfa.accepting[state]
            for t in c.dfa.transitions[state]:
                if isinstance(t.atom, Msg) and not g:
                    role = c.shapes[t.atom.rule].role
                    label = "any role" if role is None else repr(role)
                    if label not in expected:
                        expected.append(label)
        n = len(roles)
        if reached < n:
            role = roles[reached]
            if not self.generic and role not in self.roles:
                known = ", ".join(repr(r) for r in self.roles)
                reason = header.get("role-error") or f"{name} has no {role!r} role"
                return UnsupportedConversationError(
                    f"{reason}: message {reached} has role {role!r} (the roles of {name}: {known})",
                    index=reached,
                    format=name,
                )
            want = " or ".join(expected) if expected else "no further message"
            if reached == 0:
                where = f"{name} cannot start a conversation with a {role!r} message"
            else:
                where = f"{name} expects {want} after message {reached - 1} ({roles[reached - 1]!r})"
            reason = header.get("order-error")
            text = f"{reason} ({where}; message {reached} is {role!r})" if reason else f"{where}, not {role!r} (message {reached})"
            return UnsupportedConversationError(text, index=reached, format=name)
        if gen and can_end:
            after = f"after a {roles[-1]!r} message" if roles else "for an empty conversation"
            return UnsupportedConversationError(
                f"{name} has no generation prompt {after}: the model's template cannot start an "
                "assistant turn there",
                index=n - 1 if n else None,
                format=name,
            )
        want = " or ".join(expected) if expected else "nothing"
        if n == 0:
            text = f"{name} cannot render an empty conversation; it needs {want} first"
        else:
            text = f"{name} cannot end a conversation after message {n - 1} ({roles[-1]!r}); it expects {want} next"
        if header.get("order-error"):
            text = f"{header['order-error']} ({text})"
        return UnsupportedConversationError(text, index=n - 1 if n else None, format=name)


def _steps(parent: dict[tuple, tuple | None], node: tuple) -> list[tuple]:
    steps: list[tuple] = []
    link = parent[node]
    while link is not None:
        node, step = link
        steps.append(step)
        link = parent[node]
    steps.reverse()
    return steps


def _bind(pieces: list[Piece], i: int) -> list[Piece]:
    """Shape pieces (slot references) -> plan pieces (message index references)."""
    out: list[Piece] = []
    for p in pieces:
        if isinstance(p, str):
            out.append(p)
        elif p[0] == "?":
            out.append(("?", i, _bind(p[2], i)))
        else:
            assert isinstance(p[1], Slot)
            out.append((p[0], i))
    return out


def _merge(pieces: list[Piece]) -> list[Piece]:
    out: list[Piece] = []
    for p in pieces:
        if isinstance(p, tuple) and p[0] == "?":
            p = ("?", p[1], _merge(p[2]))
        if isinstance(p, str) and out and isinstance(out[-1], str):
            out[-1] += p
        elif p != "":
            out.append(p)
    return out


def _fstring_text(s: str) -> str:
    escaped = s.encode("unicode_escape").decode("ascii").replace("'", "\\'")
    return escaped.replace("{", "{{").replace("}", "}}")


def _expr(p: Piece, literals: list[str]) -> str:
    kind = p[0]
    if kind == "c":
        return f"C[{p[1]}]"
    if kind == "r":
        return f"R[{p[1]}]"
    parts: list[str] = []
    for q in p[2]:
        if isinstance(q, str):
            literals.append(q)
            parts.append(f"L[{len(literals) - 1}]")
        else:
            parts.append(_expr(q, literals))
    return f"(({' + '.join(parts)}) if C[{p[1]}] else E)"


def _compile(pieces: list[Piece]) -> Callable[[list[str], list[str]], str]:
    literals: list[str] = []
    body = "".join(_fstring_text(p) if isinstance(p, str) else "{" + _expr(p, literals) + "}" for p in pieces)
    namespace: dict[str, object] = {}
    exec(f"def build(R, C, L=L, E=''):\n    return f'{body}'\n", {"L": tuple(literals)}, namespace)
    return namespace["build"]  # type: ignore[return-value]


def _interpret(pieces: list[Piece]) -> Callable[[list[str], list[str]], str]:
    def build(R: list[str], C: list[str]) -> str:
        out: list[str] = []
        _write(pieces, R, C, out)
        return "".join(out)

    return build


def _write(pieces: list[Piece], R: list[str], C: list[str], out: list[str]) -> None:
    for p in pieces:
        if isinstance(p, str):
            out.append(p)
        elif p[0] == "c":
            out.append(C[p[1]])
        elif p[0] == "r":
            out.append(R[p[1]])
        elif C[p[1]]:
            _write(p[2], R, C, out)
