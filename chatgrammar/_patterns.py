"""Slot patterns, derived from the grammar's literals.

A slot accepts any text that does not contain what would end it or change the
structure around it:

* the format's special tokens, anywhere;
* its plain-text markers, at the start of a line;
* its *stop strings*: the literal text that follows the slot in the grammar, up
  to and including the first token or marker (``"\\n<</SYS>>"``), or up to the
  end of the document (``"\\n"`` then the end, for a turn that ends the text);
* the rest of a token or stop string whose beginning is the literal just before
  the slot.

Patterns are written as unrolled loops (runs of ordinary characters, then one
checked special character) whose every step is decided by the character and
its lookahead, so a slot ends exactly where a stop string begins. The loops are
possessive (``*+``): they never give back what they read, so matching is linear
in the text and keeps no backtracking state, which Python's ``re`` would
otherwise hold for every step of the loop (superlinear time and memory on
megabytes of ``<``).
"""

from __future__ import annotations

import datetime
import re
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ._automaton import INIT, Positions, positions
from ._errors import GrammarError
from ._ir import UNWRITTEN, Alt, Gen, Lit, Msg, Node, Opt, Seq, Slot, Star

__all__ = [
    "INDEX",
    "JSON_OBJECT",
    "json_object",
    "partial",
    "date_pattern",
    "date_check",
    "Guard",
    "SlotRules",
    "derive_slot_rules",
    "guard_for",
    "re_escape",
    "slot_pattern",
    "triggers_for",
    "word_by_word",
]

_MAX_STOP = 256  # longest literal run followed when looking for a stop string
_MAX_TEXTS = 100_000  # steps taken listing the literal texts that can follow a slot
_MAX_STOP_STEPS = 20_000  # runs spelled listing a slot's stop strings, before the shortest stand for all

# Characters from most to least frequent in ordinary text; the rarest character
# of a delimiter is the cheapest to look for. Characters not listed count as rarest.
_FREQUENCY = " etaoinsrhldcumfpgwybvkxjqz\nETAOINSRHLDCUMFPGWYBVKXJQZ,.0123456789-'\"():;?!/_*=\t"
_RANK = {c: i for i, c in enumerate(_FREQUENCY)}


@dataclass
class SlotRules:
    """What a slot occurrence refuses, and its pattern."""

    anywhere: list[str] = field(default_factory=list)  # refused at any position
    at_end: list[str] = field(default_factory=list)  # ends the slot when followed by the end of text
    at_start: list[str] = field(default_factory=list)  # refused at the slot's first character
    last: list[str] = field(default_factory=list)  # refused as the slot's last characters
    after: list[str] = field(default_factory=list)  # the literal text that can follow ("": the end, or a slot)
    pattern: str = ""  # matches one or more characters


def derive_slot_rules(
    start: Node,
    tokens: Iterable[str],
    markers: Iterable[str],
    origin: str,
    refused: dict[int, list[str]] | None = None,
    refused_at_start: dict[int, list[str]] | None = None,
) -> dict[int, SlotRules]:
    """SlotRules for every slot occurrence, keyed by ``id(slot)``; fills ``slot.pattern``.

    ``refused`` and ``refused_at_start`` add strings a slot refuses anywhere, or at its start
    (by ``id(slot)``): the literals that open a structure, for plain content.
    """
    tokens = [t for t in dict.fromkeys(tokens) if t]
    markers = [m for m in dict.fromkeys(markers) if m]
    cores = tokens + markers
    rules: dict[int, SlotRules] = {}
    # A slot the template never writes reads nothing; only what follows it tells where it stood.
    # The other slots are read with the literals around it joined, as they are written.
    full = positions(start, lambda n: isinstance(n, (Lit, Slot)))
    for p, atom in enumerate(full.atoms):
        if isinstance(atom, Slot) and atom.transform in UNWRITTEN:
            r = SlotRules(after=_shortest(_texts_after(full, p, 64)))
            r.pattern = atom.pattern = slot_pattern(r, atom.transform)
            rules[id(atom)] = r
    pos = positions(_written(start), lambda n: isinstance(n, (Lit, Slot)))
    preds = _predecessors(pos)
    for p, atom in enumerate(pos.atoms):
        if not isinstance(atom, Slot):
            continue
        r = SlotRules()
        stops, ends = _stop_strings(pos, p, cores, origin, atom)
        if atom.transform in ("strip", "rstrip"):
            # Whitespace then a token: the token ends the content, and the pattern's final
            # lookbehind gives the whitespace back. Checking every space would cost speed.
            stops = [s for s in stops if not _whitespace_then_core(s, cores)]
        r.anywhere = list(tokens) + ["\n" + m for m in markers] + stops + (refused or {}).get(id(atom), [])
        if atom.field == "role":
            r.anywhere.append("\n")
        r.at_end = ends
        # What the literals around the slot complete into a refused string: from every refused
        # string (a longer one may be completed where a shorter one it begins with is not).
        r.at_start = _start_refusals(pos, preds, p, r.anywhere, tokens, markers)
        r.at_start = _minimal(r.at_start + (refused_at_start or {}).get(id(atom), []))
        r.last = [t[::-1] for t in _minimal([t[::-1] for t in _end_refusals(pos, p, r.anywhere)])]
        r.after = _shortest(_texts_after(pos, p, 64))
        r.anywhere = _minimal(r.anywhere)
        r.pattern = slot_pattern(r, atom.transform)
        atom.pattern = r.pattern
        rules[id(atom)] = r
    return rules


