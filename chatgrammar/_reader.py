"""The positioned reader: spans, and tolerant reading with diagnostics.

It walks the same automaton with the same alternatives as the scanner (so a text
that scans reads the same here), with empty marker groups added to each
alternative to tell where a message's own text and its content start. When no
alternative matches, the tolerant mode asks, in order: does the text end inside a
turn or a delimiter (truncated)? is the text here a well-formed turn the format
does not allow at this point (role order)? a doubled BOS? a delimiter written with
other whitespace? Failing all, the text up to the next place a turn can start is
reported as unexpected, and reading goes on from there.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._compiler import ASSISTANT, Compiled, RegexPart, SlotPart
from ._message import Message, make_message
from ._patterns import partial, re_escape
from ._results import Diagnostic, Span
from ._scanner import _GEN, _LIT, _MSG, _OPEN, Alt, Scanner, _alternation, _atomic

__all__ = ["Reader", "unescape"]

_UNESCAPE = re.compile(r"\\x([0-9a-f]{2})|\\u([0-9a-f]{4})|\\U([0-9a-f]{8})|\\(.)", re.S)


def unescape(part: str) -> str:
    """The text a ``re_escape``\\ d literal matches."""
    return _UNESCAPE.sub(lambda m: chr(int(m[1] or m[2] or m[3], 16)) if m[4] is None else m[4], part)


def _is_literal(part: RegexPart) -> bool:
    return isinstance(part, str) and part not in ("(?:", ")?", r"\Z") and not part.startswith("(?=")


@dataclass
class _Read:
    messages: list[Message]
    spans: list[Span]
    diagnostics: list[Diagnostic]
    state: int
    ok: bool  # read strictly: every character by the format's own alternatives


@dataclass
class _Form:
    """A regex tried only when the format's own alternatives fail (tolerant mode)."""

    match: Callable[[str, int], re.Match[str] | None]
    kind: str  # "turn": a truncated turn; "opening": a partial delimiter; "loose": other whitespace
    action: tuple[Any, ...]
    role_group: int | None = None
    content_group: int | None = None
    own_group: int = 0
    closing: str = ""  # turn: the literal text after the content
    after_parts: list[RegexPart] = field(default_factory=list)  # turn: the parts after the content
    closing_group: int | None = None  # turn: what the content did not read, up to the end
    literals: tuple[tuple[int, str], ...] = ()  # loose: (group, expected text) of each literal
    expected: str = ""  # opening: the whole text the partial one begins
    content_pattern: str = ""  # turn: the content slot's pattern
    bare: bool = False  # turn: nothing of the turn's own is written before its content
    alt: int = 0  # the alternative of the state it comes from


