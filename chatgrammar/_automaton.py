"""Position automata over the IR.

``positions(root, atoms)`` is the Glushkov construction: every atom occurrence is
a position, and ``follow[p]`` lists the positions that may come right after
``p``, in grammar order. ``Dfa`` determinises the message-level automaton (atoms:
literals, messages and the generation prompt); the scanner, the generated Lark
grammar and the renderer all walk the same Dfa.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from ._ir import Alt, Gen, Lit, Msg, Node, Opt, Seq, Slot, Star

__all__ = ["Dfa", "Positions", "Transition", "positions", "symbol_key"]

INIT = -1  # the position before the first atom


@dataclass
class Positions:
    atoms: list[Node]
    first: list[int]
    last: set[int]
    nullable: bool
    follow: list[list[int]]

    def successors(self, p: int) -> list[int]:
        return self.first if p == INIT else self.follow[p]

    def is_last(self, p: int) -> bool:
        return (p == INIT and self.nullable) or p in self.last


def positions(root: Node, is_atom: Callable[[Node], bool]) -> Positions:
    """The Glushkov position automaton of ``root``; ``is_atom`` says where to stop descending."""
    atoms: list[Node] = []
    follow: list[list[int]] = []

    def add_follow(src: list[int], dst: list[int]) -> None:
        for p in src:
            f = follow[p]
            for q in dst:
                if q not in f:
                    f.append(q)

    def go(n: Node) -> tuple[bool, list[int], list[int]]:
        if is_atom(n):
            atoms.append(n)
            follow.append([])
            p = len(atoms) - 1
            return False, [p], [p]
        if isinstance(n, Seq):
            nullable = True
            first: list[int] = []
            last: list[int] = []
            for item in n.items:
                n2, f2, l2 = go(item)
                add_follow(last, f2)
                if nullable:
                    first = _union(first, f2)
                last = _union(last, l2) if n2 else l2
                nullable = nullable and n2
            return nullable, first, last
        if isinstance(n, Alt):
            nullable, first, last = False, [], []
            for item in n.items:
                n2, f2, l2 = go(item)
                nullable = nullable or n2
                first = _union(first, f2)
                last = _union(last, l2)
            return nullable, first, last
        if isinstance(n, Opt):
            _, f2, l2 = go(n.item)
            return True, f2, l2
        if isinstance(n, Star):
            _, f2, l2 = go(n.item)
            add_follow(l2, f2)
            return True, f2, l2
        if isinstance(n, (Msg, Gen)):
            return go(n.body)
        if isinstance(n, (Lit, Slot)):
            raise AssertionError(f"{n} must be an atom at this level")
        raise AssertionError(f"unknown node {n!r}")

    nullable, first, last = go(root)
    return Positions(atoms=atoms, first=first, last=set(last), nullable=nullable, follow=follow)


def _union(a: list[int], b: list[int]) -> list[int]:
    return a + [x for x in b if x not in a]


def symbol_key(atom: Node) -> Hashable:
    """Atoms with the same key read and write the same text."""
    if isinstance(atom, Lit):
        return ("lit", atom.text)
    if isinstance(atom, Msg):
        return ("msg", atom.rule)
    if isinstance(atom, Gen):
        return ("gen",)
    raise AssertionError(atom)


@dataclass
class Transition:
    atom: Node  # a representative atom (all atoms of one key are alike)
    target: int


@dataclass
class Dfa:
    """Deterministic automaton over message-level symbols.

    ``states[i]`` is the set of positions of state ``i`` (state 0 holds INIT),
    ``transitions[i]`` its outgoing transitions in grammar order.
    """

    pos: Positions
    states: list[frozenset[int]] = field(default_factory=list)
    transitions: list[list[Transition]] = field(default_factory=list)
    accepting: list[bool] = field(default_factory=list)

    def finishing(self) -> list[bool]:
        """The states from which literals alone reach the end: where an open turn may stop."""
        finishes = list(self.accepting)
        changed = True
        while changed:
            changed = False
            for s, trs in enumerate(self.transitions):
                if not finishes[s] and any(isinstance(t.atom, Lit) and finishes[t.target] for t in trs):
                    finishes[s] = changed = True
        return finishes

    @classmethod
    def build(cls, pos: Positions) -> Dfa:
        dfa = cls(pos)
        index: dict[frozenset[int], int] = {}

        def state_of(ps: frozenset[int]) -> int:
            if ps not in index:
                index[ps] = len(dfa.states)
                dfa.states.append(ps)
                dfa.transitions.append([])
                dfa.accepting.append(any(pos.is_last(p) for p in ps))
            return index[ps]

        state_of(frozenset([INIT]))
        i = 0
        while i < len(dfa.states):
            groups: dict[Hashable, list[int]] = {}
            for p in sorted(dfa.states[i]):
                for q in pos.successors(p):
                    members = groups.setdefault(symbol_key(pos.atoms[q]), [])
                    if q not in members:
                        members.append(q)
            for members in groups.values():
                target = state_of(frozenset(members))
                dfa.transitions[i].append(Transition(pos.atoms[members[0]], target))
            i += 1
        return dfa
