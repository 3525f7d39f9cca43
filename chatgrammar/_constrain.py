r"""Grammars of one assistant answer, for constrained decoding.

``assistant_grammar(fmt)`` writes the language of what a model may generate after a
format's generation prompt: content text, then exactly one of the format's stop
strings (``Format.stop``). The content holds none of the format's special tokens
(``Format.tokens``) and none of its stop strings anywhere, and none of its plain-text
markers (``Format.markers``) at the start of a line (the start of the text, or right
after ``"\n"``): the same rules ``render`` applies to content, so that what the model
writes reads back as one assistant message.

Two dialects:

- ``"lark"``: llguidance's Lark dialect (the grammar engine of vLLM, SGLang and
  llama.cpp's ``--grammar`` with ``%llguidance``). The whole answer is one terminal; its
  content is written with llguidance's regex operators ``&`` (and) and ``~`` (not):
  ``/(?s:.*)/ & ~/(?s:.*)(?:T1|T2)(?s:.*)/ & ...``.
- ``"gbnf"``: llama.cpp's GBNF, which has neither operator: the content is the
  complement automaton of the forbidden strings (Aho-Corasick), one right-linear rule
  per state.

>>> print(assistant_grammar("chatml"))
%llguidance {}
// chatml: one assistant answer: content, then one stop string
start: ANSWER
ANSWER: CONTENT STOP
CONTENT: /(?s:.*)/ & ~/(?s:.*)(?:<\|im_start\|>|<\|im_end\|>)(?s:.*)/
STOP: /<\|im_end\|>/
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ._format import Format
from ._registry import get_format

__all__ = ["assistant_grammar"]

DIALECTS = ("lark", "gbnf")

_ANY = "(?s:.*)"
_GBNF_ANY = "[\\x00-\\U0010FFFF]"
_RX_META = frozenset("\\.+*?()|[]{}^$#&-~/")  # backslash-escaped in /.../ (not < >: \< is a word boundary)


def assistant_grammar(fmt: Format | str, *, dialect: str = "lark", special_tokens: bool = False) -> str:
    r"""A grammar of one assistant answer in ``fmt``, as a model generates it after the generation prompt.

    The answer is content, then exactly one of ``fmt.stop`` (a format without stop
    strings: content to the end of generation). Content holds none of ``fmt.tokens``
    and ``fmt.stop``, and no ``fmt.markers`` at the start of a line.

    ``dialect`` is ``"lark"`` (llguidance's Lark dialect; its regex operators ``&`` and
    ``~`` are llguidance's) or ``"gbnf"`` (llama.cpp). The stop strings are matched as
    text. With real tokenizers a stop such as ``<|im_end|>`` is one special token,
    which no text terminal matches: ``special_tokens=True`` (Lark only) also accepts
    every stop string that is one of ``fmt.tokens`` written as ``<...>`` as the special
    token of that name (llguidance's ``<|im_end|>`` syntax; the tokenizer must have it).

    >>> for part in assistant_grammar("vicuna").splitlines()[4].split(" & "):
    ...     print(part)
    CONTENT: /(?s:.*)/
    ~/(?s:.*)(?:<\/s>|USER:)(?s:.*)/
    ~/(?:USER:|ASSISTANT:)(?s:.*)/
    ~/(?s:.*)\n(?:USER:|ASSISTANT:)(?s:.*)/
    >>> print(assistant_grammar("chatml", special_tokens=True).splitlines()[2:4])
    ['start: ANSWER | CONTENT special_stop', 'special_stop: <|im_end|>']
    >>> print(assistant_grammar("chatml", dialect="gbnf").splitlines()[1])
    root ::= s0
    """
    f = get_format(fmt) if isinstance(fmt, str) else fmt
    if dialect not in DIALECTS:
        raise ValueError(f"unknown grammar dialect {dialect!r}: use one of {', '.join(DIALECTS)}")
    if special_tokens and dialect != "lark":
        raise ValueError("special_tokens=True is for the lark dialect (llguidance) only")
    anywhere, at_line_start, stops = _forbidden(f)
    if dialect == "lark":
        return _lark(f.name, anywhere, at_line_start, stops, _special_stops(f) if special_tokens else [])
    return _gbnf(f.name, _Automaton(anywhere, at_line_start), stops)


def _unique(items: Iterable[str]) -> list[str]:
    return [s for s in dict.fromkeys(items) if s]


def _forbidden(f: Format) -> tuple[list[str], list[str], list[str]]:
    """(refused anywhere in content, refused at a line start, the stop strings), empty strings left out."""
    stops = _unique(f.stop)
    return _unique([*f.tokens, *stops]), _unique(f.markers), stops


def _special_stops(f: Format) -> list[str]:
    """The stop strings that are special tokens llguidance can name (``<...>``)."""
    tokens = set(f.tokens)
    return [
        s
        for s in _unique(f.stop)
        if s in tokens and len(s) > 2 and s[0] == "<" and s[-1] == ">" and not any(c in "<> \t\n" for c in s[1:-1])
    ]


# --- Lark (llguidance) ------------------------------------------------------------------


def _rx_char(c: str) -> str:
    if c in _RX_META:
        return "\\" + c
    if c == "\n":
        return "\\n"
    if c == "\t":
        return "\\t"
    if c == " " or (c.isprintable() and not c.isspace()):
        return c
    return f"\\x{{{ord(c):X}}}"


def _rx_literal(s: str) -> str:
    """``s`` as a Rust-regex literal that can stand inside Lark's ``/.../``."""
    return "".join(_rx_char(c) for c in s)


def _rx_union(strings: list[str]) -> str:
    return "|".join(_rx_literal(s) for s in strings)


def _lark(name: str, anywhere: list[str], at_line_start: list[str], stops: list[str], special: list[str]) -> str:
    parts = [f"/{_ANY}/"]
    if anywhere:
        parts.append(f"~/{_ANY}(?:{_rx_union(anywhere)}){_ANY}/")
    if at_line_start:
        heads = _rx_union(at_line_start)
        parts.append(f"~/(?:{heads}){_ANY}/")
        parts.append(f"~/{_ANY}\\n(?:{heads}){_ANY}/")
    content = " & ".join(parts)
    head = "content, then one stop string" if stops else "content to the end of generation"
    lines = ["%llguidance {}", f"// {_comment(name)}: one assistant answer: {head}"]
    if not stops:
        lines += ["start: CONTENT", f"CONTENT: {content}"]
        return "\n".join(lines)
    start = "start: ANSWER"
    if special:
        start += " | CONTENT special_stop"
    lines += [start]
    if special:
        lines += ["special_stop: " + " | ".join(special)]
    lines += ["ANSWER: CONTENT STOP", f"CONTENT: {content}", f"STOP: /{_rx_union(stops)}/"]
    return "\n".join(lines)


def _comment(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)


# --- the complement automaton (GBNF) --------------------------------------------------------


@dataclass(frozen=True)
class _Edge:
    chars: frozenset[str]
    target: int


class _Automaton:
    r"""The DFA of content: texts with no ``anywhere`` string and no ``at_line_start`` string at a line start.

    An Aho-Corasick automaton over the forbidden strings, each state named by the
    longest suffix of the text read that is a prefix of one of them. A marker ``m`` at a
    line start is the string ``"\n" + m``, or ``m`` after a virtual start character that
    no input has: the automaton starts in the state it reaches on that character.
    Moving onto a forbidden string is no move (the text is refused there). ``edges[s]``
    lists the characters of the patterns that lead from state ``s`` to a state other
    than the initial ``0`` (state of the empty suffix); every other character, except
    those in ``dead[s]``, leads to state ``0``.

    >>> a = _Automaton(["ab"], ["#"])
    >>> [a.accepts(t) for t in ("", "a", "xab", "a#", "#", "x\n#", "x\na")]
    [True, True, False, True, False, False, True]
    """

    def __init__(self, anywhere: list[str], at_line_start: list[str]) -> None:
        alphabet = sorted({c for s in [*anywhere, *at_line_start] for c in s} | ({"\n"} if at_line_start else set()))
        virtual = "\0"
        while virtual in alphabet:
            virtual = chr(ord(virtual) + 1)
        patterns = set(anywhere) | {"\n" + m for m in at_line_start} | {virtual + m for m in at_line_start}
        prefixes = {p[:i] for p in patterns for i in range(len(p) + 1)}

        def step(state: str, c: str) -> str | None:
            t = state + c
            if any(t.endswith(p) for p in patterns):
                return None
            return next(t[i:] for i in range(len(t) + 1) if t[i:] in prefixes)

        first = step("", virtual) if at_line_start else ""
        assert first is not None
        # The states reachable from the first, and their moves (None: refused).
        names = ["", first] if first else [""]
        index = {n: k for k, n in enumerate(names)}
        table: list[list[int | None]] = []
        k = 0
        while k < len(names):
            row: list[int | None] = []
            for c in alphabet:
                t = step(names[k], c)
                if t is not None and t not in index:
                    index[t] = len(names)
                    names.append(t)
                row.append(None if t is None else index[t])
            table.append(row)
            k += 1
        # Minimised (Moore): states that refuse and accept the same texts are merged.
        block = [0] * len(names)
        while True:
            keys = [(block[s], tuple(-1 if t is None else block[t] for t in table[s])) for s in range(len(names))]
            number: dict[tuple[int, tuple[int, ...]], int] = {}
            for key in keys:  # state 0 (the empty suffix, where other characters go) stays block 0
                number.setdefault(key, len(number))
            refined = [number[key] for key in keys]
            if len(number) == len(set(block)):
                break
            block = refined
        self.states = len(set(block))
        self.start = block[index[first]]
        self.alphabet = frozenset(alphabet)
        self.edges: list[list[_Edge]] = [[] for _ in range(self.states)]
        self.dead: list[frozenset[str]] = [frozenset() for _ in range(self.states)]
        done: set[int] = set()
        for s, row in enumerate(table):
            if block[s] in done:
                continue
            done.add(block[s])
            by_target: dict[int, set[str]] = {}
            for c, to in zip(alphabet, row, strict=True):
                if to is not None and block[to] != 0:
                    by_target.setdefault(block[to], set()).add(c)
            self.edges[block[s]] = [_Edge(frozenset(cs), b) for b, cs in sorted(by_target.items())]
            self.dead[block[s]] = frozenset(c for c, to in zip(alphabet, row, strict=True) if to is None)

    def move(self, state: int, c: str) -> int | None:
        """The state after ``c``, or None where ``c`` completes a forbidden string."""
        if c in self.dead[state]:
            return None
        return next((e.target for e in self.edges[state] if c in e.chars), 0)

    def accepts(self, text: str) -> bool:
        """Whether ``text`` is allowed content."""
        state = self.start
        for c in text:
            after = self.move(state, c)
            if after is None:
                return False
            state = after
        return True


def _gbnf_char(c: str) -> str:
    o = ord(c)
    if c.isascii() and c.isalnum():
        return c
    if o < 0x80:
        return f"\\x{o:02X}"
    if c.isprintable():
        return c  # as UTF-8, which llama.cpp reads (and llguidance's GBNF converter keeps)
    if o <= 0xFFFF:
        return f"\\u{o:04X}"
    return f"\\U{o:08X}"


def _gbnf_class(chars: Iterable[str], negated: bool = False) -> str:
    return "[" + ("^" if negated else "") + "".join(_gbnf_char(c) for c in sorted(chars)) + "]"


def _gbnf_literal(s: str) -> str:
    out = []
    for c in s:
        if c in '"\\':
            out.append("\\" + c)
        elif c == "\n":
            out.append("\\n")
        elif c.isprintable():
            out.append(c)
        else:
            out.append(_gbnf_char(c))
    return '"' + "".join(out) + '"'


def _gbnf(name: str, a: _Automaton, stops: list[str]) -> str:
    end = "stop" if stops else ""
    head = "content, then one stop string" if stops else "content to the end of generation"
    lines = [f"# {_comment(name)}: one assistant answer: {head}", f"root ::= s{a.start}"]
    for s in range(a.states):
        alts = [end]
        for e in a.edges[s]:
            alts.append(f"{_gbnf_class(e.chars)} s{e.target}")
        others = {c for e in a.edges[s] for c in e.chars} | a.dead[s]
        alts.append(f"{_gbnf_class(others, negated=True) if others else _GBNF_ANY} s0")
        lines.append(f"s{s} ::= " + " | ".join(alts))
    if stops:
        lines.append("stop ::= " + " | ".join(_gbnf_literal(s) for s in stops))
    return "\n".join(lines)