class Reader:
    """Reads texts of one compiled variant with positions, strictly or tolerantly."""

    def __init__(self, compiled: Compiled, scanner: Scanner) -> None:
        self.c = compiled
        dfa = compiled.parse_dfa
        self.accepting = list(dfa.accepting)
        self.alts: list[list[Alt]] = []
        self.alt_of: list[dict[int, int]] = []  # per state: outer group -> index of its alternative
        self.table: list[list[Any] | None] = []  # per state: [match, actions] (see _scanner.Alternation)
        for state in range(len(dfa.transitions)):
            turns, gens, lits = scanner._alternatives(state, 0)
            alts = gens + turns + lits  # as the scanner orders them
            self.alts.append(alts)
            table = _alternation(alts, compiled.date_format, marks=True)
            self.table.append(table)
            self.alt_of.append({g: k for k, g in enumerate(sorted(table[1]))} if table else {})
        self._forms: dict[tuple[int, str], list[_Form]] = {}
        # The alternative the last _step read, per thread (the stream parser asks): a Reader is
        # shared by every user of its format.
        self._local = threading.local()
        self._content: dict[int, tuple[list[str], Callable[[str], object], bool]] = {}
        self._reach: dict[int, Callable[[str, int], re.Match[str] | None]] = {}
        # Each form's continuations by their first character, and the length of the longest.
        self._firsts: dict[int, tuple[dict[str, list[str]], int]] = {}
        self._lead_cache: dict[tuple[int, int], list[str]] = {}
        self.bos = compiled.spec.terminals[compiled.spec.header["bos"]] if compiled.spec.header.get("bos") else None
        openings = set()
        for alts in self.alts:
            for parts, action, folded in alts:
                if action[0] in (_MSG, _GEN) and len(parts) > folded and _is_literal(parts[folded]):
                    openings.add(unescape(parts[folded]))  # type: ignore[arg-type]
        self._openings = (
            re.compile("|".join(re.escape(o) for o in sorted(openings, key=len, reverse=True) if o))
            if any(openings)
            else None
        )
        # The states that may read something at a character: by the first character of the literal
        # their alternatives begin with, and those with an alternative that begins otherwise (resync
        # tries only these at each opening it finds: at each space, for gpt-oss's " to=").
        starters: dict[str, set[int]] = {}
        free: set[int] = set()
        longest = 0
        for state, alts in enumerate(self.alts):
            for parts, _action, _folded in alts:
                first = unescape(parts[0]) if parts and _is_literal(parts[0]) else ""  # type: ignore[arg-type]
                if first:
                    starters.setdefault(first[0], set()).add(state)
                else:
                    free.add(state)
                longest = max([longest, *(len(unescape(p)) for p in parts if _is_literal(p))])  # type: ignore[arg-type]
        self._starters = {c: sorted(states | free) for c, states in starters.items()}
        # Longer than any literal, and than anything a content may not start with: deep in a run of
        # one character this long, every alternative reads as it read one character before.
        self._run = 2 + max([longest, *(len(x) for r in compiled.rules.values() for x in r.at_start)])
        self._free = sorted(free)
        self._dates = None

    # -- one step ----------------------------------------------------------------

    def _step(self, state: int, text: str, pos: int) -> tuple[Message | None, Span | None, int, int] | None:
        """The format's own reading at ``pos``: (message or None, span, new pos, new state)."""
        entry = self.table[state]
        if entry is None:
            return None
        m = entry[0](text, pos)
        if m is None:
            return None
        self._local.alt = self.alt_of[state][m.lastindex]
        action = entry[1][m.lastindex]
        kind, target, role, role_group, content_group, inverse, reader, variables, own, marks = action
        for group, _name, check in variables:
            if not check(m[group]):
                return None
        if kind == _LIT:
            return None, None, m.end(), target
        complete = kind == _MSG
        content = (m[content_group] or "") if content_group else ""
        if content_group and m.start(content_group) != -1:
            cspan = m.span(content_group)
        else:
            at = max((m.start(g) for g in marks if m.start(g) != -1), default=m.end())
            cspan = (at, at)
        if reader is not None:
            content = reader(content)
            if content is None:
                return None
        if role is None:
            role = m[role_group]
            if inverse is not None:
                written, role = role, inverse[1](role)
                if inverse[0](role) != written:
                    return None
            if kind == _GEN and role != ASSISTANT:
                return None
        end = len(text) if kind == _OPEN else m.end()
        return make_message(role, content, complete), Span(m.start(own), end, *cspan), end, target

    # -- reading -----------------------------------------------------------------

    def read(self, text: str, tolerant: bool, state: int = 0, pos: int = 0, bos_retry: bool = True) -> _Read:
        out: list[Message] = []
        spans: list[Span] = []
        diags: list[Diagnostic] = []
        ok = True
        end = len(text)
        # Where reading could go back to, when the text turns out to be cut short: the end of
        # the last message and each literal read since (any may begin a turn instead), and the
        # start of an empty open turn (the generation prompt may be the start of a turn cut short).
        boundary = (0, 0, 0)
        before_open: tuple[int, int, int] | None = None
        before_last = (0, 0, 0)
        ended_open = False
        literals: list[tuple[int, int, int]] = []  # where each literal since the last message was read
        stalled_at, stalled = -1, set[int]()  # where reading last stopped, and the states it stopped in there
        while pos < end:
            step = self._step(state, text, pos)
            if step is not None and tolerant and step[0] is not None and not step[0].complete and step[0].content:
                # An open turn whose content ends with part of its closing delimiter: cut short there.
                if self._truncation(text, pos, state, out, spans, diags) or self._partial_opening(
                    text, pos, state, step[1], diags
                ):
                    return _Read(out, spans, diags, state, False)
            if step is not None:
                msg, span, new_pos, new_state = step
                if msg is None:
                    literals.append((pos, state, len(out)))
                else:
                    literals.clear()
                    before_open = (pos, state, len(out)) if not msg.complete and not msg.content else None
                    before_last = (pos, state, len(out))
                    out.append(msg)
                    spans.append(span)  # type: ignore[arg-type]
                    boundary = (new_pos, new_state, len(out))
                pos, state = new_pos, new_state
                if msg is not None and not msg.complete and span is not None and span.end == end:
                    ended_open = True  # an open turn ends the document, wherever it stands
                    break
                continue
            ok = False
            if not tolerant:
                break
            # ... and the start of the last message: a longer turn may begin as it does
            restarts = [(pos, state, len(out)), boundary, *literals[::-1]]
            restarts += ([before_open] if before_open else []) + [before_last]
            if self._cut_short(text, restarts, out, spans, diags):
                pos = end
                break
            if pos == 0 and self.bos and not text.startswith(self.bos) and bos_retry:
                # Read it both ways: as it is, and with the BOS it lacks; keep the better reading.
                with_bos = self.read(self.bos + text, True)
                as_is = self.read(text, True, bos_retry=False)
                helped = not any(d.pos < len(self.bos) for d in with_bos.diagnostics)  # read past the BOS
                if helped and len(with_bos.diagnostics) < len(as_is.diagnostics) + 1:
                    return self._shifted(with_bos, text, len(self.bos))
                return as_is
            if pos != stalled_at:
                stalled_at, stalled = pos, set()
            stalled.add(state)
            pos, state = self._misplaced(text, pos, state, out, spans, diags, stalled)
        if ok and not ended_open and not self.accepting[state] and pos >= end:
            ok = False
            if tolerant and self._cut_short(text, [boundary, *literals[::-1], before_last], out, spans, diags):
                return _Read(out, spans, diags, state, ok)
        if (
            tolerant
            and not ended_open
            and pos >= end
            and not self.accepting[state]
            and not any(d.pos >= end for d in diags)
        ):
            if not diags or diags[-1].code != "truncated":
                wanted = self._expected_at(state)
                diags.append(
                    Diagnostic.at(
                        text,
                        "truncated",
                        f"the text ends where {self.c.name} expects {wanted}",
                        "the text was cut short: complete it, or read it as a truncated document",
                        end,
                    )
                )
        return _Read(out, spans, diags, state, ok)

    def _cut_short(
        self,
        text: str,
        restarts: list[tuple[int, int, int]],
        out: list[Message],
        spans: list[Span],
        diags: list[Diagnostic],
    ) -> bool:
        """Read the rest of the text as cut short, from the first of ``restarts`` where that works."""
        for p0, s0, n0 in dict.fromkeys(restarts):
            if p0 >= len(text):
                continue
            kept = out[n0:], spans[n0:]
            del out[n0:], spans[n0:]
            if self._truncation(text, p0, s0, out, spans, diags, any_partial=True):
                return True
            out += kept[0]
            spans += kept[1]
        return False

    def _shifted(self, r: _Read, text: str, k: int) -> _Read:
        """A reading of BOS + text, as a reading of text that lacks the BOS."""

        def at(p: int) -> int:
            return max(p - k, 0)

        spans = [Span(at(s.start), at(s.end), at(s.content_start), at(s.content_end)) for s in r.spans]
        diags = [
            Diagnostic.at(
                text,
                "missing-bos",
                f"the text does not start with the BOS token {self.bos!r} that {self.c.name} writes first",
                f"put {self.bos!r} at the start (or check that it is not added twice by the tokenizer)",
                0,
            )
        ]
        diags += [Diagnostic.at(text, d.code, d.message, d.hint, at(d.pos), at(d.end), d.index) for d in r.diagnostics]
        return _Read(r.messages, spans, diags, r.state, False)

    def _truncation(
        self,
        text: str,
        pos: int,
        state: int,
        out: list[Message],
        spans: list[Span],
        diags: list[Diagnostic],
        any_partial: bool = False,
    ) -> bool:
        """Read the rest of the text as a truncated turn or delimiter, if it is one.

        Without ``any_partial`` only a turn whose content ends with part of its closing
        delimiter counts (the text reads strictly as an open turn otherwise).
        """
        end = len(text)
        # Turns with text of their own before the content first, then partial delimiters, then
        # turns written as their bare content (where any text reads as content).
        turns = self._tolerant_forms(state, "turn")
        forms = [f for f in turns if not f.bare]
        forms += (self._tolerant_forms(state, "opening") if any_partial else []) + [f for f in turns if f.bare]
        for form in forms:
            m = form.match(text, pos)
            if m is None:
                continue
            if form.kind == "turn":
                msg, span, partial, rest = self._truncated_turn(form, m, text, lenient=form.bare and any_partial)
                if msg is None or not (partial or any_partial):
                    continue
                out.append(msg)
                spans.append(span)
                diags.append(
                    Diagnostic.at(
                        text,
                        "truncated",
                        f"the text ends inside a {msg.role!r} turn"
                        + (f": {json_repr(rest)} would close it" if rest else ""),
                        "the turn is read as open (complete=False); complete the text to close it",
                        end - len(partial),
                        end,
                        len(out) - 1,
                    )
                )
            else:
                diags.append(_cut_in_delimiter(text, form, pos))
            return True
        return False

    @property
    def last_alt(self) -> int:
        """The alternative the last ``_step`` of this thread read."""
        return int(getattr(self._local, "alt", 0))

    def alive(self, state: int, text: str, alt: int) -> bool:
        """Whether alternative ``alt`` of ``state`` may still read ``text`` once more of it arrives."""
        for form in self._tolerant_forms(state, "turn"):
            if form.alt == alt:
                m = form.match(text, 0)
                if m is not None and self._truncated_turn(form, m, text, lenient=True)[0] is not None:
                    return True
        for form in self._tolerant_forms(state, "opening"):
            if form.alt == alt and form.match(text, 0) is not None:
                return True
        return False

    def _partial_opening(self, text: str, pos: int, state: int, span: Span | None, diags: list[Diagnostic]) -> bool:
        """An open turn whose whole text, from where it starts, is the start of another delimiter."""
        for form in self._tolerant_forms(state, "opening"):
            m = form.match(text, pos)
            if m is not None and span is not None and m.end() == len(text):
                diags.append(_cut_in_delimiter(text, form, pos))
                return True
        return False

    def _misplaced(
        self,
        text: str,
        pos: int,
        state: int,
        out: list[Message],
        spans: list[Span],
        diags: list[Diagnostic],
        stalled: set[int],
    ) -> tuple[int, int]:
        """Read past what cannot come at ``pos``; ``stalled``: the states reading has stopped in at ``pos``."""
        end = len(text)
        name = self.c.name
        # 2. A turn the format writes, but not here: the role order.
        for other in range(len(self.table)):
            if other == state:
                continue
            step = self._step(other, text, pos)
            if step is None or step[0] is None or step[1] is None:
                continue
            if step[2] == pos and step[3] in stalled:
                continue  # a turn that writes nothing, back to a state read from here: it would loop
            msg, span, new_pos, new_state = step
            assert msg is not None and span is not None
            diags.append(
                Diagnostic.at(
                    text,
                    "role-order",
                    f"{_article(msg.role)} {msg.role!r} turn cannot come here in {name}: "
                    f"{self._expected_at(state)} expected",
                    self._order_hint(),
                    pos,
                    span.end,
                    len(out),
                )
            )
            out.append(msg)
            spans.append(span)
            return new_pos, new_state
        # 3. A turn not closed before the next one begins.
        for form in self._tolerant_forms(state, "turn"):
            m = form.match(text, pos)
            if m is None or form.bare or form.closing_group is None:
                continue
            q = m.start(form.closing_group)
            started = m.start(form.content_group) if form.content_group else -1
            if q >= end or started in (-1, q) or not form.closing or text.startswith(form.closing, q):
                continue  # no content read, or closed there: something else is wrong
            for other in [form.action[1]] + [s for s in range(len(self.table)) if s != form.action[1]]:
                step = self._step(other, text, q)
                if step is None or step[0] is None:
                    continue
                kind, target, role, inverse, reader = form.action
                role = role or _form_role(form, m) or ASSISTANT
                content = text[m.start(form.content_group) : q] if form.content_group else ""
                out.append(make_message(role, content, True))
                spans.append(Span(m.start(form.own_group), q, q - len(content), q))
                diags.append(
                    Diagnostic.at(
                        text,
                        "unclosed-turn",
                        f"the {role!r} turn is not closed: {json_repr(form.closing)} expected before the next turn",
                        f"end the turn with {json_repr(form.closing)}",
                        q,
                        q,
                        len(out) - 1,
                    )
                )
                return q, other
        # 4. A BOS written twice.
        bos = self.bos
        if (
            bos
            and text.startswith(bos, pos)
            and (text.startswith(bos, pos + len(bos)) or pos >= len(bos) and text.startswith(bos, pos - len(bos)))
        ):
            diags.append(
                Diagnostic.at(
                    text,
                    "double-bos",
                    f"the BOS token {bos!r} is written twice",
                    "the template writes BOS already: do not add it again (add_special_tokens=False when "
                    "tokenizing a rendered prompt)",
                    pos,
                    pos + len(bos),
                )
            )
            return pos + len(bos), state
        # 5. A delimiter with other whitespace than the format's: the reading with the fewest
        # deviations, then the longest.
        best: tuple[int, int, _Form, re.Match[str]] | None = None
        for form in self._tolerant_forms(state, "loose"):
            m = form.match(text, pos)
            if m is None:
                continue
            wrong = sum(1 for g, expected in form.literals if m[g] is not None and m[g] != expected)
            if wrong and (best is None or (wrong, -m.end()) < best[:2]):
                best = (wrong, -m.end(), form, m)
        if best is not None:
            _, _, form, m = best
            for group, expected in form.literals:
                found = m[group]
                if found is not None and found != expected:
                    same = (i for i, (a, b) in enumerate(zip(found, expected, strict=False)) if a != b)
                    k = next(same, min(len(found), len(expected)))
                    diags.append(
                        Diagnostic.at(
                            text,
                            "whitespace",
                            f"{json_repr(found)} where {name} writes {json_repr(expected)}",
                            "write the delimiter exactly as the format does: models are sensitive to every "
                            "space and newline",
                            m.start(group) + k,
                            m.end(group),
                            len(out),
                        )
                    )
            kind, target = form.action[0], form.action[1]
            if kind != _LIT:
                msg, span = self._loose_message(form, m, text)
                if msg is not None and span is not None:
                    out.append(msg)
                    spans.append(span)
            return (end if kind == _OPEN else m.end()), target
        # 6. Unreadable text: report it up to where a turn can start again.
        resume = self._resync(text, pos, state)
        stop = end if resume is None else resume[0]
        diags.append(
            Diagnostic.at(
                text,
                "unexpected-text",
                f"{json_repr(_clip(text[pos:stop]))} is not {name}: {self._expected_at(state)} expected",
                "check that the text is in this format (chatgrammar detect), and that no content holds a "
                "delimiter of the format",
                pos,
                stop,
                None,
            )
        )
        if resume is None:
            return end, state
        return resume

    def _resync(self, text: str, pos: int, state: int) -> tuple[int, int] | None:
        """The next position after ``pos`` where some state reads a turn."""
        if self._openings is None:
            return None
        tried = -1  # the last position tried
        run = self._run
        for m in self._openings.finditer(text, pos + 1):
            q = m.start()
            deep = tried == q - 1 and text.startswith(text[q] * run, q - 1)
            tried = q
            if deep:
                # Deep in a run of one character, every alternative reads as it read one character
                # before, where none stepped (patterns are unrolled loops; the run is longer than any
                # literal and than anything a content may not start with). Without this, a megabyte
                # of newlines costs a megabyte of tries of every state.
                continue
            candidates = self._starters.get(text[q], self._free)
            # ``state`` first, then the others in order
            for s in ([state] if state in candidates else []) + [s for s in candidates if s != state]:
                step = self._step(s, text, q)
                if step is not None and step[0] is not None:
                    return q, s
        return None

    # -- tolerant forms ----------------------------------------------------------

    def _tolerant_forms(self, state: int, kind: str) -> list[_Form]:
        key = (state, kind)
        forms = self._forms.get(key)
        if forms is None:
            forms = []
            for i, (parts, action, folded) in enumerate(self.alts[state]):
                for linear in _linear(parts):
                    form = _FORMS[kind](linear, action, folded)
                    if form is not None:
                        form.alt = i
                        forms.append(form)
            # Published whole, and only once: a thread that built them meanwhile uses the first
            # list (other caches are keyed by the forms' ids).
            forms = self._forms.setdefault(key, forms)
        return forms

    def _truncated_turn(
        self, form: _Form, m: re.Match[str], text: str, lenient: bool = False
    ) -> tuple[Message | None, Span, str, str]:
        """The turn a text cut short was writing: (message, span, the partial delimiter, what would close it).

        Where the text ends, the longest tail that is the start of what can follow the
        content (its closing delimiter, the next turn's opening), with whitespace the
        template trims, is a partial delimiter; the rest must read as content.
        """
        kind, target, role, inverse, reader = form.action
        assert form.content_group is not None and form.closing_group is not None
        cg = form.content_group
        cstart = m.start(cg) if m.start(cg) != -1 else m.start(form.closing_group)
        tail = text[cstart:]
        after, fullmatch, trims = self._content_info(form)
        trimmed = len(tail) - len(tail.rstrip()) if trims else 0
        firsts = self._firsts.get(id(form))
        if firsts is None:  # the continuations by their first character, and the longest one
            by_first: dict[str, list[str]] = {}
            for a in after:
                by_first.setdefault(a[0], []).append(a)
            firsts = self._firsts[id(form)] = (by_first, max((len(a) for a in after), default=0))
        starting, longest = firsts
        longest += trimmed
        # The content reaches at most as far as its pattern reads in the whole text: what it
        # refuses may end past the cut (a result's close and the next result's opening).
        reach = self._content_reach(form, text, cstart)
        chosen: tuple[str, str, str] | None = None
        for k in range(max(0, len(tail) - longest), min(len(tail), reach) + 1):
            if k < len(tail) and tail[k] not in starting and not (trims and tail[k].isspace()):
                continue  # no continuation starts with that character: not a partial delimiter
            suffix, content = tail[k:], tail[:k]
            closes = _closes(suffix, starting.get(suffix[:1], []), trims)
            if closes is None or (content and fullmatch(content) is None):
                continue
            chosen = (content, suffix, closes)
            break
        if chosen is None:
            return None, Span(0, 0, 0, 0), "", ""
        content, partial, closes = chosen
        if not content and m.end(form.own_group) == cstart and not lenient:
            # Nothing of the turn's own but a partial delimiter: that is not a turn yet.
            return None, Span(0, 0, 0, 0), "", ""
        if reader is not None:
            decoded = reader(content)
            content = decoded if decoded is not None else content
        role = role or _form_role(form, m)
        if role is None:
            return None, Span(0, 0, 0, 0), "", ""
        span = Span(m.start(form.own_group), len(text), cstart, len(text) - len(partial))
        return make_message(role, content, False), span, partial, closes

    def _content_reach(self, form: _Form, text: str, at: int) -> int:
        """How much of ``text`` from ``at`` the form's content pattern reads, in context."""
        m = self.content_match(form)(text, at)
        return m.end() - at if m else 0

    def content_match(self, form: _Form) -> Callable[[str, int], re.Match[str] | None]:
        """The form's content pattern, compiled (once per form)."""
        match = self._reach.get(id(form))
        if match is None:
            match = self._reach[id(form)] = re.compile(form.content_pattern).match
        return match

    def _content_info(self, form: _Form) -> tuple[list[str], Callable[[str], object], bool]:
        """What can follow a form's content, its fullmatch, and whether the template trims its end."""
        info = self._content.get(id(form))
        if info is None:
            trims = any(
                partial(shape.content.pattern) == form.content_pattern
                and shape.content.transform in ("strip", "rstrip", "strip_nl", "rstrip_nl")
                for shape in self.c.shapes.values()
            )
            # Shortest first: what _closes tries.
            after = sorted(self.continuations(form), key=len)
            info = (after, re.compile(form.content_pattern).fullmatch, trims)
            self._content[id(form)] = info
        return info

    def continuations(self, form: _Form) -> list[str]:
        """The literal texts that can follow a turn form's content: the rest of its turn (an
        optional slot there may be empty), then the opening of what can come next, two turns
        deep (or nothing, where the text may end)."""
        return [a for a in dict.fromkeys(_walk(form.after_parts, "", self._leads(form.action[1], 2))) if a]

    def _leads(self, state: int, depth: int) -> list[str]:
        """The literal texts the alternatives of ``state`` begin with (through turns written
        with nothing but literals and empty slots, ``depth`` turns deep)."""
        key = (state, depth)
        found = self._lead_cache.get(key)
        if found is None:
            found = [""] if self.accepting[state] else []
            for parts, action, _folded in self.alts[state]:
                then = self._leads(action[1], depth - 1) if depth > 0 else [""]
                found += _walk(parts, "", then)
            found = self._lead_cache[key] = list(dict.fromkeys(found))
        return found

    def _loose_message(self, form: _Form, m: re.Match[str], text: str) -> tuple[Message | None, Span | None]:
        kind, target, role, inverse, reader = form.action
        if kind == _LIT:
            return None, None
        content = (m[form.content_group] or "") if form.content_group else ""
        if form.content_group and m.start(form.content_group) != -1:
            cspan = m.span(form.content_group)
        else:
            cspan = (m.end(), m.end())
        if reader is not None:
            decoded = reader(content)
            content = decoded if decoded is not None else content
        role = role or _form_role(form, m) or ASSISTANT
        end = len(text) if kind == _OPEN else m.end()
        return make_message(role, content, kind == _MSG), Span(m.start(form.own_group), end, *cspan)

    # -- words -------------------------------------------------------------------

    def _expected_at(self, state: int) -> str:
        """What may come at ``state``, in words."""
        shown: list[str] = []
        for parts, action, folded in self.alts[state]:
            kind = action[0]
            if kind == _LIT:
                shown.append(json_repr(unescape(parts[0])) if isinstance(parts[0], str) else "a date")
            elif kind == _MSG and folded == 0:
                role = action[2]
                shown.append(f"{_article(role)} {role!r} turn" if role else "a turn")
            elif kind == _GEN and folded == 0:
                shown.append("the generation prompt")
        if self.accepting[state]:
            shown.append("the end of the text")
        shown = list(dict.fromkeys(shown))
        if not shown:
            return "nothing"
        return " or ".join(shown[:6]) + (" or ..." if len(shown) > 6 else "")

    def _order_hint(self) -> str:
        reason = self.c.spec.header.get("order-error")
        base = f"{self.c.name} does not take this role order"
        return f"{base} ({reason})" if reason else f"{base}: see chatgrammar.get_format({self.c.name!r}).policy"