def _written(n: Node) -> Node:
    """``n`` without the content slots the template never writes (``_drop``, ``_empty``): the
    literals around one follow each other."""
    if isinstance(n, Slot) and n.transform in UNWRITTEN:
        return Seq(())
    if isinstance(n, (Seq, Alt)):
        return type(n)(tuple(_written(i) for i in n.items))
    if isinstance(n, (Opt, Star)):
        return type(n)(_written(n.item))
    if isinstance(n, Msg):
        return Msg(n.role, n.rule, _written(n.body), n.key)
    if isinstance(n, Gen):
        return Gen(_written(n.body))
    return n


def _predecessors(pos: Positions) -> list[list[int]]:
    preds: list[list[int]] = [[] for _ in pos.atoms]
    for q in pos.first:
        preds[q].append(INIT)
    for p, fs in enumerate(pos.follow):
        for q in fs:
            preds[q].append(p)
    return preds


def _stop_strings(pos: Positions, p: int, cores: list[str], origin: str, slot: Slot) -> tuple[list[str], list[str]]:
    found = _spell_stops(pos, p, cores, origin, slot, prune=False)
    if found is None:
        # Literals that follow each other in any number with no token among them (optional
        # contents between "U:" and "A:") spell exponentially many runs. Spelled shortest first,
        # a run that begins with a stop string already found is not followed: the slot stops
        # before that one either way. (Only then: a longer run also tells where an optional slot
        # may not begin, which the literal before it completes into that run.)
        found = _spell_stops(pos, p, cores, origin, slot, prune=True)
        assert found is not None
    return found


def _spell_stops(
    pos: Positions, p: int, cores: list[str], origin: str, slot: Slot, *, prune: bool
) -> tuple[list[str], list[str]] | None:
    """The stop strings and end strings of a slot; None when more than ``_MAX_STOP_STEPS``
    runs are spelled without ``prune``."""
    stops: list[str] = []
    ends: list[str] = []
    first = [(q, "") for q in pos.follow[p]]
    queue: deque[tuple[int, str]] = deque(first if prune else reversed(first))  # depth first unless pruning
    seen: set[tuple[int, str]] = set()
    while queue:
        q, acc = queue.pop() if not prune else queue.popleft()
        if prune and ((q, acc) in seen or (acc and acc.startswith(tuple(stops)))):
            continue
        seen.add((q, acc))
        if not prune and len(seen) > _MAX_STOP_STEPS:
            return None
        atom = pos.atoms[q]
        if isinstance(atom, Slot):
            if not acc:
                raise GrammarError(
                    f"slots {slot.terminal} and {atom.terminal} can follow each other with no "
                    "literal between them, so no parser could tell where one ends",
                    source=origin,
                )
            stops.append(acc)
            continue
        assert isinstance(atom, Lit)
        acc += atom.text
        cut = _first_core_end(acc, cores)
        if cut is not None:
            stops.append(acc[:cut])
            continue
        if pos.is_last(q):
            ends.append(acc)
        if len(acc) < _MAX_STOP:
            nxt = [(r, acc) for r in pos.follow[q]]
            queue.extend(nxt if prune else reversed(nxt))
        elif pos.follow[q]:
            # So long a run of literals ends the slot as surely as a token would (Command R7B's
            # list of tools, then its default preamble): content holding it is refused.
            stops.append(acc)
    return list(dict.fromkeys(stops)), list(dict.fromkeys(ends))


