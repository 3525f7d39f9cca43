"""Tool calls, tool definitions and reasoning: Hugging Face message fields <-> structural turns.

A format writes an assistant's thinking, each of its tool calls and each tool definition as
parts of the text with their own literals. Its grammar names those parts after structural
roles (``reasoning``, ``tool_call``, ``tool_args``, ``tool_def``: see ``_ir``), so the compiled
automaton reads and writes them as messages like any other, with their own content slot.
This module is the bridge to the shapes ``apply_chat_template`` takes:

* ``expand`` turns messages with ``reasoning_content`` / ``tool_calls`` and a ``tools`` list
  into the flat sequence of turns the automaton writes (the reasoning before its answer, a
  ``tool_call`` and ``tool_args`` turn per call after it, the tool definitions after the
  leading system message);
* ``collapse`` folds a reading back: reasoning into the next answer, calls into the answer
  before them (arguments decoded from JSON; text that is not JSON is kept as it is and
  reported), tool definitions into ``tools``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._errors import RenderError, UnsupportedConversationError
from ._ir import REASONING, STRUCTURAL, TOOL_ARGS, TOOL_CALL, TOOL_CALL_ID, TOOL_DEF, TOOL_RESULT_ID, TOOL_RESULT_NAME
from ._message import _EXTRAS, Message, make_message
from ._payloads import NONCANONICAL, Payloads, index_problems
from ._results import Diagnostic, Span

__all__ = ["CALL_PARTS", "MISNAMED", "Expanded", "collapse", "expand", "has_structure"]

ASSISTANT = "assistant"
CALL_PARTS = (TOOL_CALL, TOOL_ARGS, TOOL_CALL_ID)  # the turns of one tool call, in any order
MISNAMED = "misnamed-result"  # the diagnostic of a result whose name is not that of the call it answers
_KEYS = frozenset(("role", "content", "complete", *_EXTRAS))
_MISSING = object()  # an id not given


def has_structure(messages: Sequence[Any]) -> bool:
    """Whether any message carries a field beyond role, content and complete."""
    for m in messages:
        if isinstance(m, Message):
            if m.reasoning_content is not None or m.tool_calls is not None:
                return True
            if m.tool_call_id is not None or m.name is not None:
                return True
        elif isinstance(m, Mapping) and len(m) > 2 and any(k in m for k in _EXTRAS):
            return True
    return False


@dataclass
class Expanded:
    """The turns to write: roles, contents, whether the last is open, and where each came from."""

    roles: list[str] = field(default_factory=list)
    contents: list[str] = field(default_factory=list)
    open_last: bool = False
    origin: list[int] = field(default_factory=list)  # the caller's message index of each turn (-1: tools)
    open_index: int = -1  # the caller's open message
    defs: list[str] = field(default_factory=list)  # the tool definitions, as written, not yet placed

    def placements(self, name: str, where: Sequence[str]) -> list[Expanded]:
        """The turns with the tool definitions placed where the template writes them (``tools-at``).

        ``after-system``: after the leading system message (or first, when there is none);
        ``first``: before everything; ``before-last-user``: before the last user message. With
        several (a template switch moves them), the renderer takes the first its grammar accepts.
        """
        if not self.defs:
            return [self]
        users = [k for k, r in enumerate(self.roles) if r == "user"]
        starts = {
            "after-system": 1 if self.roles and self.roles[0] == "system" else 0,
            "first": 0,
            "before-last-user": users[-1] if users else len(self.roles),
        }
        if where == ["before-last-user"] and not users:
            raise UnsupportedConversationError(
                f"{name} writes the tool definitions before the last user message, and there is none "
                "(its template would leave them out): add a user message, or render without tools",
                format=name,
            )
        if (
            "before-last-user" in where
            and users
            and any(self.contents[k] == self.contents[users[-1]] for k in users[:-1])
        ):
            # Jinja finds "the last user message" by comparing messages: it writes the tools
            # before each one equal to it, which no grammar writes.
            raise UnsupportedConversationError(
                f"{name} writes the tool definitions before the last user message, and its template also "
                "writes them before every earlier user message equal to it: make them differ",
                index=self.origin[users[-1]],
                format=name,
            )
        out: list[Expanded] = []
        for at in dict.fromkeys(starts[w] for w in where):
            n = len(self.defs)
            placed = Expanded(
                self.roles[:at] + [TOOL_DEF] * n + self.roles[at:],
                self.contents[:at] + self.defs + self.contents[at:],
                self.open_last,
                self.origin[:at] + [-1] * n + self.origin[at:],
                self.open_index,
            )
            # An open message must end the text: the definitions cannot come after it.
            if not placed.open_last or placed.origin[-1] == placed.open_index:
                out.append(placed)
        if not out:
            raise UnsupportedConversationError(
                f"message {self.open_index} is open (complete=False), but {name} writes the tool definitions "
                "after it, so it cannot end the text; leave it complete (complete=True)",
                index=self.open_index,
                format=name,
            )
        return out


def expand(
    messages: Sequence[Any], tools: Sequence[Any] | None, written: frozenset[str], payloads: Payloads, name: str
) -> Expanded:
    """The flat turns of ``messages`` and ``tools`` for a format that writes the structural roles ``written``.

    Raises RenderError for malformed fields and UnsupportedConversationError for a part the
    format does not write (tool calls for a format without them: never dropped silently).
    """
    out = Expanded()
    open_index = -1
    read = [_read(m, i) for i, m in enumerate(messages)]
    indexed = payloads.call_ids == "index"
    # Where the template writes each call's running index as its id: every call's own id, in order
    # (a missing one is Jinja's undefined, which equals the missing tool_call_id of a result, not None).
    calls_given = [c for r in read for c in r[3].get("tool_calls") or ()]
    call_ids = [c.get("id", _MISSING) if isinstance(c, Mapping) else _MISSING for c in calls_given]
    calls_before = 0
    last_call: str | None = None  # the name of the last tool call since the last answer without calls
    for i, (role, content, complete, extras) in enumerate(read):
        if role in STRUCTURAL:
            raise RenderError(
                f"message {i} has role {role!r}, which chatgrammar keeps for the parts of a message; "
                "write reasoning as 'reasoning_content' and calls as 'tool_calls' of an assistant message",
                index=i,
            )
        if not complete:
            open_index = i
        reasoning = extras.get("reasoning_content")
        calls = extras.get("tool_calls")
        if (reasoning is not None or calls is not None) and role != ASSISTANT:
            key = "reasoning_content" if reasoning is not None else "tool_calls"
            raise RenderError(
                f"message {i} is a {role!r} message with {key!r}; only assistant messages have it", index=i
            )
        if calls == [] and "tool_calls" in payloads.refuse_empty:
            raise UnsupportedConversationError(
                f"message {i} has tool_calls=[], and {name}'s template writes an empty list of calls unlike no "
                "calls, as no turn of its grammar: leave tool_calls out (None), or give the calls",
                index=i,
                format=name,
            )
        if calls and content and payloads.beside_calls == REASONING:
            # The template writes the content of an answer with calls where its thinking goes.
            if reasoning:
                text = (
                    f"message {i} has tool calls, content and reasoning_content, and {name} writes the content "
                    "of an answer with tool calls as its reasoning: give one or the other"
                )
                reason = payloads.beside_calls_error
                raise UnsupportedConversationError(f"{reason} ({text})" if reason else text, index=i, format=name)
            reasoning, content = content, ""
        if role == ASSISTANT:
            last_call = None
        if reasoning:  # the templates write thinking only when there is some
            if REASONING not in written:
                raise UnsupportedConversationError(
                    f"message {i} has reasoning_content, and {name} does not write reasoning; "
                    "drop it (or move it into the content) to render this conversation",
                    index=i,
                    format=name,
                )
            out.roles.append(REASONING)
            out.contents.append(reasoning)
            out.origin.append(i)
        # A result written with the id of its call, or with the name of the call it answers.
        before: list[tuple[str, str]] = []
        after: list[tuple[str, str]] = []
        if TOOL_RESULT_ID in written and role == "tool":
            given = extras.get("tool_call_id", _MISSING)
            if indexed:  # the index of the first call with that id (a missing one matches a call with none)
                rid = next((str(k) for k, cid in enumerate(call_ids) if cid == given), "")
            else:
                rid = payloads.id_text(extras.get("tool_call_id"), "a tool result's tool_call_id", name)
            (before if payloads.result_id_first else after).append((TOOL_RESULT_ID, rid))
        if TOOL_RESULT_NAME in written and role == "tool":
            called = _answered(last_call, extras.get("name"), i, payloads, name)
            (before if payloads.result_name_first else after).append((TOOL_RESULT_NAME, called))
        for part, text in [*before, (role, content), *after]:
            out.roles.append(part)
            out.contents.append(text)
            out.origin.append(i)
        if calls:
            if TOOL_CALL not in written:
                raise UnsupportedConversationError(
                    f"message {i} has tool_calls, and {name} does not write tool calls", index=i, format=name
                )
            for k, call in enumerate(calls):
                fname, args = _call(call, i, k)
                if fname in payloads.refused_names:
                    raise UnsupportedConversationError(
                        f"message {i}: tool call {k} is named {fname!r}, and {name} writes a call with that name as "
                        "it writes the start of an answer's text: it would read back as text, not as a call. "
                        "Rename the function",
                        index=i,
                        format=name,
                    )
                try:
                    payloads.type_check(call, f"tool call {k}", name)
                    payloads.function_check(call, f"tool call {k}", name)
                    if not complete and k == len(calls) - 1 and isinstance(args, str):
                        # The arguments of an open turn's last call are the text written so far (as
                        # reading an open turn gives them): written as they are.
                        args_text = args
                    else:
                        args_text = payloads.args_text(args, f"tool call {k}")
                    parts = {TOOL_CALL: fname, TOOL_ARGS: args_text}
                    if TOOL_CALL_ID in written and indexed:  # the template writes the call's running index
                        parts[TOOL_CALL_ID] = str(calls_before + k)
                    elif TOOL_CALL_ID in written:  # the template writes the call's id
                        parts[TOOL_CALL_ID] = payloads.id_text(call.get("id"), f"the id of tool call {k}", name)
                except RenderError as e:
                    raise type(e)(f"message {i}: {e}", index=i, format=e.format or name) from None
                out.roles += payloads.call_order
                out.contents += [parts[r] for r in payloads.call_order]
                out.origin += [i] * len(payloads.call_order)
                last_call = fname
            calls_before += len(calls)
    if open_index != -1 and open_index != len(messages) - 1:
        raise RenderError(
            f"message {open_index} is open (complete=False) but is not the last message; "
            "only the final turn of a conversation can be left open",
            index=open_index,
        )
    if indexed:
        # Only the template's skipping of a result can be wrong here (see index_problems).
        for k, _ in index_problems(out.roles, out.contents)[:1]:
            i = out.origin[k]
            raise UnsupportedConversationError(
                f"message {i}: {name} writes a tool result's tool_call_id as the index of its call "
                f"({out.contents[k]!r} here, empty for none), and its template skips a result that begins a turn "
                "of results with an id that a result after the first of an earlier turn had; answer each call "
                "once, with the id of that call",
                index=i,
                format=name,
            )
    out.open_last = open_index != -1
    out.open_index = open_index
    if isinstance(tools, Sequence) and not isinstance(tools, str) and not tools and "tools" in payloads.refuse_empty:
        raise UnsupportedConversationError(
            f"tools=[]: {name}'s template writes an empty list of tools unlike no tools, as no turn of its "
            "grammar: render without tools (None), or give them",
            format=name,
        )
    if tools:
        if TOOL_DEF not in written:
            raise UnsupportedConversationError(f"{name} does not write tool definitions (tools=...)", format=name)
        if isinstance(tools, (str, bytes, Mapping)) or not isinstance(tools, Iterable):
            raise RenderError(f"tools must be a list of JSON schemas, not {type(tools).__name__}")
        out.defs = payloads.tool_texts(list(tools))
    return out


def _answered(last_call: str | None, given: str | None, i: int, payloads: Payloads, name: str) -> str:
    """The name a tool result is written with: that of the tool call it answers (its own, if
    given, must be the same)."""
    if last_call is None:
        text = (
            f"message {i} is a tool result, and {name} writes the name of the tool call it answers: "
            "no answer with tool calls comes before it (since the last answer without calls)"
        )
        reason = payloads.result_error
        raise UnsupportedConversationError(f"{reason} ({text})" if reason else text, index=i, format=name)
    if given is not None and given != last_call:
        raise UnsupportedConversationError(
            f"message {i} is a tool result named {given!r}, and {name} writes the name of the tool call it "
            f"answers, {last_call!r}: name it so, or leave its name out",
            index=i,
            format=name,
        )
    return last_call


def _read(m: Any, i: int) -> tuple[Any, Any, bool, dict[str, Any]]:
    if isinstance(m, Message):
        extras = {k: getattr(m, k) for k in _EXTRAS if getattr(m, k) is not None}
        return m.role, m.content, m.complete, extras
    if not isinstance(m, Mapping):
        raise RenderError(
            f"message {i} is a {type(m).__name__}; expected a chatgrammar.Message or a dict with 'role' and 'content'",
            index=i,
        )
    unknown = set(m) - _KEYS
    if unknown:
        names = ", ".join(sorted(repr(k) for k in unknown))
        raise RenderError(
            f"message {i} has keys this format does not know: {names}; a message holds 'role', 'content', "
            "optionally 'complete', and Hugging Face's 'reasoning_content', 'tool_calls', 'tool_call_id', 'name'",
            index=i,
        )
    if "role" not in m:
        raise RenderError(f"message {i} has no 'role'", index=i)
    content = m.get("content")
    if content is None and m.get("tool_calls"):
        content = ""  # an assistant message that only calls tools (OpenAI writes content None)
    if content is None:
        raise RenderError(f"message {i} has no 'content'", index=i)
    role = m["role"]
    if type(role) is not str:
        raise RenderError(f"message {i}: 'role' must be a string, not {type(role).__name__}", index=i)
    if type(content) is not str:
        raise RenderError(f"message {i}: 'content' must be a string, not {type(content).__name__}", index=i)
    complete = m.get("complete", True)
    if type(complete) is not bool:
        raise RenderError(f"message {i}: 'complete' must be a bool, not {type(complete).__name__}", index=i)
    extras = {k: m[k] for k in _EXTRAS if m.get(k) is not None}
    for key in ("reasoning_content", "tool_call_id", "name"):
        if key in extras and type(extras[key]) is not str:
            raise RenderError(f"message {i}: {key!r} must be a string, not {type(extras[key]).__name__}", index=i)
    calls = extras.get("tool_calls")
    if calls is not None and (isinstance(calls, (str, bytes, Mapping)) or not isinstance(calls, Iterable)):
        raise RenderError(f"message {i}: 'tool_calls' must be a list of calls, not {type(calls).__name__}", index=i)
    if calls is not None:
        extras["tool_calls"] = list(calls)
    return role, content, complete, extras


def _call(call: Any, i: int, k: int) -> tuple[str, Any]:
    """The name and arguments of one call, in Hugging Face's shape or the bare function's."""
    where = f"message {i}, tool call {k}"
    if not isinstance(call, Mapping):
        raise RenderError(f"{where} is a {type(call).__name__}; expected a dict", index=i)
    fn = call.get("function", call)
    if not isinstance(fn, Mapping):
        raise RenderError(f"{where}: 'function' must be a dict with 'name' and 'arguments'", index=i)
    fname = fn.get("name")
    if type(fname) is not str or not fname:
        raise RenderError(f"{where} has no function name (a non-empty string)", index=i)
    if "arguments" not in fn:
        raise RenderError(f"{where} ({fname!r}) has no 'arguments'", index=i)
    if "content_type" in fn:  # harmony's: gpt-oss's template writes it in place of its default, json
        raise UnsupportedConversationError(
            f"{where} ({fname!r}) has a 'content_type': chatgrammar writes the arguments of a call as its grammar "
            "writes them (JSON, with the content type its template writes by default); remove it",
            index=i,
        )
    return fname, fn["arguments"]


@dataclass
class Collapsed:
    messages: list[Message]
    spans: list[Span] | None
    tools: list[Any] | None
    diagnostics: list[Diagnostic]
    problems: int = 0  # payloads to report (diagnostics need the spans and the text)


def collapse(
    messages: Sequence[Message],
    payloads: Payloads,
    spans: Sequence[Span] | None = None,
    text: str | None = None,
    canonical: bool = True,
) -> Collapsed:
    """Fold structural turns into the messages they belong to (see the module docstring).

    With ``spans`` (and the ``text`` they point into), the folded message's span covers its
    parts, and payloads that are not JSON are reported where they stand; with ``canonical``,
    so are payloads that are JSON but not written as the template writes JSON (they read as
    their value, and render back written canonically).
    """
    out: list[Message] = []
    out_spans: list[Span] | None = [] if spans is not None else None
    tools: list[Any] | None = None
    diags: list[Diagnostic] = []
    problems = 0
    pending: tuple[Message, Span | None] | None = None  # reasoning waiting for its answer
    pending_result: dict[str, str] = {}  # a result's id and name, waiting for their result
    owner: int | None = None  # the assistant message the next call belongs to
    last_call: str | None = None  # the name of the last call since the last answer without calls
    n = len(messages)
    k = 0
    while k < n:
        m = messages[k]
        sp = spans[k] if spans is not None else None
        role = m.role
        if role == REASONING:
            pending = (m, sp)
            k += 1
            if k == n:  # the text stops while the model thinks: an open answer
                out.append(_with(make_message(ASSISTANT, "", False), reasoning_content=m.content))
                if out_spans is not None and sp is not None:
                    out_spans.append(Span(sp.start, sp.end, sp.end, sp.end))
            continue
        if role == TOOL_DEF:
            tools = tools if tools is not None else []
            # A definition cut short (a truncated text) is kept as the text so far.
            read, problem = payloads.read_tools(m.content, canonical) if m.complete else ([m.content], None)
            if problem is not None:
                problems += 1
                if text is not None and sp is not None:
                    diags.append(_diagnostic(problem, text, sp, f"tool definition {len(tools)}", None, "invalid-tool"))
            tools += read
            k += 1
            continue
        if role in (TOOL_RESULT_ID, TOOL_RESULT_NAME):
            # The id or the name of the result it stands before, or after (as the grammar writes them).
            key, first = (
                ("tool_call_id", payloads.result_id_first)
                if role == TOOL_RESULT_ID
                else ("name", payloads.result_name_first)
            )
            if role == TOOL_RESULT_NAME and m.complete and m.content != last_call:
                problems += 1  # a name the template does not write there
                if text is not None and sp is not None:
                    diags.append(_misnamed(text, sp, m.content, last_call, len(out) - (not first)))
            last = out[-1] if out else None
            if first:
                pending_result[key] = m.content
            elif last is not None and last.role == "tool":
                out[-1] = _with(last, **{key: m.content})
            k += 1
            continue
        if role in CALL_PARTS:
            # One call: its name, its arguments and its id, in the order the grammar writes them.
            found: dict[str, int] = {}
            j = k
            while j < n and messages[j].role in CALL_PARTS and messages[j].role not in found:
                found[messages[j].role] = j
                j += 1
            if TOOL_CALL not in found:  # a call's parts with no name: no grammar reads so
                k = j
                continue
            name_msg = messages[found[TOOL_CALL]]
            args_msg = messages[found[TOOL_ARGS]] if TOOL_ARGS in found else None
            args_sp = spans[found[TOOL_ARGS]] if spans is not None and args_msg is not None else None
            fn: dict[str, Any] = {"name": name_msg.content, "arguments": ""}
            call: dict[str, Any] = {"type": "function", "function": fn}
            if TOOL_CALL_ID in found:
                call = {"id": messages[found[TOOL_CALL_ID]].content, **call}
            if args_msg is not None:
                # Arguments still being written (an open turn) are the text so far.
                done = args_msg.complete
                args, problem = payloads.read_args(args_msg.content, canonical) if done else (args_msg.content, None)
                fn["arguments"] = args
                if problem is not None:
                    problems += 1
                    if text is not None and args_sp is not None:
                        index = len(out) - 1 if owner is not None else len(out)
                        what = f"the arguments of tool call {name_msg.content!r}"
                        diags.append(_diagnostic(problem, text, args_sp, what, index, "invalid-arguments"))
            complete = all(messages[q].complete for q in found.values())
            if owner is None:  # calls with no answer before them: an answer with no content
                out.append(make_message(ASSISTANT, "", True))
                if out_spans is not None and sp is not None:
                    out_spans.append(Span(sp.start, sp.start, sp.start, sp.start))
                owner = len(out) - 1
            last_call = name_msg.content
            prev = out[owner]
            calls = [*(prev.tool_calls or []), call]
            out[owner] = _with(prev, tool_calls=calls, complete=prev.complete and complete)
            ends = [spans[q].end for q in found.values()] if spans is not None else []
            if out_spans is not None and ends:
                o = out_spans[owner]
                out_spans[owner] = Span(o.start, max(o.end, *ends), o.content_start, o.content_end)
            k = j
            continue
        msg = m
        if pending_result and role == "tool":
            msg, pending_result = _with(m, **pending_result), {}
        if role == ASSISTANT:
            last_call = None
        if pending is not None and role == ASSISTANT:
            r, rsp = pending
            msg = _with(m, reasoning_content=r.content) if r.content else m
            if out_spans is not None and rsp is not None and sp is not None:
                sp = Span(rsp.start, sp.end, sp.content_start, sp.content_end)
        pending = None
        out.append(msg)
        if out_spans is not None and sp is not None:
            out_spans.append(sp)
        owner = len(out) - 1 if role == ASSISTANT else None
        k += 1
    return Collapsed(out, out_spans, tools, diags, problems)


def _with(m: Message, **changes: Any) -> Message:
    data = {k: getattr(m, k) for k in ("role", "content", "complete", *_EXTRAS)}
    data.update(changes)
    return Message(**{k: v for k, v in data.items() if v is not None})


def _misnamed(text: str, sp: Span, written: str, called: str | None, index: int) -> Diagnostic:
    """A tool result written with another name than that of the tool call it answers."""
    return Diagnostic.at(
        text,
        MISNAMED,
        f"a tool result names {written!r}, where the template writes the name of the tool call it answers, {called!r}",
        "the template never writes this: the result reads with the name written, and does not render back",
        sp.content_start,
        sp.content_end,
        index,
    )


def _diagnostic(problem: ValueError | str, text: str, sp: Span, what: str, index: int | None, code: str) -> Diagnostic:
    """Where a payload (the content of ``sp``) is wrong, and how."""
    if problem == NONCANONICAL:
        return Diagnostic.at(
            text,
            "noncanonical-json",
            f"{what}: JSON, but not written as the template writes it (json.dumps)",
            "they read as their value; render writes them back canonically",
            sp.content_start,
            sp.content_end,
            index,
        )
    at = sp.content_start + getattr(problem, "pos", 0)
    msg = getattr(problem, "msg", str(problem)).lower()
    msg = msg[:-3] + " here" if msg.endswith(" at") else msg  # json's "Unterminated string starting at"
    # JSON, but not of the shape the template writes (tool-defs: fields) says so itself.
    detail = f"not JSON ({msg})" if isinstance(problem, json.JSONDecodeError) else msg
    return Diagnostic.at(
        text,
        code,
        f"{what}: {detail}; kept as text",
        "the raw text is kept where the value would be (function.arguments, .tools); "
        "render writes it as the template writes a string there",
        at,
        sp.content_end,
        index,
    )