def json_repr(s: str) -> str:
    import json

    return json.dumps(s, ensure_ascii=False)


def _closes(suffix: str, after: list[str], trims: bool) -> str | None:
    """What would complete ``suffix`` into a text that can follow the content; None if nothing.

    ``after``: the continuations that may start with ``suffix`` (shortest first).

    ``""``: nothing is missing (the text ends in the content, or in whitespace that the
    template trims from it, which the content may yet continue).
    """
    if not suffix or (trims and not suffix.strip()):
        return ""  # the text ends in the content, or in whitespace the template trims from it
    for a in after:  # shortest first
        if a.startswith(suffix):
            return a[len(suffix) :]
    return None


def _walk(parts: list[RegexPart], prefix: str, then: list[str]) -> list[str]:
    """The literal texts ``parts`` can write, up to a slot that is not empty; then each of ``then``."""
    for i, p in enumerate(parts):
        if _is_literal(p):
            prefix += unescape(p)  # type: ignore[arg-type]
        elif isinstance(p, SlotPart) and p.optional:
            return [prefix, *_walk(parts[i + 1 :], prefix, then)]
        elif isinstance(p, SlotPart) or p in ("(?:", ")?"):
            return [prefix]
        else:  # a lookahead of what follows the turn: the next opening
            break
    return [prefix + t for t in then]