def _whitespace_then_core(stop: str, cores: list[str]) -> bool:
    return any(stop.lstrip().startswith(c) and stop != stop.lstrip() for c in cores)


def _first_core_end(text: str, cores: list[str]) -> int | None:
    best: int | None = None
    for c in cores:
        i = text.find(c)
        if i != -1 and (best is None or i + len(c) < best):
            best = i + len(c)
    return best


def _start_refusals(
    pos: Positions,
    preds: list[list[int]],
    p: int,
    anywhere: list[str],
    tokens: list[str],
    markers: list[str],
) -> list[str]:
    """Beginnings that, with the literal text before the slot, would spell a refused string;
    and the markers, where the slot can start a line."""
    refused: list[str] = []
    if markers and (INIT in preds[p] or any(_may_end_with(pos, preds, p, t) for t in ["\n", *tokens])):
        refused += markers  # a line start (a special token starts a fresh line too)
    for pat in anywhere:
        for k in range(1, len(pat)):
            if _may_end_with(pos, preds, p, pat[:k]):
                refused.append(pat[k:])
    return list(dict.fromkeys(refused))


def _may_end_with(pos: Positions, preds: list[list[int]], p: int, target: str) -> bool:
    """Whether the literal text right before position ``p`` can end with ``target``."""
    stack: list[tuple[int, int]] = [(q, len(target)) for q in preds[p]]
    seen: set[tuple[int, int]] = set()
    while stack:
        q, left = stack.pop()  # target[:left] is still to be spelled, backwards
        if q == INIT or (q, left) in seen:
            continue
        seen.add((q, left))
        atom = pos.atoms[q]
        if not isinstance(atom, Lit):
            continue
        rest = target[:left]
        if atom.text.endswith(rest):
            return True
        if rest.endswith(atom.text):
            stack.extend((r, left - len(atom.text)) for r in preds[q])
    return False


def _end_refusals(pos: Positions, p: int, anywhere: list[str]) -> list[str]:
    """Endings that, with the literal text after the slot, would spell a refused string."""
    refused: list[str] = []
    for pat in anywhere:
        for k in range(1, len(pat)):
            if _may_spell(pos, p, pat[k:]):
                refused.append(pat[:k])
    return list(dict.fromkeys(refused))


def _may_spell(pos: Positions, p: int, target: str) -> bool:
    """Whether the literal text after position ``p`` can spell ``target``, or begin it before
    a slot or the end of the text cuts it short."""
    stack: list[tuple[int, int]] = [(q, 0) for q in pos.follow[p]]
    seen: set[tuple[int, int]] = set()
    while stack:
        q, matched = stack.pop()
        if (q, matched) in seen:
            continue
        seen.add((q, matched))
        atom = pos.atoms[q]
        if not isinstance(atom, Lit):
            if matched:  # a slot follows what began the target
                return True
            continue
        rest = target[matched:]
        if atom.text.startswith(rest):
            return True
        if not rest.startswith(atom.text):
            continue
        if pos.is_last(q):  # the text may end here, having begun the target
            return True
        stack.extend((r, matched + len(atom.text)) for r in pos.follow[q])
    return False


