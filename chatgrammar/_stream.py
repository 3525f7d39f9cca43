"""StreamParser: read a text that arrives in chunks, every turn, as events."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ._errors import ParseError
from ._format import Format, _Variant
from ._ir import REASONING, TOOL_ARGS, TOOL_CALL, TOOL_CALL_ID, TOOL_DEF, TOOL_RESULT_ID, TOOL_RESULT_NAME
from ._message import Message
from ._patterns import partial
from ._payloads import Payloads
from ._reader import json_repr, unescape
from ._registry import get_format
from ._render import DropLayer
from ._results import (
    ContentDelta,
    Event,
    MessageEnd,
    MessageStart,
    ReasoningDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
)
from ._structure import CALL_PARTS

__all__ = ["StreamParser"]

ASSISTANT = "assistant"
_RESULT_FIELDS = {TOOL_RESULT_ID: "tool_call_id", TOOL_RESULT_NAME: "name"}  # a result's parts: its fields


class StreamParser:
    r"""Read a text of format ``fmt`` chunk by chunk, emitting events for every turn.

    ``feed(chunk)`` returns the events the text so far decides: ``MessageStart(index,
    role)`` when a turn's opening is read, ``ContentDelta(index, text)`` as its content
    arrives, ``MessageEnd(index, complete)`` when it ends. Text that could still be the
    start of a delimiter (``<|im_e``) is held back until the next chunk decides it, so a
    delta never holds part of a delimiter. ``close()`` ends the text and returns the last
    events; joined, the events give exactly ``parse(text)``. A text that is not a
    document of the format raises ParseError (positioned in the whole text) from
    ``feed`` or ``close``. What is kept between chunks is the turn being read, not the
    text before it.

    For a format that writes reasoning and tool calls, an answer's thinking arrives as
    ``ReasoningDelta(index, text)`` and each of its calls as ``ToolCallStart(index, name,
    message)``, ``ToolCallDelta(index, arguments_text, message)`` and ``ToolCallEnd(index,
    message)``, where ``index`` counts the calls of message ``message``; partial tags are
    held back like any delimiter. Since calls may follow an answer, its ``MessageEnd``
    comes when the next turn starts, or at ``close()``.

    >>> p = StreamParser("chatml")
    >>> p.feed("<|im_start|>user\nHi<|im_e")
    [MessageStart(index=0, role='user'), ContentDelta(index=0, text='Hi')]
    >>> p.feed("nd|>\n<|im_start|>assistant\nHello")
    [MessageEnd(index=0, complete=True), MessageStart(index=1, role='assistant'), ContentDelta(index=1, text='Hello')]
    >>> p.feed(", how can I help?") + p.close()
    [ContentDelta(index=1, text=', how can I help?'), MessageEnd(index=1, complete=False)]
    """

    def __init__(self, fmt: str | Format, **options: Any) -> None:
        self.format = get_format(fmt)
        self._variant: _Variant = self.format._variant(options or None)
        self._reader = self._variant.reader
        self._buf = ""
        self._base = 0  # offset of _buf in the whole text
        self._lines = 1  # line of _base, for errors
        self._line_start = 0  # offset of that line's start
        self._state = 0
        self._index = 0  # the next message's index
        self._written: list[str] = []  # the roles of the messages the text writes
        self._put_back: set[tuple[int, str]] = set()  # dropped messages put back, as (position, role)
        self._last_complete: bool | None = None
        self._last_empty = False
        self._ended_open = False
        # The turn being read: [index, role, content start in _buf, length emitted, whether the
        # template trims its end, where its content ends so far, whether that is the end of _buf,
        # the search for what can end its content, the matchers of its readings' contents].
        self._cur: list[Any] | None = None
        # While a turn told whole at its end is read: the search for what could end its content.
        # (the search, the matchers of the readings' contents, where they are known to be content)
        self._quiet: tuple[re.Pattern[str], list[Callable[[str, int], Any]], tuple[int, int]] | None = None
        self._closed = False
        self._dropped = self._variant.planner.has_dropped
        self._drop_layer: tuple[int, DropLayer] = (0, self._variant.planner.drop_layer()) if self._dropped else (0, {})
        self._tables = _tables(self._variant)
        self._hold = self._tables.hold
        # Longer than what any reading looks at, from one place: deep in a run of one character
        # this long, new characters of the run change nothing (see _feed).
        self._run = max(self._hold, self._reader._run)
        self._idle = False  # the last reading decided nothing and told nothing
        c = self._variant.compiled
        self._folder = _Folder(c.payloads, {s.role for s in c.shapes.values() if s.role}) if c.structural else None

    # -- public ------------------------------------------------------------------

    def feed(self, chunk: str) -> list[Event]:
        """Read one more chunk; the events it decides."""
        if self._closed:
            raise ValueError("feed() after close()")
        if not isinstance(chunk, str):
            raise TypeError(f"feed() takes a str, not {type(chunk).__name__}")
        if not chunk:
            return []
        if self._folder is not None:
            return self._folder.fold(self._feed(chunk))
        return self._feed(chunk)

    def _feed(self, chunk: str) -> list[Event]:
        self._buf += chunk
        if self._quiet is not None:
            # A turn told whole at its end (its content bare or encoded) is being read: new text
            # with nothing in it that could end that content changes nothing, and is not read again
            # (which would make a long turn cost the square of its length).
            ending, matchers, known = self._quiet
            if ending.search(self._buf, max(len(self._buf) - len(chunk) - self._hold, 0)) is None:
                return []
            end = self._read_on(known, matchers, len(chunk), agree=False)
            if end is not None:
                self._quiet = (ending, matchers, (known[0], end))
                return []
        cur = self._cur
        if self._idle and (cur is None or not cur[6]):
            # The last reading decided nothing, and the text so far ends with a long run of one
            # character that this chunk only makes longer: deep in such a run everything reads as
            # it read one character before, so nothing changes (a model repeating newlines).
            old = len(self._buf) - len(chunk)
            run = self._run
            c = self._buf[old - 1] if old else ""
            if old >= run and chunk == c * len(chunk) and self._buf.startswith(c * run, old - run):
                return []
        if cur is not None and cur[6]:
            # After a content that ran to the end of the text so far, new text without anything
            # that ends that content only extends it.
            window = len(self._buf) - len(chunk) - self._hold
            if cur[7].search(self._buf, max(window, cur[2])) is None:
                cur[5] = len(self._buf)
                return self._more_content(cur)
            resumed = self._resume(cur, len(chunk))
            if resumed is not None:
                return resumed
        return self._advance(final=False)

    def _resume(self, cur: list[Any], new: int) -> list[Event] | None:
        """The content read on from where it was known to run, when something that may end it
        arrived: None when it may have ended (then the turn is read again from its start).

        The content patterns are unrolled loops, each step decided by its character and what
        follows, so reading on from a character inside the content ends where reading the
        whole turn would; all the readings that agreed on the content must agree again.
        """
        end = self._read_on((cur[2], cur[5]), cur[8], new)
        if end is None:
            return None
        cur[5] = end
        return self._more_content(cur)

    def _read_on(
        self, known: tuple[int, int], matchers: list[Callable[[str, int], Any]], new: int, agree: bool = True
    ) -> int | None:
        """Where the contents run to, read on from inside the part ``known`` to be content (start,
        end), if they all still run to the end of the text (but for what may start a delimiter).
        ``new``: characters just added, which the lookaheads of the last ``hold`` before them
        had not seen: reading on starts before those. ``agree``: the contents must end at the same
        place (else: the first end)."""
        buf = self._buf
        start, q = known[0], min(known[1], len(buf) - new - self._hold) - 1
        if q < start:
            return None
        ends = {m.end() if (m := match(buf, q)) else -1 for match in matchers}
        if -1 in ends:  # a stripped content steps from a character that is not whitespace
            for _ in range(64):
                if q <= start or not buf[q].isspace():
                    break
                q -= 1
            if q < start or buf[q].isspace():
                return None
            ends = {m.end() if (m := match(buf, q)) else -1 for match in matchers}
        if agree and len(ends) != 1:
            return None
        end = min(ends)
        return end if end >= len(buf) - self._hold else None  # else something ends the content

    def close(self, stopped: bool = False) -> list[Event]:
        r"""End the text: the remaining events. Raises ParseError if the text is not complete.

        ``stopped``: the model stopped at one of the format's stop strings (``Format.stop``, a
        server's ``finish_reason == "stop"``), which was not fed (servers do not pass it on). As
        ``parse_completion`` reads it, the last message is then complete: a text that ends with
        part of its closing delimiter ends there (Llama's ``}`` of ``}<|eot_id|>``), and what
        the template writes after the stop string is not missing (Command R7B opens the
        chatbot's turn again after every answer).

        >>> p = StreamParser("chatml")
        >>> events = p.feed("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello")
        >>> p.close(stopped=True)
        [MessageEnd(index=1, complete=True)]
        """
        if self._closed:
            return []
        events = self._close(stopped)
        if stopped:  # the stop string ended the last turn (a call's arguments, then its answer)
            events = [replace(e, complete=True) if isinstance(e, MessageEnd) else e for e in events]
        if self._folder is not None:
            events = self._folder.fold(events, final=True)
        return events

    def _close(self, stopped: bool = False) -> list[Event]:
        self._closed = True
        events = self._advance(final=True, stopped=stopped)
        if self._buf:
            raise self._error("text that does not read as " + self.format.name)
        if self._dropped:  # messages the template writes nothing for, after the last one written
            n = len(self._written)
            last_open = self._last_complete is False
            gen = last_open and self._last_empty
            back = self._variant.planner.dropped_back(
                tuple(self._written[:-1] if gen else self._written), last_open and not gen, gen
            )
            for position, role in back:
                if position >= n - (1 if gen else 0) and (position, role) not in self._put_back:
                    self._emit_dropped(role, events)
        if not self._ended_open and not self._reader.accepting[self._state] and not stopped:
            raise self._error(
                f"the text ends where {self.format.name} expects {self._reader._expected_at(self._state)}"
            )
        return events

    def __enter__(self) -> StreamParser:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()

    # -- internals ---------------------------------------------------------------

    def _more_content(self, cur: list[Any]) -> list[Event]:
        index, _role, cs, emitted, trims, limit = cur[:6]
        end = self._safe_end(cs + emitted, limit)
        if trims:
            end = min(end, cs + len(self._buf[cs:end].rstrip()))
        if end <= cs + emitted:
            return []
        cur[3] = end - cs
        return [ContentDelta(index, self._buf[cs + emitted : end])]

    def _safe_end(self, start: int, limit: int) -> int:
        """Where content read up to ``limit`` cannot change any more: before the first place,
        near the end of what has arrived, where a literal of the format may be starting."""
        buf = self._buf
        firsts, prefixes = self._tables.firsts, self._tables.prefixes
        for p in range(max(start, len(buf) - self._hold), limit):
            if buf[p] in firsts and buf[p:] in prefixes:
                return p
        return limit

    def _advance(self, final: bool, stopped: bool = False) -> list[Event]:
        events: list[Event] = []
        reader = self._reader
        start = self._base
        self._quiet = None
        self._idle = False
        waiting = False  # the text so far ends inside a turn (not: a turn read, not yet decided)
        while self._buf:
            step = reader._step(self._state, self._buf, 0)
            if step is None:
                waiting = True
                break
            msg, _span, new_pos, new_state = step
            if stopped and msg is not None and not msg.complete and msg.content:
                # The stop string ended a turn whose text ends with part of its closing delimiter.
                cut: list[Message] = []
                if reader._truncation(self._buf, 0, self._state, cut, [], []) and len(cut) == 1:
                    msg = cut[0]
            decided = final or (
                new_pos + self._hold <= len(self._buf)
                and (msg is None or msg.complete)
                # an alternative tried before this one may still match once more text arrives
                and not any(reader.alive(self._state, self._buf, k) for k in range(reader.last_alt))
            )
            if not decided:
                waiting = msg is not None and not msg.complete
                break
            if msg is not None:
                self._message(msg, events)
            self._consume(new_pos)
            self._state = new_state
        if not final and self._buf:
            self._in_progress(events, waiting)
            self._idle = not events and self._base == start  # nothing told, nothing read
        elif not final:
            pass
        elif self._buf and stopped:
            # The stop string ended a turn whose text is cut short inside a delimiter: read as
            # parse_completion reads it.
            cut = []
            if reader._truncation(self._buf, 0, self._state, cut, [], [], any_partial=True) and len(cut) == 1:
                self._message(cut[0], events)
                self._consume(len(self._buf))
        elif self._buf and self._cur is not None:  # pragma: no cover - a turn begun, then not read
            raise self._error("a turn that does not read as " + self.format.name)
        return events

    def _message(self, msg: Message, events: list[Event]) -> None:
        cur = self._cur
        if cur is None:
            index = self._start(msg.role, events, msg.complete, not msg.content)
            emitted = 0
        else:
            index, role, _cs, emitted = cur[:4]
            if role != msg.role or not msg.content.startswith(self._emitted_text(cur)):
                raise self._error(f"the turn read differently once complete ({role!r} then {msg.role!r})")
        if len(msg.content) > emitted:
            events.append(ContentDelta(index, msg.content[emitted:]))
        events.append(MessageEnd(index, msg.complete))
        self._cur = None
        self._last_complete, self._last_empty = msg.complete, not msg.content
        if not msg.complete:
            self._ended_open = True  # an open turn ends the text, wherever it stands

    def _emitted_text(self, cur: list[Any]) -> str:
        return self._buf[cur[2] : cur[2] + cur[3]]

    def _start(self, role: str, events: list[Event], complete: bool = True, empty: bool = False) -> int:
        if self._dropped:
            gen = not complete and empty  # the generation prompt: _with_dropped reads it apart
            planner = self._variant.planner
            done, layer = self._drop_layer  # the layer after the first ``done`` messages written
            for k in range(done, len(self._written)):
                layer = planner.drop_layer(layer, k, self._written[k])
            self._drop_layer = (len(self._written), layer)
            # As dropped_back of the messages written so far, and this one unless it is the prompt.
            n = len(self._written)
            back = planner.drop_finish(layer, n, None if gen else role, not complete and not gen, gen)
            for position, dropped_role in back:
                if position == len(self._written) and (position, dropped_role) not in self._put_back:
                    # a message the template writes nothing for, here: parse puts it back, empty
                    self._put_back.add((position, dropped_role))
                    self._emit_dropped(dropped_role, events)
        index = self._index
        self._index += 1
        self._written.append(role)
        events.append(MessageStart(index, role))
        return index

    def _emit_dropped(self, role: str, events: list[Event]) -> None:
        index = self._index
        self._index += 1
        events += [MessageStart(index, role), MessageEnd(index, True)]

    def _in_progress(self, events: list[Event], waiting: bool = False) -> None:
        """A turn begun and not ended: its start, and the content that cannot change any more.

        Every alternative that may still read the text is asked how; only when they all
        agree on the role and on where the content starts is the turn's start told.
        """
        reader = self._reader
        buf = self._buf
        readings: list[tuple[str, int, int, bool, bool]] = []
        matchers: dict[str, Callable[[str, int], re.Match[str] | None]] = {}  # by content pattern
        for form in reader._tolerant_forms(self._state, "turn"):
            m = form.match(buf, 0)
            if m is None:
                continue
            msg, span, _partial, _closes = reader._truncated_turn(form, m, buf, lenient=True)
            if msg is None:
                continue
            _after, _fullmatch, trims = reader._content_info(form)
            # a bare content, or one written encoded, is told whole at the end of its turn
            plain = not form.bare and form.action[4] is None
            readings.append((msg.role, span.content_start, span.content_end, trims, plain))
            pattern = form.content_pattern
            matchers[pattern] = reader.content_match(form)
        opening = any(form.match(buf, 0) for form in reader._tolerant_forms(self._state, "opening"))
        undecided = (
            not readings
            or len({(r, cs, ce) for r, cs, ce, _, _ in readings}) > 1
            or not all(plain for *_, plain in readings)
            or readings[0][2] == readings[0][1]  # no content yet: the text may be another turn's opening
            or opening
        )
        if undecided:
            if self._cur is not None:
                self._cur[6] = False  # where its content ends is not known: no more plain extension
            elif (
                waiting
                and readings
                and len(buf) > 2 * self._hold  # longer than any delimiter: every reading under way
                and all(cs < ce and ce >= len(buf) - self._hold for _r, cs, ce, *_ in readings)
                and not opening
            ):
                # Every reading's content runs to the end of the text (or to what may begin its
                # closing delimiter), and the turn is told at its end or the readings disagree on
                # it (Gemma's system text or user turn): until something arrives that could end
                # one of those contents, more text reads the same.
                known = (max(cs for _r, cs, *_ in readings), min(ce for _r, _cs, ce, *_ in readings))
                if known[0] < known[1]:
                    self._quiet = (self._tables.ending(list(matchers)), list(matchers.values()), known)
            return
        role, cs, ce, trims, _plain = readings[0]
        cur = self._cur
        if cur is None:
            index = self._start(role, events)
            cur = self._cur = [index, role, cs, 0, trims, ce, False, self._tables.enders[pattern], []]
        elif (cur[1], cur[2]) != (role, cs):
            cur[6] = False
            return
        # Content read to the end of the text, but for what may be the start of its closing
        # delimiter: new text without anything that ends the content only extends it.
        cur[5], cur[6] = ce, ce >= len(buf) - self._hold
        cur[8] = list(matchers.values())
        events += self._more_content(cur)

    def _consume(self, n: int) -> None:
        taken = self._buf[:n]
        newlines = taken.count("\n")
        if newlines:
            self._lines += newlines
            self._line_start = self._base + taken.rfind("\n") + 1
        self._base += n
        self._buf = self._buf[n:]
        if self._cur is not None:
            self._cur[2] -= n

    def _error(self, reason: str) -> ParseError:
        """A ParseError at the start of the undecided text, positioned in the whole text."""
        buf = self._buf
        reason = f"{reason}: {json_repr(buf[:40])}" if buf else reason
        e = ParseError(reason, text=buf, pos=0, format=self.format.name)
        e.pos = self._base
        e.line, e.column = self._lines, self._base - self._line_start + 1
        e.args = (f"{e.reason} (line {e.line}, column {e.column})\n{e.snippet}",)
        return e


class _Tables:
    """What a stream parser of one compiled variant needs besides the reader (built once)."""

    def __init__(self, variant: _Variant) -> None:
        reader, c = variant.reader, variant.compiled
        literals: list[str] = list(c.tokens) + list(c.markers)
        for alts in reader.alts:
            for parts, _action, _folded in alts:
                for p in parts:
                    if isinstance(p, str) and p not in ("(?:", ")?", r"\Z") and not p.startswith("(?="):
                        literals.append(unescape(p))
        looks = any(isinstance(p, str) and p.startswith("(?=") for alts in reader.alts for a in alts for p in a[0])
        for r in c.rules.values():
            literals += r.anywhere + r.at_end + (r.after if looks else [])
        literals = [x for x in dict.fromkeys(literals) if x]
        # Text this close to the end of what has arrived may still change how it reads: the
        # longest literal, refused string or lookahead.
        self.hold = max((len(x) for x in literals), default=1) + 1
        self.firsts = frozenset(x[0] for x in literals)
        self.prefixes = frozenset(x[:k] for x in literals for k in range(1, len(x)))
        # For each content slot: a search for what can end it (what it refuses, the text after it).
        self.enders: dict[str, re.Pattern[str]] = {}
        self._endings: dict[tuple[str, ...], re.Pattern[str]] = {}
        for state in range(len(reader.alts)):
            for form in reader._tolerant_forms(state, "turn"):
                if form.content_pattern in self.enders:
                    continue
                ends: list[str] = []
                for shape in c.shapes.values():
                    if partial(shape.content.pattern) == form.content_pattern:
                        rules = c.rules[id(shape.content)]
                        ends += rules.anywhere + rules.at_end + rules.at_start
                ends += [x[: self.hold] for x in reader.continuations(form)]
                ends = sorted({x for x in ends if x}, key=len, reverse=True)
                self.enders[form.content_pattern] = re.compile("|".join(re.escape(x) for x in ends) or "(?!)")

    def ending(self, patterns: list[str]) -> re.Pattern[str]:
        """One search for what can end any of these content slots."""
        key = tuple(sorted(set(patterns)))
        found = self._endings.get(key)
        if found is None:
            found = re.compile("|".join(self.enders[p].pattern for p in key))
            self._endings[key] = found
        return found


def _tables(variant: _Variant) -> _Tables:
    tables = getattr(variant, "_stream_tables", None)
    if tables is None:
        tables = _Tables(variant)
        variant._stream_tables = tables  # type: ignore[attr-defined]
    return tables


class _Call:
    """The call being read: its parts so far (name, arguments, id, in the grammar's order)."""

    def __init__(self, index: int, owner: int) -> None:
        self.index = index
        self.owner = owner
        self.seen: set[str] = set()
        self.name: str | None = None
        self.id: str | None = None
        self.started = False
        self.args_done = False


class _Folder:
    """The events of structural turns folded into those of the messages they belong to.

    The flat reading has the reasoning, each call's name, arguments and id, the tool
    definitions and the results' ids as turns of their own (see ``_structure``); the caller
    sees an answer's ``ReasoningDelta`` and its ``ToolCall*`` events, numbered as ``parse``
    numbers messages. Ids are not streamed: a call's comes on its ``ToolCallEnd`` (and on its
    ``ToolCallStart`` when written before the arguments), a result's on its ``MessageEnd``.
    """

    def __init__(self, payloads: Payloads, written: set[str]) -> None:
        order = payloads.call_order
        # A call starts (its name told) once the parts before its arguments are read.
        self.before_args = set(order[: order.index(TOOL_ARGS)]) if TOOL_ARGS in order else set(order)
        self.id_last = order[-1] == TOOL_CALL_ID  # its end waits for the id
        # The fields of a result written after it (its id, its name): its end waits for them.
        self.result_after = {
            key
            for role, key, first in (
                (TOOL_RESULT_ID, "tool_call_id", payloads.result_id_first),
                (TOOL_RESULT_NAME, "name", payloads.result_name_first),
            )
            if role in written and not first
        }
        self.roles: list[str] = []  # the role of each message told
        self.next = 0  # the next message index
        self.parts: dict[int, tuple[str, int, int]] = {}  # flat index -> (kind, message, call index)
        self.texts: dict[int, list[str]] = {}  # flat index of a name or an id -> its text so far
        self.owner: int | None = None  # the answer calls attach to
        self.calls = 0  # calls of that answer so far
        self.call: _Call | None = None  # the call being read
        self.thinking: int | None = None  # a message opened by its reasoning, waiting for its answer
        self.deferred: tuple[int, bool] | None = None  # an answer's end, held while calls may follow
        self.result_fields: dict[str, str] = {}  # a result's id and name read before the result
        self.result: tuple[int, bool, dict[str, str]] | None = None  # a result's end, held until its fields

    def fold(self, events: list[Event], final: bool = False) -> list[Event]:
        out: list[Event] = []
        for e in events:
            if isinstance(e, MessageStart):
                self._start(e, out)
            elif isinstance(e, ContentDelta):
                kind, k, c = self.parts[e.index]
                if kind == "msg":
                    out.append(ContentDelta(k, e.text))
                elif kind == REASONING:
                    out.append(ReasoningDelta(k, e.text))
                elif kind in (TOOL_CALL, TOOL_CALL_ID, TOOL_RESULT_ID, TOOL_RESULT_NAME):
                    self.texts[e.index].append(e.text)
                elif kind == TOOL_ARGS:
                    out.append(ToolCallDelta(c, e.text, k))
            elif isinstance(e, MessageEnd):
                self._end(e, out)
        if final:
            self._flush(out)
        return out

    def _start(self, e: MessageStart, out: list[Event]) -> None:
        role = e.role
        if role == TOOL_DEF:  # the tools of the prompt: in parse's .tools, not told as events
            self.parts[e.index] = (TOOL_DEF, -1, 0)
            return
        if role in _RESULT_FIELDS:
            self.parts[e.index] = (role, -1, 0)
            self.texts[e.index] = []
            return
        if role in CALL_PARTS:
            call = self.call
            if call is None or role in call.seen:  # the first part of another call
                self._end_result(out)
                if self.owner is None:  # calls with no answer before them: an answer with no content
                    self.owner = self._open(ASSISTANT, out)
                    self.calls = 0
                    self.deferred = (self.owner, True)
                call = self.call = _Call(self.calls, self.owner)
                self.calls += 1
            call.seen.add(role)
            self.parts[e.index] = (role, call.owner, call.index)
            if role == TOOL_ARGS:
                self._start_call(call, out)
            else:
                self.texts[e.index] = []
            return
        if self.call is not None:  # the calls are over
            if self.call.name is not None:
                self._start_call(self.call, out)
            self.call = None
        if role == REASONING:
            self.thinking = self._open(ASSISTANT, out)
            self.parts[e.index] = (REASONING, self.thinking, 0)
            return
        if role == ASSISTANT and self.thinking is not None:
            k, self.thinking = self.thinking, None
        else:
            k = self._open(role, out)
        self.parts[e.index] = ("msg", k, 0)
        self.owner, self.calls = (k, 0) if role == ASSISTANT else (None, 0)

    def _start_call(self, call: _Call, out: list[Event]) -> None:
        if not call.started:
            call.started = True
            out.append(ToolCallStart(call.index, call.name or "", call.owner, call.id))

    def _open(self, role: str, out: list[Event]) -> int:
        self._flush(out)
        k = self.next
        self.next += 1
        self.roles.append(role)
        out.append(MessageStart(k, role))
        return k

    def _end(self, e: MessageEnd, out: list[Event]) -> None:
        kind, k, c = self.parts[e.index]
        if kind == TOOL_DEF:
            return
        if kind in _RESULT_FIELDS:
            value = "".join(self.texts.pop(e.index))
            if self.result is not None:  # written after its result
                k, complete, fields = self.result
                fields[_RESULT_FIELDS[kind]] = value
                self.result = (k, complete and e.complete, fields)
                if set(fields) >= self.result_after:  # the result ends now
                    self._end_result(out)
            else:
                self.result_fields[_RESULT_FIELDS[kind]] = value
            return
        if kind == REASONING:
            if not e.complete:  # the text stops while the model thinks
                self.deferred = (k, False)
            return
        call = self.call
        if kind in (TOOL_CALL, TOOL_CALL_ID):
            assert call is not None
            text = "".join(self.texts.pop(e.index))
            if kind == TOOL_CALL:
                call.name = text
            else:
                call.id = text
            if not e.complete or call.seen >= self.before_args:
                self._start_call(call, out)
            if kind == TOOL_CALL_ID and call.args_done:
                out.append(ToolCallEnd(c, k, call.id))
        elif kind == TOOL_ARGS:
            assert call is not None
            call.args_done = e.complete
            if e.complete and not self.id_last:
                out.append(ToolCallEnd(c, k, call.id))
        if kind in CALL_PARTS:
            held = self.deferred[1] if self.deferred is not None and self.deferred[0] == k else True
            self.deferred = (k, held and e.complete)
            return
        if k == self.owner:  # an answer: its calls may follow
            self.deferred = (k, e.complete)
        elif self.roles[k] == "tool":
            fields, self.result_fields = self.result_fields, {}  # those written before it
            self.result = (k, e.complete, fields)
            if not self.result_after:
                self._end_result(out)
        else:
            out.append(MessageEnd(k, e.complete))

    def _end_result(self, out: list[Event]) -> None:
        """A result ends, with the fields read (those that were to follow it and did not: without)."""
        if self.result is not None:
            k, complete, fields = self.result
            out.append(MessageEnd(k, complete, **fields))
            self.result = None

    def _flush(self, out: list[Event]) -> None:
        self._end_result(out)
        if self.call is not None and self.call.name is not None:  # a call cut before its arguments
            self._start_call(self.call, out)
        if self.deferred is not None:
            out.append(MessageEnd(*self.deferred))
            self.deferred = None
        self.owner = None