def _form_role(form: _Form, m: re.Match[str]) -> str | None:
    """The role a tolerant form's match read in its ROLE slot (as the template writes it, read back)."""
    if not form.role_group or m[form.role_group] is None:
        return None
    inverse = form.action[3]
    return inverse[1](m[form.role_group]) if inverse is not None else m[form.role_group]


def _cut_in_delimiter(text: str, form: _Form, pos: int) -> Diagnostic:
    """The diagnostic of a text that ends inside the delimiter ``form`` reads from ``pos``."""
    return Diagnostic.at(
        text,
        "truncated",
        f"the text ends inside {json_repr(_clip(form.expected, 60))}",
        "the text was cut short inside a delimiter of the format",
        pos,
        len(text),
    )


def _clip(s: str, n: int = 40) -> str:
    return s if len(s) <= n else s[:n] + "..."


def _linear(parts: list[RegexPart]) -> list[list[RegexPart]]:
    """The alternative's parts with each optional group either written or left out."""
    out: list[list[RegexPart]] = [[]]
    k = 0
    while k < len(parts):
        part = parts[k]
        if part == "(?:":
            depth, j = 1, k + 1
            while depth:
                depth += parts[j] == "(?:"
                depth -= parts[j] == ")?"
                j += 1
            inner = _linear(parts[k + 1 : j - 1])
            out = [o + i for o in out for i in inner] + out
            k = j
            continue
        out = [o + [part] for o in out]
        k += 1
    return out