def _texts_after(pos: Positions, p: int, want: int) -> list[str]:
    """The literal texts that can follow position ``p``: whole literals, until at least ``want``
    characters (a long literal is never cut: a lookahead of its first characters only would let
    a lexer take a slot that the rest of the literal then does not follow).

    ``""`` stands for the end of the text; a text that stops before ``want`` characters is
    followed by a slot (whose own pattern says what it holds) or by the end.
    """
    out: dict[str, None] = {}
    seen: set[tuple[int, str]] = set()
    # Shortest first, and a text that begins with one already listed is not followed: the
    # shorter one already allows it (see ``_shortest``).
    queue: deque[tuple[int, str]] = deque((q, "") for q in pos.follow[p])
    if pos.is_last(p):
        out[""] = None
    while queue:
        q, acc = queue.popleft()
        if (q, acc) in seen or (acc and acc.startswith(tuple(t for t in out if t))):
            continue
        seen.add((q, acc))
        atom = pos.atoms[q]
        if not isinstance(atom, Lit):
            out[acc] = None  # a slot follows: what it holds is checked on its own
            continue
        acc += atom.text
        if len(acc) >= want or pos.is_last(q):
            out[acc] = None
        if len(acc) < want:
            queue.extend((r, acc) for r in pos.follow[q])
        if len(seen) > _MAX_TEXTS:
            raise GrammarError(
                f"more than {_MAX_TEXTS} literal texts can follow one slot within {want} characters; "
                "the grammar is too ambiguous around it"
            )
    return list(out)


def _minimal(refused: list[str]) -> list[str]:
    """``refused`` without the strings that begin with another one: a slot stops before that one
    either way (an empty tool result then another, written over and over, after a result's
    content). A string that only holds another one further in stays: it also says where the
    slot stops (``"\n<|EOT|>"``: before the newline)."""
    kept: list[str] = []
    for t in sorted(dict.fromkeys(refused), key=len):
        if not any(t.startswith(k) for k in kept):
            kept.append(t)
    return [t for t in dict.fromkeys(refused) if t in kept]


def _shortest(texts: list[str]) -> list[str]:
    """``texts`` without those another one begins (``""``, the end of the text, begins none):
    as what may follow a slot, the shorter one already allows them."""
    kept: list[str] = []
    for t in sorted(set(texts), key=len):
        if not any(k and t.startswith(k) for k in kept):
            kept.append(t)
    return kept


def re_escape(text: str) -> str:
    """``re.escape`` written in printable ASCII only.

    Other characters become ``\\xHH``/``\\uHHHH`` escapes, so the pattern can be
    embedded as it is in a Lark grammar (which evaluates those escapes itself);
    ``/`` is escaped too, for Lark's ``/.../`` syntax.
    """
    out = []
    for c in text:
        o = ord(c)
        if c.isascii() and (c.isalnum() or c in " _"):
            out.append(c)
        elif 0x20 < o < 0x7F:
            out.append("\\" + c)
        elif o < 0x100:
            out.append(f"\\x{o:02x}")
        elif o < 0x10000:
            out.append(f"\\u{o:04x}")
        else:
            out.append(f"\\U{o:08x}")
    return "".join(out)


def _class_escape(chars: Iterable[str]) -> str:
    return "".join(re_escape(c) for c in sorted(set(chars)))


def _alternation(items: Iterable[str]) -> str:
    # Longest first, so that no alternative hides a longer one sharing its prefix.
    return "|".join(sorted(dict.fromkeys(items), key=lambda s: (-len(s), s)))


