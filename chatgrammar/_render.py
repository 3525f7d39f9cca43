"""The renderer: conversation shape -> plan -> one string build.

A conversation's *shape* is its role sequence, whether its last turn is open,
and whether a generation prompt follows. For each shape the planner finds the
path through the format's automaton that writes exactly those messages, and
flattens it into literal text and slot references. That plan is compiled into
one Python function that trims what the template trims, runs the guard on every
content, and builds the text with one f-string (Python's fastest way to build a
string); it is cached per shape, so rendering a known shape costs about as much
as a hand-written ``str.join``.
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._compiler import ASSISTANT, Compiled, Piece
from ._errors import UnsafeContentError, UnsupportedConversationError
from ._ir import REASONING, STRUCTURAL, TOOL_RESULT_ID, Gen, Lit, Msg, Slot
from ._patterns import Guard
from ._structure import CALL_PARTS

__all__ = ["READERS", "ROLE_TRANSFORMS", "TRANSFORMS", "Plan", "Planner"]

_STRUCTURAL = frozenset(STRUCTURAL)
_CODEGEN_LIMIT = 256  # longer conversations are written piece by piece instead of compiled
_CACHE_LIMIT = 4096
TRANSFORMS: dict[str, Callable[[str], str]] = {
    "strip": str.strip,
    "lstrip": str.lstrip,
    "rstrip": str.rstrip,
    "strip_nl": lambda s: s.strip("\n"),
    "lstrip_nl": lambda s: s.lstrip("\n"),
    "rstrip_nl": lambda s: s.rstrip("\n"),
    "json": lambda s: json.dumps(s, ensure_ascii=False),
    "drop": lambda s: "",
    "empty": lambda s: "",
}
# Content transforms that lose nothing: how the parser reads the written text back.
READERS: dict[str, Callable[[str], Any]] = {"json": json.loads}
# Role transforms: how the template writes a role, and how the parser reads it back.
ROLE_TRANSFORMS: dict[str | None, tuple[Callable[[str], str], Callable[[str], str]]] = {
    "title": (str.title, str.lower),
}

Key = tuple[tuple[str, ...], bool, bool]
# Dropped messages put back, as a chain (earlier chain, (position, role)) that is shared, not copied.
_Chain = tuple[Any, tuple[int, str]] | None
DropLayer = dict[int, tuple[int, _Chain]]  # automaton state -> (messages put back, which)


def _chain_tuple(chain: _Chain) -> tuple[tuple[int, str], ...]:
    out = []
    while chain is not None:
        chain, item = chain
        out.append(item)
    return tuple(reversed(out))


Step = tuple[Any, ...]  # ("lit", text) | ("msg", shape, index, open) | ("gen",)
Search = tuple[int, int, bool, bool]  # automaton state, messages written, prompt written, closed
Parents = dict[Search, "tuple[Search, Step] | None"]
Build = Callable[[list[str], list[str], tuple[str, ...]], str]


@dataclass
class Plan:
    """How to write one conversation shape.

    ``fast(messages, variables)`` reads plain dicts (``fast_models`` Message
    objects) and trims, checks and writes in one go; it returns None when
    anything is unusual (a guard trips, a content is not a string, a Message is
    open) and the caller takes the general path. ``build`` writes roles and
    contents already read and trimmed.
    """

    pieces: list[Piece]  # literals, ("c", i), ("r", i, transform), ("v", k), ("?", i, pieces)
    transforms: tuple[tuple[int, Callable[[str], str]], ...]
    contents: tuple[int, ...]  # message indices whose content is written, in text order
    slots: tuple[Slot, ...]  # the content slot each of those is written into
    order: tuple[int, ...]  # message indices in text order; -1 is the default system message
    role_forms: dict[int, Callable[[str], str]]  # how a role the template transforms reads back
    readers: dict[int, Callable[[str], Any]]  # how a content written encoded (JSON) reads back
    open_check: Callable[[str], object] | None  # fullmatch of the open last turn's content
    fast: Callable[[list[Any], tuple[str, ...]], str | None]
    fast_models: Callable[[list[Any], tuple[str, ...]], str | None]
    build: Build
    open_bare: bool = False  # the open last turn is written as its bare content, with no literal of its own
    open_marked: bool = False  # the open last turn reads back open (text follows its content, or must)


class Planner:
    def __init__(self, compiled: Compiled, cache: dict[Key, Plan] | None = None) -> None:
        self.c = compiled
        self.cache: dict[Key, Plan] = {} if cache is None else cache
        self._dropped_back: dict[Key, tuple[tuple[int, str], ...]] = {}
        self.has_dropped = any(
            isinstance(t.atom, Msg) and t.atom.dropped for trs in compiled.dfa.transitions for t in trs
        )
        self.roles = sorted({s.role for s in compiled.shapes.values() if s.role is not None})
        self.generic = any(s.role is None for s in compiled.shapes.values())
        self.role_match = re.compile(compiled.role_pattern).fullmatch if compiled.role_pattern else None
        header = compiled.spec.header
        self.default_if = header.get("default-system-if", "not-first")
        self.finishes = compiled.dfa.finishing()
        # The roles that have a rule of their own at each automaton state.
        self.own_roles: dict[int, set[str]] = {
            s: {t.atom.role for t in trs if isinstance(t.atom, Msg) and t.atom.role is not None}
            for s, trs in enumerate(compiled.dfa.transitions)
        }
        words, after = compiled.role_refused, compiled.role_after or [""]
        aliases = set(header.get("role-alias", {}))

        def refused(role: str) -> bool:
            """A role the generic rule cannot write: a part of a message (reasoning, a tool call...),
            another rule's text at that place, or an alias."""
            return role in _STRUCTURAL or role in aliases or any((role + a).startswith(w) for w in words for a in after)

        self.refused = refused
        self.system_at = header.get("system-at", "first")

    def plan(self, roles: list[str], open_last: bool, gen: bool, default: bool = False) -> Plan:
        """How to write a conversation of this shape; ``default``: the template's default system
        message is written first (in place of an empty one the caller gave), whatever follows."""
        key: Any = (tuple(roles), open_last, gen) if not default else (tuple(roles), open_last, gen, True)
        plan = self.cache.get(key)
        if plan is None:
            plan = self._make(roles, open_last, gen, default)
            if len(roles) <= _CODEGEN_LIMIT:
                if len(self.cache) >= _CACHE_LIMIT:
                    self.cache.clear()
                self.cache[key] = plan
        return plan

    def dropped_back(self, roles: tuple[str, ...], open_last: bool, gen: bool) -> tuple[tuple[int, str], ...]:
        """Where a reading needs messages the template writes nothing for, and their roles.

        A text read back without them may be a conversation the template refuses
        (two user turns where a dropped system message stood between): the reader
        puts each back, empty, where the fewest are needed. normalize applies the
        same rule, so the two cannot disagree. Returns (position, role) pairs.
        """
        key = (roles, open_last, gen)
        found = self._dropped_back.get(key)
        if found is None:
            layer = self.drop_layer()
            for i, role in enumerate(roles[:-1]):
                layer = self.drop_layer(layer, i, role)
            last = roles[-1] if roles else None
            found = self.drop_finish(layer, len(roles) - 1 if roles else 0, last, open_last, gen)
            if len(roles) <= _CODEGEN_LIMIT and len(self._dropped_back) < _CACHE_LIMIT:
                self._dropped_back[key] = found
        return found

    # The search for dropped messages goes message by message: a layer holds, for each automaton
    # state reachable after the first i messages, the fewest dropped messages put back on the way
    # there (and where). A stream extends its layer by one message at a time, so that it asks the
    # same question as parse at each message without searching from the beginning (which would
    # make a stream of n messages cost n^2).

    def drop_layer(self, layer: DropLayer | None = None, i: int = 0, role: str = "") -> DropLayer:
        """The layer before any message (no arguments), or after ``layer`` reads message ``i`` of ``role``."""
        if layer is None:
            return self._drop_closure({0: (0, None)}, 0, True)
        return self._drop_closure(self._drop_read(layer, role), i + 1, True)

    def drop_finish(
        self, layer: DropLayer, i: int, role: str | None, open_last: bool, gen: bool
    ) -> tuple[tuple[int, str], ...]:
        """The dropped messages put back in a conversation that ends with message ``i`` of ``role``
        (or, with ``role`` None, ends after ``layer``): the fewest, or none when it cannot be read."""
        dfa = self.c.dfa
        goal: list[tuple[int, _Chain]]
        if role is not None:
            read = self._drop_read(layer, role)
            if open_last:  # the last turn is left open: nothing more is written
                goal = [] if gen else [v for s, v in read.items() if self.finishes[s]]
                return _chain_tuple(min(goal, key=lambda v: v[0])[1]) if goal else ()
            layer = self._drop_closure(read, i + 1, True)
            i += 1
        if gen:
            prompted: DropLayer = {}
            for state, value in layer.items():
                for t in dfa.transitions[state]:
                    if isinstance(t.atom, Gen) and (t.target not in prompted or prompted[t.target][0] > value[0]):
                        prompted[t.target] = value
            layer = self._drop_closure(prompted, i, False)
        goal = [v for s, v in layer.items() if dfa.accepting[s]]
        return _chain_tuple(min(goal, key=lambda v: v[0])[1]) if goal else ()

    def _drop_read(self, layer: DropLayer, role: str) -> DropLayer:
        out: DropLayer = {}
        for state, value in layer.items():
            for t in self.c.dfa.transitions[state]:
                a = t.atom
                if not isinstance(a, Msg) or a.dropped:
                    continue
                r = self.c.shapes[a.rule].role
                if (r is None or r == role) and (t.target not in out or out[t.target][0] > value[0]):
                    out[t.target] = value
        return out

    def _drop_closure(self, layer: DropLayer, i: int, dropped: bool) -> DropLayer:
        """``layer`` with what literals (free) and dropped messages (one each) reach from it."""
        transitions = self.c.dfa.transitions
        best = dict(layer)
        queue = deque(layer)
        while queue:
            state = queue.popleft()
            cost, chain = best[state]
            for t in transitions[state]:
                a = t.atom
                if isinstance(a, (Lit, Slot)):
                    extra, added = 0, chain
                elif dropped and isinstance(a, Msg) and a.dropped:
                    extra, added = 1, (chain, (i, a.role or "system"))
                else:
                    continue
                if t.target not in best or best[t.target][0] > cost + extra:
                    best[t.target] = (cost + extra, added)
                    (queue.append if extra else queue.appendleft)(t.target)
        return best

    def text_order(self, roles: list[str], default: bool = False) -> list[int]:
        """Message indices in the order the template writes them; -1: the default system message."""
        n = len(roles)
        order = list(range(n))
        if self.c.default_system is not None:
            if (
                default
                or (self.default_if == "no-system" and "system" not in roles)
                or (self.default_if != "no-system" and n and roles[0] != "system")
            ):
                order.insert(0, -1)
        if self.system_at == "last-user" and n >= 2 and roles[0] == "system":
            last = self._last_message(roles)
            order = order[1:last] + [0] + order[last:]
        return order

    def _last_message(self, roles: list[str]) -> int:
        """Where the turns of the last message begin: its reasoning, its calls and its result's
        id (before or after it, as the grammar writes them) are turns of that message."""
        result_id_first = self.c.payloads.result_id_first
        after = {*CALL_PARTS} if result_id_first else {*CALL_PARTS, TOOL_RESULT_ID}
        before = {REASONING, TOOL_RESULT_ID} if result_id_first else {REASONING}
        k = len(roles) - 1
        while k > 1 and roles[k] in after:
            k -= 1
        while k > 1 and roles[k - 1] in before:
            k -= 1
        return k

    def _make(self, roles: list[str], open_last: bool, gen: bool, default: bool = False) -> Plan:
        c = self.c
        if self.system_at == "last-user" and "system" in roles[1:]:
            # Only a first system message is moved to the last turn; anywhere else it breaks the order.
            i = roles.index("system", 1)
            reason = c.spec.header.get("order-error") or f"{c.name} takes a system message only first"
            raise UnsupportedConversationError(f"{reason} (message {i} is a system message)", index=i, format=c.name)
        order = self.text_order(roles, default)
        path_roles = ["system" if i == -1 else roles[i] for i in order]
        try:
            steps = self._path(path_roles, open_last, gen)
        except UnsupportedConversationError as e:
            if order == list(range(len(roles))):
                raise
            raise _in_given_order(e, order) from None
        pieces: list[Piece] = []
        transforms: list[tuple[int, Callable[[str], str]]] = []
        contents: list[int] = []
        slots: list[Slot] = []
        open_check = None
        open_bare = open_marked = False
        role_forms: dict[int, Callable[[str], str]] = {}
        readers: dict[int, Callable[[str], Any]] = {}
        dropped: set[int] = set()
        for step in steps:
            if step[0] == "lit":
                pieces.append(step[1])
            elif step[0] == "drop":
                dropped.add(order[step[1]])
            elif step[0] == "var":
                pieces.append(("v", c.variables.index(step[1].terminal)))
            elif step[0] == "gen":
                # The prompt is fixed text, or a message rule's head written for the
                # entry the caller appends after the messages: ("assistant", "").
                pieces += _bind(c.gen_pieces or [], len(roles), c)
            else:
                _, shape, j, is_open = step
                i = order[j]
                if is_open and shape.content.transform in READERS:
                    raise UnsupportedConversationError(
                        f"{c.name} writes the content of a {roles[i]!r} message encoded, so that turn "
                        "cannot be left open",
                        index=i,
                        format=c.name,
                    )
                if i == -1:
                    pieces += _bind_default(shape.pieces, c)
                    continue
                pieces += _bind(shape.open_pieces if is_open else shape.pieces, i, c)
                if shape.content.transform:
                    transforms.append((i, TRANSFORMS[shape.content.transform]))
                    if shape.content.transform in READERS:
                        readers[i] = READERS[shape.content.transform]
                contents.append(i)
                slots.append(shape.content)
                if shape.role_slot is not None:
                    self._check_role(i, _role_transform(shape.role_slot)(roles[i]))
                    if shape.role_slot.transform:
                        role_forms[i] = _role_reading(shape.role_slot.transform)
                if is_open:
                    open_check = re.compile(shape.content.pattern).fullmatch
                    # It reads back open when text follows its content, or when the text cannot
                    # end after it complete (Functionary's arguments, then ">>>" or the turn's end).
                    ends = shape.text_after_content or "" not in c.rules[id(shape.content)].after
                    open_bare, open_marked = shape.open_bare, ends
        merged = _merge(pieces)
        guards = dict(zip(contents, (c.guards[id(s)] for s in slots), strict=True))
        if len(roles) <= _CODEGEN_LIMIT and not open_last:
            fast, fast_models, build = _compile(merged, dict(transforms), guards, len(roles))
        else:  # long conversations, and open turns (which need the open-turn check), take the general path
            build = _interpret(merged)
            fast = fast_models = _decline
        return Plan(
            merged,
            tuple(transforms),
            tuple(contents),
            tuple(slots),
            tuple(i for i in order if i not in dropped),
            role_forms,
            readers,
            open_check,
            fast,
            fast_models,
            build,
            open_bare,
            open_marked,
        )

    def _check_role(self, i: int, role: str) -> None:
        """A role written into the text must not change the structure around it."""
        if role and self.role_match is not None and self.role_match(role):
            return
        found = None
        for d in self.c.rules[id(_role_slot(self.c))].anywhere:
            k = role.find(d)
            if k != -1 and (found is None or k < found[1]):
                found = (d.strip() or d, k + max(d.find(d.strip()), 0))
        delim, offset = found if found else ("", 0)
        what = f"contains {delim!r} at offset {offset}" if found else "is empty"
        raise UnsafeContentError(
            f"message {i} has a role that {what}; {self.c.name} writes the role into the text, "
            "so it must be a plain name without newlines or delimiters",
            index=i,
            offset=offset,
            delimiter=delim,
            format=self.c.name,
        )

    def _path(self, roles: list[str], open_last: bool, gen: bool) -> list[Step]:
        """The steps that write ``roles`` (then the generation prompt when ``gen``)."""
        dfa = self.c.dfa
        n = len(roles)
        own = self.own_roles
        refused = self.refused
        finishes = self.finishes
        start: Search = (0, 0, False, False)
        parent: Parents = {start: None}
        queue = deque([start])
        while queue:
            node = queue.popleft()
            state, i, g, closed = node
            # An open last turn must be the one that ends the document: after it, only
            # literals may stand before the end.
            if i == n and g == gen and (finishes[state] if closed else dfa.accepting[state]):
                return _steps(parent, node)
            if closed:
                continue
            for t in dfa.transitions[state]:
                a = t.atom
                nxt: Search
                step: Step
                if isinstance(a, Lit):
                    nxt, step = (t.target, i, g, False), ("lit", a.text)
                elif isinstance(a, Slot):  # a variable: written from the render options
                    nxt, step = (t.target, i, g, False), ("var", a)
                elif isinstance(a, Msg) and a.dropped:  # the template writes nothing for it
                    if g or i >= n or a.role != roles[i] or (open_last and i == n - 1):
                        continue
                    nxt, step = (t.target, i + 1, g, False), ("drop", i)
                elif isinstance(a, Msg):
                    if g or i >= n:
                        continue
                    shape = self.c.shapes[a.rule]
                    if shape.role is not None and shape.role != roles[i]:
                        continue
                    if shape.role is None and (roles[i] in own[state] or refused(roles[i])):
                        continue  # a role with its own rule here is written by that rule
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
        raise self._failure(roles, gen, parent)

    def _failure(self, roles: list[str], gen: bool, seen: Parents) -> UnsupportedConversationError:
        c = self.c
        name = c.name
        header = c.spec.header
        reached = max(i for (_, i, _, _) in seen)
        expected: list[str] = []
        can_end = False
        for state, i, g, closed in seen:
            if i != reached or closed:
                continue
            can_end = can_end or c.dfa.accepting[state]
            for t in c.dfa.transitions[state]:
                if isinstance(t.atom, Msg) and not g:
                    role = t.atom.role
                    label = "any role" if role is None else repr(role)
                    if label not in expected:
                        expected.append(label)
        n = len(roles)
        if reached < n:
            role = roles[reached]
            if not self.generic and role not in self.roles:
                # The parts of a message (a call, its arguments, the tool definitions) are not roles
                # a caller gives.
                known = ", ".join(repr(r) for r in self.roles if r not in _STRUCTURAL)
                reason = header.get("role-error") or f"{name} has no {role!r} role"
                return UnsupportedConversationError(
                    f"{reason} (message {reached} is {role!r}; the roles of {name}: {known})",
                    index=reached,
                    format=name,
                )
            want = " or ".join(expected) if expected else "no further message"
            if reached == 0:
                where = f"{name} cannot start a conversation with a {role!r} message"
            else:
                where = f"{name} expects {want} after message {reached - 1} ({roles[reached - 1]!r})"
            reason = header.get("order-error")
            text = (
                f"{reason} ({where}; message {reached} is {role!r})"
                if reason
                else f"{where}, not {role!r} (message {reached})"
            )
            return UnsupportedConversationError(text, index=reached, format=name)
        if gen and can_end:
            after = f"after message {n - 1} ({roles[-1]!r})" if roles else "for an empty conversation"
            return UnsupportedConversationError(
                f"{name} has no generation prompt {after}: its template writes none there",
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


def _in_given_order(e: UnsupportedConversationError, order: list[int]) -> UnsupportedConversationError:
    """``e`` about the messages as given, not in the order the template writes them (with its
    default system message, or a system message moved)."""

    def back(m: re.Match[str]) -> str:
        k = int(m[1])
        i = order[k] if k < len(order) else k
        return "the default system message" if i == -1 else f"message {i}"

    index = e.index
    if index is not None and index < len(order):
        index = order[index] if order[index] != -1 else None
    return UnsupportedConversationError(re.sub(r"\bmessage (\d+)", back, str(e)), index=index, format=e.format)


def _role_slot(c: Compiled) -> Slot:
    return next(s.role_slot for s in c.shapes.values() if s.role_slot is not None)


def _steps(parent: Parents, node: Search) -> list[Step]:
    steps: list[Step] = []
    link = parent[node]
    while link is not None:
        node, step = link
        steps.append(step)
        link = parent[node]
    steps.reverse()
    return steps


def _bind(pieces: list[Piece], i: int, c: Compiled) -> list[Piece]:
    """Shape pieces (slot references) -> plan pieces (message and variable indices)."""
    out: list[Piece] = []
    for p in pieces:
        if isinstance(p, str):
            out.append(p)
        elif p[0] == "?":
            out.append(("?", i, _bind(p[2], i, c)))
        elif p[0] == "v":
            out.append(("v", c.variables.index(p[1].terminal)))
        elif p[0] == "r":
            out.append(("r", i, p[1].transform))
        else:
            out.append(("c", i))
    return out


def _bind_default(pieces: list[Piece], c: Compiled) -> list[Piece]:
    """A system message's pieces, written with the format's default system message."""
    default = _bind(c.default_system or [], -1, c)
    out: list[Piece] = []
    for p in pieces:
        if isinstance(p, str):
            out.append(p)
        elif p[0] == "c":
            out += default
        elif p[0] == "r":
            out.append(_role_transform(p[1])("system"))
        elif p[0] == "v":
            out.append(("v", c.variables.index(p[1].terminal)))
        elif p[0] == "?" and default:
            out += _bind_default(p[2], c)
    return out


def _role_reading(transform: str) -> Callable[[str], str]:
    """How a role reads back once the template has written it (title-cased, then read lower)."""
    write, read = ROLE_TRANSFORMS[transform]

    def reading(role: str) -> str:
        return read(write(role))

    return reading


def _role_transform(slot: Slot) -> Callable[[str], str]:
    return ROLE_TRANSFORMS[slot.transform][0] if slot.transform else str


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


class _Source:
    """Constants the generated functions refer to by index (never by their text)."""

    def __init__(self) -> None:
        self.values: list[object] = []

    def ref(self, value: object) -> str:
        for k, v in enumerate(self.values):
            if v is value or (type(v) is type(value) and v == value):
                return f"K[{k}]"
        self.values.append(value)
        return f"K[{len(self.values) - 1}]"


def _fstring(pieces: list[Piece], k: _Source, content: Callable[[int], str], role: Callable[[int], str]) -> str:
    def expr(p: tuple[Any, ...]) -> str:
        if p[0] == "c":
            return content(p[1])
        if p[0] == "r":
            return f"{k.ref(ROLE_TRANSFORMS[p[2]][0])}({role(p[1])})" if p[2] else role(p[1])
        if p[0] == "v":
            return f"V[{p[1]}]"
        parts = [k.ref(q) if isinstance(q, str) else expr(q) for q in p[2]]
        return f"(({' + '.join(parts)}) if {content(p[1])} else E)"

    return "".join(_fstring_text(p) if isinstance(p, str) else "{" + expr(p) + "}" for p in pieces)


def _compile(
    pieces: list[Piece], transforms: dict[int, Callable[[str], str]], guards: dict[int, Guard], n: int
) -> tuple[
    Callable[[list[Any], tuple[str, ...]], str | None], Callable[[list[Any], tuple[str, ...]], str | None], Build
]:
    """Generate ``fast`` (from dicts), ``fast_models`` (from Message objects) and ``build``.

    Message ``n``, when referenced, is the ("assistant", "") entry a generation
    prompt written from a message rule is written for: a constant, not a read.
    """
    k = _Source()

    def fast(read: Callable[[int, str], str], name: str, complete: str) -> list[str]:
        lines = [f"def {name}(M, V, K=K, E=''):"]
        if complete and n:
            lines.append(f"    if not ({' and '.join(complete.format(i) for i in range(n))}):\n        return None")
        for i in sorted(guards):
            lines.append(f"    c{i} = {read(i, 'content')}" if i < n else f"    c{i} = ''")
        # Contents that are not strings go to the general path, which says what is wrong.
        types = " or ".join(f"type(c{i}) is not str" for i in sorted(guards) if i < n)
        if types:
            lines.append(f"    if {types}:\n        return None")
        for i in sorted(guards):
            if transforms.get(i):
                lines.append(f"    c{i} = {k.ref(transforms[i])}(c{i})")
        checks: list[str] = []
        for i, g in sorted(guards.items()):
            checks += [f"{k.ref(t)} in c{i}" for t in g.triggers]
            if g.prefixes:
                checks.append(f"c{i}.startswith({k.ref(g.prefixes)})")
            if g.suffixes:
                checks.append(f"c{i}.endswith({k.ref(g.suffixes)})")
            if g.required:
                checks.append(f"not c{i}")
        if checks:
            lines.append(f"    if {' or '.join(checks)}:\n        return None")

        def role(i: int) -> str:
            return read(i, "role") if i < n else k.ref(ASSISTANT)

        lines.append(f"    return f'{_fstring(pieces, k, lambda i: f'c{i}', role)}'")
        return lines

    source = fast(lambda i, field: f'M[{i}]["{field}"]', "fast", "")
    source += fast(lambda i, field: f"M[{i}].{field}", "fast_models", "M[{}].complete")
    build_body = _fstring(pieces, k, lambda i: f"C[{i}]", lambda i: f"R[{i}]")
    source.append(f"def build(R, C, V, K=K, E=''):\n    return f'{build_body}'")
    namespace: dict[str, Any] = {}
    exec("\n".join(source) + "\n", {"K": tuple(k.values)}, namespace)
    return namespace["fast"], namespace["fast_models"], namespace["build"]


def _decline(messages: list[Any], variables: tuple[str, ...]) -> None:
    return None


def _interpret(pieces: list[Piece]) -> Build:
    def build(R: list[str], C: list[str], V: tuple[str, ...]) -> str:
        out: list[str] = []
        _write(pieces, R, C, V, out)
        return "".join(out)

    return build


def _write(pieces: list[Piece], R: list[str], C: list[str], V: tuple[str, ...], out: list[str]) -> None:
    for p in pieces:
        if isinstance(p, str):
            out.append(p)
        elif p[0] == "c":
            out.append(C[p[1]])
        elif p[0] == "r":
            out.append(ROLE_TRANSFORMS[p[2]][0](R[p[1]]) if p[2] else R[p[1]])
        elif p[0] == "v":
            out.append(V[p[1]])
        elif C[p[1]]:
            _write(p[2], R, C, V, out)