def _slot(part: SlotPart, group: int) -> str:
    return _atomic(part, group)


class _Builder:
    """Writes one tolerant form: regex text and its groups."""

    def __init__(self) -> None:
        self.out: list[str] = []
        self.group = 0

    def new_group(self) -> int:
        self.group += 1
        return self.group


def _turn_form(parts: list[RegexPart], action: tuple[Any, ...], folded: int) -> _Form | None:
    if action[0] != _MSG:
        return None
    k = next((i for i, p in enumerate(parts) if isinstance(p, SlotPart) and p.field == "content"), None)
    if k is None:
        return None
    closing = ""
    for p in parts[k + 1 :]:
        if not _is_literal(p):
            break
        closing += unescape(p)  # type: ignore[arg-type]
    b = _Builder()
    role_group = own = None
    for i, p in enumerate(parts[:k]):
        if i == folded:
            own = b.new_group()
            b.out.append("()")
        if isinstance(p, SlotPart):
            g = b.new_group()
            if p.field == "role":
                role_group = g
            b.out.append(_slot(p, g))
        else:
            b.out.append(p)
    if own is None:
        own = b.new_group()
        b.out.append("()")
    cg = b.new_group()
    content = parts[k]
    assert isinstance(content, SlotPart)
    content = SlotPart(content.field, partial(content.pattern), content.optional, content.name)  # cut short
    b.out.append(f"(?:{_slot(content, cg)})?")
    clg = b.new_group()
    b.out.append(r"([\s\S]*)\Z")
    return _Form(
        re.compile("".join(b.out)).match,
        "turn",
        action,
        role_group=role_group,
        content_group=cg,
        own_group=own,
        closing=closing,
        after_parts=list(parts[k + 1 :]),
        closing_group=clg,
        content_pattern=content.pattern,
        bare=not any(_is_literal(p) or isinstance(p, SlotPart) for p in parts[folded:k]),
    )