def slot_pattern(rules: SlotRules, transform: str | None, length: int | None = None) -> str:
    """The regex of one or more characters a slot with these rules accepts (exactly ``length``, if given)."""
    if transform in UNWRITTEN:
        return "(?!)"  # the template never writes it: nothing reads as it
    forbidden_chars: set[str] = set()
    lookaheads: dict[str, list[str]] = {}
    for pat in rules.anywhere:
        if len(pat) == 1:
            forbidden_chars.add(pat)
        else:
            lookaheads.setdefault(pat[0], []).append(re_escape(pat[1:]))
    for pat in rules.at_end:
        lookaheads.setdefault(pat[0], []).append(re_escape(pat[1:]) + r"\Z")
    special = forbidden_chars | set(lookaheads)
    plain = f"[^{_class_escape(special)}]" if special else r"[\s\S]"
    checked = {
        c: f"{re_escape(c)}(?!{_alternation(alts)})"
        for c, alts in sorted(lookaheads.items())
        if c not in forbidden_chars
    }
    units = list(checked.values())
    if units:
        unit = "(?:" + "|".join(units) + ")"
        body = f"{plain}*+(?:{unit}{plain}*+)*+"
        one = f"(?:{plain}|{unit})"
    else:
        body = f"{plain}*+"
        one = plain
    head = ""
    if rules.at_start:
        head = "(?!" + _alternation(re_escape(s) for s in rules.at_start) + ")"
    words = ""
    if transform in ("strip", "rstrip") and length is None:
        # The content ends with a character that is not whitespace: read as steps of
        # whitespace then something else, a step that finds no such character is not taken
        # (whitespace before a token belongs to the literal after the slot).
        cls = _class_escape(special)
        solid = "(?:" + "|".join([f"[^{cls}\\s]++", *(u for c, u in checked.items() if not c.isspace())]) + ")"
        space = "(?:" + "|".join([f"[^\\S{cls}]", *(u for c, u in checked.items() if c.isspace())]) + ")"
        words = f"{head}{solid}(?:{space}*+{solid})*+" if transform == "strip" else f"{head}(?:{space}*+{solid})++"
        if _space_may_follow(rules):
            return words
    if transform in ("strip", "lstrip"):
        head += r"(?!\s)"
    elif transform in ("strip_nl", "lstrip_nl"):
        head += r"(?!\n)"
    tail = ""
    if transform in ("strip", "rstrip"):
        tail = r"(?<!\s)"
    elif transform in ("strip_nl", "rstrip_nl"):
        tail = r"(?<!\n)"
    if length is not None:
        return f"{head}{one}{{{length}}}{tail}"
    fast = f"{head}{one}{body}{tail}"
    if words:
        _WORD_BY_WORD[fast] = words
    return fast


# A trimmed content's fast pattern (runs of ordinary characters, then the final lookbehind) ->
# its word-by-word pattern. Both read the same contents; where whitespace ends a content the
# text cannot hold there, the fast one fails at the content's start, the word-by-word one after
# its last word, which is where the Lark parser should say the text goes wrong.
_WORD_BY_WORD: dict[str, str] = {}


def word_by_word(pattern: str) -> str:
    """``pattern`` with each trimmed content's fast pattern in it replaced by its word-by-word one."""
    for fast, words in tuple(_WORD_BY_WORD.items()):  # a snapshot: other threads may be compiling
        if fast in pattern:
            pattern = pattern.replace(fast, words)
    return pattern


def _space_may_follow(rules: SlotRules) -> bool:
    r"""Whether the text after the slot may begin with whitespace (or is not known).

    Where it cannot, the trimmed content's pattern is the plain one with a final ``(?<!\s)``:
    whitespace it read up to the next literal could not belong to that literal, so failing
    there is exact, and the plain pattern reads runs of ordinary characters at once instead
    of word by word (ten times faster on long contents).
    """
    return not rules.after or any(a[:1].isspace() for a in rules.after)


JSON_OBJECT = (r"(?=\{)", r"(?<=\})")  # around a slot's pattern: it reads a JSON object's text
INDEX = r"(?:0|[1-9][0-9]*)"  # a number as str(int) writes it: the running index of a tool call


def json_object(pattern: str) -> str:
    """``pattern``, reading only text that begins with ``{`` and ends with ``}``."""
    return JSON_OBJECT[0] + pattern + JSON_OBJECT[1]


def partial(pattern: str) -> str:
    """What a slot's pattern accepts of a content cut short: a JSON object need not be closed yet,
    and a content of a fixed length (an id) may be shorter."""
    # A content cut short may end with whitespace of the text it was cut from: read up to its
    # last word (word by word), which the fast pattern of a trimmed content cannot give back.
    return re.sub(r"\{(\d+)\}\Z", r"{1,\1}", word_by_word(pattern).removesuffix(JSON_OBJECT[1]))


