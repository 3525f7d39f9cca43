"""The Lark LALR parser of a format, generated from its automaton.

Each automaton state ``i`` becomes a rule ``s<i>`` (the text read so far),
written left-linear so that the parser reduces one message at a time and its
stack stays flat; each message rule becomes ``m_<rule>`` and its open variant
(the turn cut right after its content) ``o_<rule>``. Messages are built by an
inline transformer: no parse tree is made. The scanner handles valid text; this
parser is the reference it is tested against and the source of positioned
errors.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from lark import Lark, Token, Transformer
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from ._compiler import ASSISTANT, Compiled
from ._errors import ParseError
from ._ir import UNWRITTEN, Gen, Lit, Msg, Node, Opt, Seq, Slot, walk
from ._message import Message, make_message
from ._patterns import date_check, re_escape, word_by_word
from ._render import ROLE_TRANSFORMS
from ._scanner import _reader

__all__ = ["LarkParser", "lark_grammar"]

_END = "$END"


class _NotCanonical(Exception):
    def __init__(self, pos: int, text: str, what: str = "role") -> None:
        self.pos = pos
        self.text = text
        self.what = what


class _EmptyOpen(Exception):
    def __init__(self, pos: int, role: str) -> None:
        self.pos = pos
        self.role = role


class _Names:
    """Terminal names of the generated grammar, and how to show each in an error."""

    def __init__(self) -> None:
        self.literals: dict[str, str] = {}  # text -> name
        self.slots: dict[str, str] = {}  # pattern -> name
        self.ends: dict[str, str] = {}  # text -> name of the literal read only where it ends the text
        self.shown: dict[str, str] = {_END: "end of text"}
        self.fields: dict[str, str] = {}

    def literal(self, text: str) -> str:
        if text not in self.literals:
            name = f"_L{len(self.literals)}"
            self.literals[text] = name
            self.shown[name] = json.dumps(text, ensure_ascii=False)
        return self.literals[text]

    def literal_at_end(self, text: str) -> str:
        """A literal read only where it ends the text (the generation prompt's last one)."""
        if text not in self.ends:
            name = f"_E{len(self.ends)}"
            self.ends[text] = name
            self.shown[name] = json.dumps(text, ensure_ascii=False)
        return self.ends[text]

    def slot(self, slot: Slot, after: list[str] | None = None, may_end: bool = True) -> str:
        # With ``after``, the slot's token must be followed by what can follow the slot (or
        # the end, when its turn may be left open): like the scanner, which reads a whole
        # message at once, the lexer then only hands the parser a token the message can
        # continue from.
        follows = "|".join(re_escape(a) for a in sorted(set(after or ()), key=lambda a: (-len(a), a)) if a)
        end = "|\\Z" if may_end or "" in (after or ()) else ""
        lookahead = f"(?=(?:{follows}){end})" if follows else ""
        key = f"{slot.field}:{word_by_word(slot.pattern)}{lookahead}"
        if key not in self.slots:
            name = f"S{len(self.slots)}"
            self.slots[key] = name
            self.shown[name] = slot.field
            self.fields[name] = slot.field
        return self.slots[key]


def _lark_string(text: str) -> str:
    out = []
    for c in text:
        o = ord(c)
        if c in '"\\':
            out.append("\\" + c)
        elif 0x20 <= o < 0x7F:
            out.append(c)
        elif o < 0x100:
            out.append(f"\\x{o:02x}")
        elif o < 0x10000:
            out.append(f"\\u{o:04x}")
        else:
            out.append(f"\\U{o:08x}")
    return '"' + "".join(out) + '"'


def lark_grammar(compiled: Compiled) -> tuple[str, _Names, dict[str, Callable[..., Any]]]:
    """The generated grammar's text, its terminal names, and its transformer callbacks."""
    names = _Names()
    dfa = compiled.parse_dfa
    rules: dict[str, list[str]] = {}
    contested = _contested_slots(compiled)
    finishes = dfa.finishing()
    callbacks: dict[str, Callable[..., Any]] = {}
    # The rules whose turn may be left open somewhere (it ends the document there).
    may_open = {
        t.atom.rule
        for ts in dfa.transitions
        for t in ts
        if isinstance(t.atom, Msg) and finishes[t.target] and compiled.shapes[t.atom.rule].openable
    }
    rule_of = {id(shape.content): rule for rule, shape in compiled.shapes.items()}

    def body(n: Node, unwrap: bool = False) -> str:
        if isinstance(n, Lit):
            return names.literal(n.text)
        if isinstance(n, Slot):
            if n.transform in UNWRITTEN:
                return ""  # never written: nothing to read
            if id(n) not in contested:
                return names.slot(n)
            return names.slot(n, compiled.rules[id(n)].after, may_end=rule_of.get(id(n)) in may_open)
        if isinstance(n, Seq):
            return " ".join(b for b in (body(i, unwrap) for i in n.items) if b)
        if isinstance(n, Opt):
            inner = body(n.item, unwrap)
            return inner if unwrap or not inner else f"[{inner}]"
        raise AssertionError(n)

    # Which states can be reached without the (invisible) empty generation prompt.
    reachable = {0}
    frontier = [0]
    edges: list[tuple[int, int, Node]] = []
    while frontier:
        s = frontier.pop()
        for t in dfa.transitions[s]:
            edges.append((s, t.target, t.atom))
            if t.target not in reachable:
                reachable.add(t.target)
                frontier.append(t.target)

    rules["s0"] = [""]
    callbacks["s0"] = lambda children: []
    start: list[str] = []
    seen_open: set[tuple[int, str]] = set()
    for s, target, atom in edges:
        if isinstance(atom, Lit):
            sym = names.literal(atom.text)
        elif isinstance(atom, Slot):  # a variable (a date): read, not returned
            sym = names.slot(atom)
        elif isinstance(atom, Gen):
            sym = "gen"
            if "gen" not in rules:
                # The prompt ends the text: its last literal is read only there, so that a turn
                # it begins (Functionary's ">>>", then a call's name) is not taken for it.
                leaves = [x for x in walk(atom.body) if isinstance(x, (Lit, Slot))]
                syms = [body(x) for x in leaves]
                if leaves and isinstance(leaves[-1], Lit):
                    syms[-1] = names.literal_at_end(leaves[-1].text)
                rules["gen"] = [" ".join(x for x in syms if x)]
                callbacks["gen"] = _generation_callback(compiled, names)
        else:
            assert isinstance(atom, Msg)
            shape = compiled.shapes[atom.rule]
            sym = f"m_{atom.rule}"
            if sym not in rules:
                rules[sym] = [body(shape.body)]
                callbacks[sym] = _message_callback(shape.role, shape.role_slot, shape.content, names, complete=True)
                rules[f"o_{atom.rule}"] = [body(shape.open_body, unwrap=True)]
                callbacks[f"o_{atom.rule}"] = _message_callback(
                    shape.role, shape.role_slot, shape.content, names, complete=False
                )
            # An open turn ends the document; one with nothing after its content reads as the
            # complete turn (the same text), so it has no rule of its own, unless the complete
            # turn cannot end the document (a call's arguments, before the answer's EOS): then
            # the text ends inside the answer, and the turn reads open, as the scanner reads it.
            opens = shape.text_after_content or not dfa.accepting[target]
            if (s, atom.rule) not in seen_open and finishes[target] and shape.openable and opens:
                seen_open.add((s, atom.rule))
                start.append(f"s{s} o_{atom.rule}")
        rules.setdefault(f"s{target}", []).append(f"s{s} {sym}")
        callbacks.setdefault(f"s{target}", _append)
    accepting = [s for s in sorted(reachable) if dfa.accepting[s]]
    start = [f"s{s}" for s in accepting] + start
    rules["start"] = start or ["s0"]
    callbacks["start"] = _finish

    if compiled.date_format:  # a date token must be a real date, as the scanner requires
        check = date_check(compiled.date_format)
        for name, cb in list(callbacks.items()):
            callbacks[name] = _checking_dates(cb, check, names)
    lines = [f"{name}: {' | '.join(alts)}" for name, alts in rules.items()]
    lines += [f"{name}: {_lark_string(text)}" for text, name in names.literals.items()]
    slots = list(names.slots.items())
    lines += [f"{name}.{len(slots) + 1}: /{re_escape(text)}\\Z/" for text, name in names.ends.items()]
    for k, (key, name) in enumerate(slots):
        pattern = key.split(":", 1)[1]  # re_escape wrote "/" as "\\/" already
        # Slots are tried before literals, as the scanner reads a slot first, and among
        # themselves in the order the scanner tries them (first used, first tried); with
        # priorities of their own, Lark does not fold a literal a slot could match into it.
        lines.append(f"{name}.{len(slots) - k}: /{pattern}/")
    return "\n".join(lines) + "\n", names, callbacks


def _contested_slots(compiled: Compiled) -> set[int]:
    """Content slots of message rules that begin with the same text as another rule's.

    Where two rules read the same opening and then a slot each (Gemma 3's user turn, and
    its system message written into that turn), Lark's lexer must pick one slot's token
    without seeing how the message goes on; those slots carry a lookahead of what follows.
    Elsewhere the plain pattern keeps errors pointing at where the text goes wrong.
    """
    by_opening: dict[str, list[Slot]] = {}
    for shape in compiled.shapes.values():
        pieces = shape.pieces
        k = next(i for i, p in enumerate(pieces) if not isinstance(p, str))
        # The kind of the slot's piece ("c" content, "?" content in an optional group, "r" role).
        opening = "".join(p for p in pieces[:k] if isinstance(p, str)) + ("|r" if pieces[k][0] == "r" else "|c")
        by_opening.setdefault(opening, []).append(shape.content)
    contested = {id(s) for slots in by_opening.values() if len(slots) > 1 for s in slots}
    # A content that ends its message is ended by what follows it: without that lookahead
    # the lexer could not hand it over before a slot read at the same place (DeepSeek-V3.1's
    # system text after BOS, and an answer written bare there).
    return contested | {id(s.content) for s in compiled.shapes.values() if not s.text_after_content}


def _generation_callback(compiled: Compiled, names: _Names) -> Callable[[list[Any]], Message]:
    """The generation prompt reads as an open assistant turn; a role it writes must be that."""
    slot = compiled.gen_role_slot
    written = ROLE_TRANSFORMS[slot.transform][0](ASSISTANT) if slot is not None and slot.transform else ASSISTANT

    def build(children: list[Any]) -> Message:
        for tok in children:
            if tok is not None and names.fields.get(tok.type) == "role" and str(tok) != written:
                raise _EmptyOpen(tok.start_pos, str(tok))
        return make_message(ASSISTANT, "", False)

    return build


def _checking_dates(
    callback: Callable[[list[Any]], Any], check: Callable[[str], bool], names: _Names
) -> Callable[[list[Any]], Any]:
    def checked(children: list[Any]) -> Any:
        for tok in children:
            if isinstance(tok, Token) and names.fields.get(tok.type) == "var" and not check(str(tok)):
                raise _NotCanonical(tok.start_pos or 0, str(tok), "date")
        return callback(children)

    return checked


def _append(children: list[Any]) -> list[Message]:
    acc: list[Message] = children[0]
    if len(children) > 1 and isinstance(children[1], Message):
        acc.append(children[1])
    return acc


def _finish(children: list[Any]) -> list[Message]:
    return _append(children)


def _message_callback(
    role: str | None, role_slot: Slot | None, content_slot: Slot, names: _Names, complete: bool
) -> Callable[[list[Any]], Message]:
    inverse = ROLE_TRANSFORMS[role_slot.transform] if role_slot is not None and role_slot.transform else None
    decode = _reader(content_slot)

    def build(children: list[Any]) -> Message:
        r, content = role, ""
        for tok in children:
            if tok is None:
                continue
            field = names.fields[tok.type]
            if field == "role":
                r = str(tok)
                if inverse is not None:
                    if inverse[0](inverse[1](r)) != r:
                        raise _NotCanonical(tok.start_pos, r)
                    r = inverse[1](r)
            elif field == "content":
                content = str(tok)
                if decode is not None:
                    value = decode(content)
                    if value is None:
                        raise _NotCanonical(tok.start_pos, content[:20], "content")
                    content = value
        assert r is not None
        return make_message(r, content, complete)

    return build


class LarkParser:
    def __init__(self, compiled: Compiled) -> None:
        text, self.names, callbacks = lark_grammar(compiled)
        self.grammar = text
        self.format = compiled.name
        self.literals = sorted(self.names.literals, key=len, reverse=True)
        methods = {name: staticmethod(fn) for name, fn in callbacks.items()}
        transformer = type("MessageBuilder", (Transformer,), methods)()
        self.lark = Lark(text, parser="lalr", lexer="contextual", transformer=transformer, maybe_placeholders=True)

    def parse(self, text: str) -> list[Message]:
        try:
            result: list[Message] = self.lark.parse(text)  # type: ignore[assignment]  # the transformer's output
        except UnexpectedInput as e:
            raise self._error(text, e) from None
        except _NotCanonical as e:
            raise ParseError(
                f"the {e.what} {e.text!r} is not written the way {self.format} writes it",
                text=text,
                pos=e.pos,
                format=self.format,
            ) from None
        except _EmptyOpen as e:
            raise ParseError(
                f"the text ends with an empty {e.role!r} turn; only the assistant's turn can be "
                "left open with no content (that is the generation prompt)",
                text=text,
                pos=e.pos,
                format=self.format,
            ) from None
        return result

    def _error(self, text: str, e: UnexpectedInput) -> ParseError:
        pos: int
        if isinstance(e, UnexpectedCharacters):
            pos, expected = e.pos_in_stream or 0, set(e.allowed)
        elif isinstance(e, UnexpectedToken):
            tok: Token = e.token
            pos = len(text) if tok.type == _END else (tok.start_pos or 0)
            expected = set(e.accepts or e.expected)
        elif isinstance(e, UnexpectedEOF):
            pos, expected = len(text), set(e.expected)
        else:  # pragma: no cover - Lark raises only the three above
            pos, expected = getattr(e, "pos_in_stream", 0) or 0, set()
        shown = sorted({self.names.shown.get(n, n) for n in expected}, key=_order)
        what = " or ".join(shown) if shown else "nothing more"
        message = f"expected {what}"
        if pos < len(text):
            message += f" before {self._found(text, pos)}"
        return ParseError(message, text=text, pos=pos, expected=shown, format=self.format)

    def _found(self, text: str, pos: int) -> str:
        for lit in self.literals:
            if text.startswith(lit, pos):
                return json.dumps(lit, ensure_ascii=False)
        return json.dumps(text[pos : pos + 12], ensure_ascii=False) + ("..." if len(text) > pos + 12 else "")


def _order(shown: str) -> tuple[int, str]:
    return (0 if shown.startswith('"') else 1, shown)