_LONG = 64  # a literal longer than this has its starts checked by str.startswith


def _prefixes(text: str, empty: bool = True) -> str:
    """An alternation of the proper prefixes of ``text``, longest first."""
    return "(?:" + "|".join(re_escape(text[:k]) for k in range(len(text) - 1, -1 if empty else 0, -1)) + ")"


class _Ended:
    """What an opening form's match tells: that the rest of the text is a partial delimiter."""

    __slots__ = ("_end",)

    def __init__(self, end: int) -> None:
        self._end = end

    def end(self) -> int:
        return self._end


def _opening_form(parts: list[RegexPart], action: tuple[Any, ...], folded: int) -> _Form | None:
    """Any proper prefix of the text before the content (all of it for literals): a partial delimiter.

    Each alternative is the parts before one of them, read by a regex, then a start of that one.
    A literal's start is checked with ``str.startswith`` where that is exact (the text before it
    has one reading) or where the literal is long: a regex of every start of a long literal (a
    built-in preamble of thousands of characters) is quadratic in its length to build.
    """
    k = next((i for i, p in enumerate(parts) if isinstance(p, SlotPart) and p.field == "content"), len(parts))
    head = [p for p in parts[:k] if _is_literal(p) or isinstance(p, SlotPart)]
    if not head:
        return None
    # (regex of what comes before, the literal whose proper start ends the text or None, whether
    # that start may be empty)
    alts: list[tuple[re.Pattern[str], str | None, bool]] = []
    expected = "".join(unescape(p) if isinstance(p, str) else "…" for p in head)
    prefix = ""
    for i, p in enumerate(head):
        if isinstance(p, SlotPart) and p.field == "var":  # part of a date
            alts.append((re.compile(rf"{prefix}{_PARTIAL_DATE}\Z"), None, True))
        elif isinstance(p, SlotPart):
            alts.append((re.compile(rf"{prefix}(?:{p.pattern})?\Z"), None, True))
        elif len(unescape(p)) > _LONG or (i > 0 and all(isinstance(q, str) for q in head[:i])):
            # where the text before the literal has one length (or the literal is long), the
            # literal's start is checked apart; else a regex of its starts lets the parts before
            # it take what the literal does not
            alts.append((re.compile(prefix), unescape(p), i > 0))
        elif len(unescape(p)) > 1 or i > 0:
            alts.append((re.compile(prefix + _prefixes(unescape(p), empty=i > 0) + r"\Z"), None, True))
        prefix += p if isinstance(p, str) else f"(?:{p.pattern})"
    if not alts:
        return None

    def match(text: str, pos: int) -> _Ended | None:
        for regex, literal, empty in alts:
            m = regex.match(text, pos)
            if m is None:
                continue
            if literal is None:
                return _Ended(m.end())
            rest = len(text) - m.end()
            if (rest or empty) and rest < len(literal) and literal.startswith(text[m.end() :]):
                return _Ended(len(text))
        return None

    return _Form(match, "opening", action, expected=expected)  # type: ignore[arg-type]