@dataclass
class Guard:
    """A cheap test that a slot's content cannot hold anything the slot refuses.

    Content passes when none of ``triggers`` occurs in it and it neither starts
    with one of ``prefixes`` nor ends with one of ``suffixes``. Every refused
    string contains one of the triggers; the prefixes and suffixes are the
    refused strings that can cross the slot's edges (given the literals around
    it) without one. So a pass is a proof, and a failure only means that the
    exact check must run.
    """

    triggers: tuple[str, ...]
    prefixes: tuple[str, ...]
    suffixes: tuple[str, ...]
    # The refused strings themselves: the same proof, exactly, when a trigger occurs.
    refused: tuple[str, ...] = ()
    refused_prefixes: tuple[str, ...] = ()
    refused_suffixes: tuple[str, ...] = ()
    required: bool = False  # the slot is not optional: empty content does not read back

    def passes_exactly(self, content: str) -> bool:
        """No refused string in ``content``, at its start or at its end: slower than ``passes``, never wrong."""
        if self.required and not content:
            return False
        for s in self.refused:
            if s in content:
                return False
        return not (
            (self.refused_prefixes and content.startswith(self.refused_prefixes))
            or (self.refused_suffixes and content.endswith(self.refused_suffixes))
        )

    def passes(self, content: str) -> bool:
        if self.required and not content:
            return False
        for t in self.triggers:
            if t in content:
                return False
        return not (
            (self.prefixes and content.startswith(self.prefixes)) or (self.suffixes and content.endswith(self.suffixes))
        )


def guard_for(rules: SlotRules, triggers: tuple[str, ...], required: bool = False) -> Guard:
    """The guard of one slot, given the format's triggers (see ``triggers_for``)."""
    prefixes = [s for s in rules.at_start if not any(t in s for t in triggers)]
    suffixes = [s for s in rules.last if not any(t in s for t in triggers)]
    return Guard(
        triggers,
        tuple(dict.fromkeys(prefixes)),
        tuple(dict.fromkeys(suffixes)),
        tuple(dict.fromkeys(rules.anywhere)),
        tuple(dict.fromkeys(rules.at_start)),
        tuple(dict.fromkeys(rules.last)),
        required,
    )


def triggers_for(all_rules: Iterable[SlotRules]) -> tuple[str, ...]:
    """One character of every string any content slot refuses: the rarest one."""
    chars = [_rarest(pat) for r in all_rules for pat in [*r.anywhere, *r.at_start]]
    return tuple(_cheapest_first(chars))


def _rarest(pat: str) -> str:
    return max(pat, key=lambda c: _RANK.get(c, len(_FREQUENCY)))


def _cheapest_first(chars: list[str]) -> list[str]:
    return sorted(dict.fromkeys(chars), key=lambda c: -_RANK.get(c, len(_FREQUENCY)))


_MONTHS = "January February March April May June July August September October November December".split()
_DAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
_DIRECTIVES = {
    "d": r"(?:0[1-9]|[12][0-9]|3[01])",
    "m": r"(?:0[1-9]|1[0-2])",
    "Y": r"[0-9]{4}",
    "y": r"[0-9]{2}",
    "b": "(?:" + "|".join(m[:3] for m in _MONTHS) + ")",
    "B": "(?:" + "|".join(_MONTHS) + ")",
    "a": "(?:" + "|".join(d[:3] for d in _DAYS) + ")",
    "A": "(?:" + "|".join(_DAYS) + ")",
    "%": "%",
}


def date_pattern(fmt: str) -> str:
    """The regex of what ``date.strftime(fmt)`` writes (C locale); ValueError for other directives."""
    out: list[str] = []
    i = 0
    while i < len(fmt):
        if fmt[i] == "%":
            if i + 1 >= len(fmt) or fmt[i + 1] not in _DIRECTIVES:
                raise ValueError(f"strftime directive {fmt[i : i + 2]!r} is not supported in a date slot")
            out.append(_DIRECTIVES[fmt[i + 1]])
            i += 2
        else:
            out.append(re_escape(fmt[i]))
            i += 1
    return "".join(out)


def date_check(fmt: str) -> Callable[[str], bool]:
    """Whether a text is exactly what strftime(fmt) writes for some date."""

    def check(text: str) -> bool:
        try:
            return datetime.datetime.strptime(text, fmt).strftime(fmt) == text
        except ValueError:
            return False

    return check