_WS = re.compile(r"\s+")
_PARTIAL_DATE = r"[0-9A-Za-z ,.\-/]*"  # what the start of a date written by strftime holds


def _loose_literal(text: str) -> str:
    # Possessive: whitespace runs are read once, never split between neighbours (two greedy
    # runs side by side backtrack over every split of a long run of spaces).
    pieces = _WS.split(text)
    body = r"\s*+".join(re_escape(p) for p in pieces)
    return body + r"[ \t]*+"


def _loose_form(parts: list[RegexPart], action: tuple[Any, ...], folded: int) -> _Form | None:
    if action[0] not in (_MSG, _LIT, _OPEN):
        return None
    b = _Builder()
    literals: list[tuple[int, str]] = []
    role_group = content_group = None
    own = None
    loosened = False
    for i, p in enumerate(parts):
        if i == folded:
            own = b.new_group()
            b.out.append("()")
        if isinstance(p, SlotPart):
            g = b.new_group()
            if p.field == "role":
                role_group = g
            elif p.field == "content":
                content_group = g
            b.out.append(_slot(p, g))
        elif _is_literal(p):
            text = unescape(p)
            g = b.new_group()
            literals.append((g, text))
            b.out.append(f"({_loose_literal(text)})")
            loosened = True
        else:
            b.out.append(p)
    if not loosened:
        return None
    if own is None:
        own = b.new_group()
        b.out.append("()")
    return _Form(
        re.compile("".join(b.out)).match,
        "loose",
        action,
        role_group=role_group,
        content_group=content_group,
        own_group=own,
        literals=tuple(literals),
    )


_FORMS = {"turn": _turn_form, "opening": _opening_form, "loose": _loose_form}


def _article(word: str) -> str:
    """ "an" before a vowel ("an 'assistant' turn"), else "a"."""
    return "an" if word[:1].lower() in "aeio" else "a"  # a user, an assistant
