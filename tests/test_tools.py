"""Tool calls, tool results, tool definitions and reasoning: rendered as the templates do, read back.

The generated properties of test_conformance, test_roundtrip and test_reading cover these
conversations for every format that writes them (the conversation generator walks the
grammar, structural turns included). Here: realistic conversations against the real
templates, model output (malformed JSON, tags inside thinking, a prefilled <think>),
streaming events, and the errors.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any

import pytest
import reference
from hypothesis import given, settings
from hypothesis import strategies as st

import chatgrammar as cg
from chatgrammar._ir import STRUCTURAL
from chatgrammar._payloads import JSON_DEFS
from chatgrammar.testing import safe_contents


def _roles(fmt: cg.Format) -> set[str | None]:
    """The roles of the format's message rules, structural roles included."""
    return {s.role for s in fmt._c.shapes.values()}


WITH_TOOLS = [n for n in cg.formats() if "tool_call" in _roles(cg.get_format(n))]
WITH_REASONING = [n for n in cg.formats() if "reasoning" in _roles(cg.get_format(n))]

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city (°C).",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME = {
    "type": "function",
    "function": {"name": "get_time", "description": "The time.", "parameters": {"type": "object", "properties": {}}},
}


def _call(name: str, arguments: Any, call_id: str | None = None) -> dict[str, Any]:
    call: dict[str, Any] = {"type": "function", "function": {"name": name, "arguments": arguments}}
    if call_id is not None:
        call["id"] = call_id
    return call


AGENT = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Weather in Paris and Zürich, and the time?"},
    {
        "role": "assistant",
        "content": "Let me check.",
        "tool_calls": [
            _call("get_weather", {"city": "Paris"}, "call00001"),
            _call("get_weather", {"city": "Zürich"}, "call00002"),
            _call("get_time", {}, "call00003"),
        ],
    },
    {"role": "tool", "content": '{"temp": 21}', "tool_call_id": "call00001", "name": "get_weather"},
    {"role": "tool", "content": '{"temp": 17}', "tool_call_id": "call00002", "name": "get_weather"},
    {"role": "tool", "content": "14:05", "tool_call_id": "call00003", "name": "get_time"},
    {"role": "assistant", "content": "Paris 21°C, Zürich 17°C; it is 14:05."},
    {"role": "user", "content": "Thanks!"},
]
# The same work one call at a time, for templates that write one call per answer (Llama 3.1).
AGENT_SINGLE = [
    *AGENT[:2],
    {"role": "assistant", "content": "Let me check.", "tool_calls": [AGENT[2]["tool_calls"][0]]},
    AGENT[3],
    {"role": "assistant", "content": "", "tool_calls": [_call("get_weather", {"city": "Zürich"}, "call00002")]},
    AGENT[4],
    {"role": "assistant", "content": "", "tool_calls": [_call("get_time", {}, "call00003")]},
    *AGENT[5:],
]


def _parallel(fmt: cg.Format) -> bool:
    """Whether the format writes several calls in one answer."""
    two = _taken(fmt, [{"role": "user", "content": "x"}, {**AGENT[2], "tool_calls": AGENT[2]["tool_calls"][:2]}])
    try:
        fmt.render(two, tools=_tools(fmt, WEATHER, TIME))
    except cg.UnsupportedConversationError:
        return False
    return True


def _agent(fmt: cg.Format) -> list[dict[str, Any]]:
    return _taken(fmt, AGENT if _parallel(fmt) else AGENT_SINGLE)


def _calls_without_content(fmt: cg.Format) -> bool:
    """Whether the format writes an answer's calls only when it has no content (DeepSeek V3: _empty)."""
    return any(s.role == "assistant" and s.content.transform == "empty" for s in fmt._c.shapes.values())


def _taken(fmt: cg.Format, msgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages as the format's template takes them: arguments as JSON text where it takes
    text only (tool-args: text), and no content beside calls where it writes calls only without."""
    text_args = fmt._c.payloads.args == "text"
    out = []
    for m in msgs:
        if m.get("tool_calls"):
            calls = [
                {**c, "function": {**c["function"], "arguments": json.dumps(c["function"]["arguments"])}}
                if text_args and not isinstance(c["function"]["arguments"], str)
                else c
                for c in m["tool_calls"]
            ]
            m = {**m, "tool_calls": calls, "content": "" if _calls_without_content(fmt) else m["content"]}
        out.append(m)
    return out


def _indexed(fmt: cg.Format) -> bool:
    """Whether the template writes the calls' running indexes as their ids (Command R7B), not the caller's."""
    return fmt._c.payloads.call_ids == "index"


def _tools(fmt: cg.Format, *tools: Any) -> list[Any] | None:
    """The tools, for a format whose template writes them (DeepSeek-V3.1's writes none: refused)."""
    return list(tools) if "tool_def" in _roles(fmt) else None


def test_tools_before_the_last_user_message_and_an_earlier_equal_one_are_refused() -> None:
    """Mistral's template writes the tools before every user message equal to the last: no grammar can."""
    fmt = cg.get_format("mistral-small-3.2")
    msgs = [*[{"role": "user", "content": "Again?"}, {"role": "assistant", "content": "Yes."}] * 2][:3]
    theirs = reference.render(fmt, [cg.Message(**m) for m in msgs], tools=[WEATHER])
    assert theirs.count(fmt._c.spec.terminals["_AVAILABLE_TOOLS"]) == 2
    with pytest.raises(cg.UnsupportedConversationError, match="make them differ") as e:
        fmt.render(msgs, tools=[WEATHER])
    assert e.value.index == 2
    msgs[0] = {"role": "user", "content": "Again!"}
    assert fmt.render(msgs, tools=[WEATHER], date=reference.FIXED_DATE) == reference.render(
        fmt, [cg.Message(**m) for m in msgs], tools=[WEATHER]
    )


def test_the_formats_with_tools_and_reasoning() -> None:
    assert {"qwen2.5", "qwen3"} <= set(WITH_TOOLS)
    assert {"qwen3", "deepseek-r1-distill"} <= set(WITH_REASONING)


@pytest.mark.parametrize("name", WITH_TOOLS)
@pytest.mark.parametrize("gen", [False, True])
def test_an_agent_conversation_renders_like_the_template(name: str, gen: bool) -> None:
    fmt = cg.get_format(name)
    agent = _agent(fmt)
    msgs = [cg.Message(**m) for m in agent]
    day = reference.FIXED_DATE
    tools = _tools(fmt, WEATHER, TIME)
    ours = fmt.render(agent, tools=tools, add_generation_prompt=gen, date=day)
    theirs = reference.render(fmt, msgs, gen, tools=tools)
    assert ours == theirs, reference.first_difference(ours, theirs)
    # Dicts and Message objects render alike; the same conversation without tools too.
    assert fmt.render(msgs, tools=tools, add_generation_prompt=gen, date=day) == ours
    assert fmt.render(agent, add_generation_prompt=gen, date=day) == reference.render(fmt, msgs, gen)


@pytest.mark.parametrize("name", WITH_TOOLS)
def test_an_agent_conversation_reads_back(name: str) -> None:
    fmt = cg.get_format(name)
    agent = _agent(fmt)
    tools = _tools(fmt, WEATHER, TIME)
    text = fmt.render(agent, tools=tools)
    got = fmt.parse(text)
    assert got == fmt.normalize(agent, tools=tools)
    # Definitions read back as JSON, or as their text where the template writes no JSON (gpt-oss's TypeScript).
    payloads = fmt._c.payloads
    as_text = [payloads.tool_text(t, k) for k, t in enumerate(tools or [])]
    assert got.tools == (tools if payloads.defs in JSON_DEFS else as_text)
    calls = [c for m in got if m.tool_calls for c in m.tool_calls]
    given = [c for m in agent if m.get("tool_calls") for c in m["tool_calls"]]
    assert [c["function"] for c in calls] == [c["function"] for c in given]
    # What the template writes of the ids, the results' ids and names reads back as written:
    # the caller's ids, or the running indexes of the calls where the template writes those.
    written = {c.get("id") for c in calls} | {m.tool_call_id for m in got} | {m.name for m in got}
    ids = {str(k) for k in range(len(given))} if _indexed(fmt) else {c["id"] for c in given}
    assert written <= {None} | ids | {"get_weather", "get_time"}
    results = [m.content for m in got if m.role in ("tool", fmt._header.get("role-alias", {}).get("tool"))]
    assert results == ['{"temp": 21}', '{"temp": 17}', "14:05"]
    assert fmt.render(got) == text  # the parsed messages bring their tools
    assert json.loads(json.dumps([m.to_dict() for m in got])) == [m.to_dict() for m in got]


@pytest.mark.parametrize("name", WITH_TOOLS)
def test_spans_of_an_answer_cover_its_calls(name: str) -> None:
    fmt = cg.get_format(name)
    agent = _agent(fmt)
    tools = _tools(fmt, WEATHER, TIME)
    text, spans = fmt.render_spans(agent, tools=tools)
    parsed = fmt.parse(text, spans=True)
    k = next(i for i, m in enumerate(agent) if m.get("tool_calls"))
    span = spans[k]
    assert span is not None
    # "" where the template drops it; found by its calls, as normalize may merge messages before it
    # (Mistral Nemo's system message reads back as part of the last user message).
    written = next(m for m in fmt.normalize(agent, tools=tools) if m.tool_calls).content
    assert text[span.content_start : span.content_end] == written
    for call in agent[k]["tool_calls"]:
        assert fmt._c.payloads.args_text(call["function"]["arguments"], "") in text[span.start : span.end]
    assert span in (parsed.spans or [])


def test_malformed_arguments_are_kept_and_reported() -> None:
    fmt = cg.get_format("qwen2.5")
    prompt = fmt.render([{"role": "user", "content": "Weather?"}], tools=[WEATHER], add_generation_prompt=True)
    # What a model writes: the call's shape, as the format writes a call, with broken JSON inside.
    good = fmt.render(
        [{"role": "user", "content": "Weather?"}, {"role": "assistant", "content": "", "tool_calls": [_call("f", {})]}],
        tools=[WEATHER],
    )[len(prompt) :]
    completion = good.replace("{}", '{"city": "Par', 1)
    got = fmt.parse_completion(completion, prompt=prompt)
    call = got.message.tool_calls[0] if got.message and got.message.tool_calls else None
    assert call is not None and call["function"] == {"name": "f", "arguments": '{"city": "Par'}
    (d,) = got.diagnostics
    start = completion.index('{"city"')
    assert d.code == "invalid-arguments" and d.index == 0
    assert start <= d.pos < d.end == start + len('{"city": "Par')  # where the JSON breaks, to the end of it
    # In a transcript, a strict parse keeps the text too, and reports where it stands.
    parsed = fmt.parse(prompt + completion)
    assert [x.code for x in parsed.diagnostics] == ["invalid-arguments"]
    assert parsed.diagnostics[0].pos == len(prompt) + d.pos


def test_tags_inside_thinking_are_thinking() -> None:
    fmt = cg.get_format("qwen3")
    msgs = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "No call needed.", "reasoning_content": "Use <tool_call> tags? <tools> no."},
    ]
    text = fmt.render(msgs, tools=[WEATHER])
    assert text == reference.render(fmt, [cg.Message(**m) for m in msgs], tools=[WEATHER])
    got = fmt.parse(text)
    assert got[-1] == cg.Message(**msgs[-1])
    prompt = fmt.render(msgs[:1], tools=[WEATHER], add_generation_prompt=True)
    answer = fmt.parse_completion(text[len(prompt) :], prompt=prompt).message
    assert answer == cg.Message(**msgs[-1])


def test_reasoning_before_the_last_question_is_dropped_as_the_template_does() -> None:
    fmt = cg.get_format("qwen3")
    msgs = [
        {"role": "user", "content": "1+1?"},
        {"role": "assistant", "content": "2", "reasoning_content": "one and one"},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4", "reasoning_content": "two and two"},
    ]
    text = fmt.render(msgs)
    assert text == reference.render(fmt, [cg.Message(**m) for m in msgs])
    assert "one and one" not in text and "two and two" in text
    assert fmt.parse(text) == fmt.normalize(msgs)
    assert fmt.normalize(msgs)[1].reasoning_content is None  # the loss, declared


_PIECES = st.text(alphabet="abc xyz\n.:<>/", min_size=1, max_size=30)


@pytest.mark.parametrize("enable_thinking", [True])
@settings(max_examples=40)
@given(reasoning=_PIECES, answer=st.text(alphabet="abc xyz\n.", max_size=30), cut=st.booleans())
def test_completion_after_a_prefilled_think(enable_thinking: bool, reasoning: str, answer: str, cut: bool) -> None:
    """DeepSeek-R1's prompt opens <think>: the model's output starts inside it."""
    fmt = cg.get_format("deepseek-r1-distill")
    terminals = fmt._c.spec.terminals
    if terminals["_THINK_END"] in reasoning:
        reasoning = reasoning.replace("/", "")
    prompt = fmt.render([{"role": "user", "content": "Hi"}], add_generation_prompt=True, enable_thinking=True)
    assert prompt.endswith(terminals["_THINK"] + terminals["_NL"])
    completion = reasoning + terminals["_THINK_END"] + answer + ("" if cut else fmt.eos or "")
    got = fmt.parse_completion(completion, prompt=prompt, enable_thinking=True)
    assert got.message == cg.Message(role="assistant", content=answer, reasoning_content=reasoning, complete=not cut), [
        str(d) for d in got.diagnostics
    ]
    assert not got.diagnostics
    # Cut inside the thinking: an answer still thinking, open (text that may begin "</think>" is held back).
    if any(reasoning.endswith(terminals["_THINK_END"][:k]) for k in range(1, len(terminals["_THINK_END"]))):
        return
    early = fmt.parse_completion(reasoning, prompt=prompt, enable_thinking=True).message
    assert early is not None and early.reasoning_content == reasoning and early.content == ""
    assert not early.complete


def test_thinking_a_model_wrote_renders_as_the_template_writes_the_history() -> None:
    """A transcript holding DeepSeek-R1's output reads its thinking; render drops it, as the template does."""
    fmt = cg.get_format("deepseek-r1-distill")
    t = fmt._c.spec.terminals
    text = t["_BOS"] + t["_USER"] + "Hi" + t["_ASSISTANT"] + t["_THINK"] + t["_NL"] + "<" + t["_THINK_END"] + "/think>"
    got = fmt.parse(text)
    assert got[-1] == cg.Message(role="assistant", content="/think>", reasoning_content="<", complete=False)
    again = fmt.render(got)
    assert again == reference.render(fmt, got)
    assert fmt.parse(again) == fmt.normalize(got) != got


def test_an_empty_think_block_is_no_reasoning() -> None:
    fmt = cg.get_format("deepseek-r1-distill")
    terminals = fmt._c.spec.terminals
    prompt = fmt.render([{"role": "user", "content": "Hi"}], add_generation_prompt=True, enable_thinking=True)
    got = fmt.parse_completion(terminals["_THINK_END"] + "Hello" + (fmt.eos or ""), prompt=prompt, enable_thinking=True)
    assert got.message == cg.Message(role="assistant", content="Hello")


CITIES = ("Paris", "Zürich", "東京")


def _three_calls(name: str) -> tuple[str, str]:
    """A prompt and a completion calling three tools (one, where the template writes one only)."""
    fmt = cg.get_format(name)
    user = [{"role": "user", "content": "Weather in three cities?"}]
    prompt = fmt.render(user, tools=_tools(fmt, WEATHER), add_generation_prompt=True)
    calls = [
        _call("get_weather", {"city": c}, f"call0000{k}") for k, c in enumerate(CITIES[: 3 if _parallel(fmt) else 1])
    ]
    answer = _taken(fmt, [{"role": "assistant", "content": "", "tool_calls": calls}])
    full = fmt.render([*user, *answer], tools=_tools(fmt, WEATHER))
    if full.startswith(prompt):
        return prompt, full[len(prompt) :]
    # DeepSeek-R1's prompt opens (and closes) a thinking block its history does not write: the
    # model writes its calls after it as the history writes them after the part both share (up
    # to the token where they part).
    k = len(os.path.commonprefix([prompt, full]))
    while k and not any(full.startswith(t, k) for t in fmt.tokens):
        k -= 1
    return prompt, full[k:]


@pytest.mark.parametrize("name", WITH_TOOLS)
@pytest.mark.parametrize("size", [1, 16])
def test_streamed_tool_calls(name: str, size: int) -> None:
    prompt, completion = _three_calls(name)
    parser = cg.StreamParser(name)
    events: list[cg.Event] = parser.feed(prompt)
    for k in range(0, len(completion), size):
        events += parser.feed(completion[k : k + size])
    events += parser.close()
    n = 3 if _parallel(cg.get_format(name)) else 1
    starts = [e for e in events if isinstance(e, cg.ToolCallStart)]
    assert [(e.index, e.name) for e in starts] == [(i, "get_weather") for i in range(n)]
    message = starts[0].message
    for i, city in enumerate(CITIES[:n]):
        text = "".join(e.arguments_text for e in events if isinstance(e, cg.ToolCallDelta) and e.index == i)
        assert json.loads(text) == {"city": city}
    ends = [e for e in events if isinstance(e, cg.ToolCallEnd)]
    assert [e.index for e in ends] == list(range(n))
    # A format that writes the calls' ids gives them on their ends (and on their starts when written first).
    fmt = cg.get_format(name)
    ids = (
        [str(k) if _indexed(fmt) else f"call0000{k}" for k in range(n)] if "tool_call_id" in _roles(fmt) else [None] * n
    )
    assert [e.id for e in ends] == ids
    assert all(e.id in (None, ids[e.index]) for e in starts)
    # Each call's events come in order: start, its deltas, its end; the message ends last.
    order = [(type(e).__name__, getattr(e, "index", None)) for e in events if getattr(e, "message", None) == message]
    assert order[0] == ("ToolCallStart", 0) and order[-1] == ("ToolCallEnd", n - 1)
    assert events[-1] == cg.MessageEnd(message, True)


def _joined(events: list[cg.Event]) -> tuple[str, list[tuple[str, Any]], bool]:
    """The last message of a stream: its content, its calls (name, arguments), and whether it and
    each of its calls ended complete."""
    last = max(e.index for e in events if isinstance(e, cg.MessageStart))
    content = "".join(e.text for e in events if isinstance(e, cg.ContentDelta) and e.index == last)
    names = {e.index: e.name for e in events if isinstance(e, cg.ToolCallStart) and e.message == last}
    deltas = [e for e in events if isinstance(e, cg.ToolCallDelta) and e.message == last]
    args = {i: "".join(e.arguments_text for e in deltas if e.index == i) for i in names}
    ends = [e.complete for e in events if isinstance(e, cg.MessageEnd) and e.index == last]
    calls_ended = [e.index for e in events if isinstance(e, cg.ToolCallEnd) and e.message == last] == sorted(names)
    return content, [(names[i], json.loads(args[i])) for i in sorted(names)], ends == [True] and calls_ended


@pytest.mark.parametrize("name", WITH_TOOLS)
def test_a_stream_stopped_by_the_model_ends_as_parse_completion_reads_it(name: str) -> None:
    # A model stops at the first stop string, which the server does not pass on: close(stopped=True)
    # ends the answer there, complete, even where the template writes more after it (Command R7B
    # opens the chatbot's turn again) or the text ends with part of a call's closing (Llama's "}").
    fmt = cg.get_format(name)
    prompt, completion = _three_calls(name)
    at, stop = min((completion.find(s), s) for s in fmt.stop if s in completion)
    parser = cg.StreamParser(name)
    events: list[cg.Event] = parser.feed(prompt)
    for k in range(0, at, 5):  # the server passes the stop string on or not (with it: the same)
        events += parser.feed(completion[k : min(k + 5, at)])
    events += parser.close(stopped=True)
    got = fmt.parse_completion(completion[: at + len(stop)], prompt=prompt)
    assert got.stop == stop and got.message is not None and not got.diagnostics
    calls = [(c["function"]["name"], c["function"]["arguments"]) for c in got.message.tool_calls or []]
    calls = [(n, json.loads(a) if isinstance(a, str) else a) for n, a in calls]
    assert calls and _joined(events) == (got.message.content, calls, True)


@pytest.mark.parametrize("name", [n for n in cg.formats() if cg.get_format(n).stop])
def test_a_stream_stopped_by_the_model_ends_its_answer_as_parse_completion_reads_it(name: str) -> None:
    # Every format: the text the model wrote before its stop string ends the answer, whatever the
    # template writes after it (a plain-text stop string such as Pygmalion's "\n" included).
    fmt = cg.get_format(name)
    user = [{"role": "user", "content": "Hi"}]
    prompt = fmt.render(user, add_generation_prompt=True)
    full = fmt.render([*user, {"role": "assistant", "content": "Hello there."}])
    if not full.startswith(prompt):  # DeepSeek-R1 (test_streamed_reasoning), Command R7B (above)
        pytest.skip(f"{name}'s prompt opens a thinking block its history does not write")
    completion = full[len(prompt) :]
    found = [(completion.find(s), s) for s in fmt.stop if s in completion]
    if not found:
        pytest.skip(f"{name} writes none of its stop strings after an answer")
    at, stop = min(found)
    parser = cg.StreamParser(name)
    events: list[cg.Event] = parser.feed(prompt)
    for k in range(0, at, 3):
        events += parser.feed(completion[k : min(k + 3, at)])
    events += parser.close(stopped=True)
    got = fmt.parse_completion(completion[: at + len(stop)], prompt=prompt).message
    assert got is not None and got.complete
    assert _joined(events) == (got.content, [], True)


@pytest.mark.parametrize("name", WITH_TOOLS)
@settings(max_examples=25)
@given(data=st.data())
def test_a_completion_cut_inside_its_calls_reads_open_and_renders_back(name: str, data: st.DataObject) -> None:
    # A model stopped mid-call (max_tokens, a stop string): the last call's arguments are the text
    # so far, kept as text, and the open turn renders back to exactly what was read.
    fmt = cg.get_format(name)
    prompt, completion = _three_calls(name)
    cut = data.draw(st.integers(1, len(completion)))
    text = prompt + completion[:cut]
    try:
        got = fmt.parse(text)
    except cg.ParseError:
        return  # a cut inside a token or a name: not a text the format writes
    options = fmt.options_in(text)
    tools = getattr(got, "tools", None)
    again = fmt.render(got, tools=tools, **options) if tools else fmt.render(got, **options)
    assert fmt.parse(again) == got
    if not got[-1].complete and got[-1].tool_calls:
        args = got[-1].tool_calls[-1]["function"]["arguments"]
        # (Except after DeepSeek-R1's prefilled <think>, which its history does not write.)
        if isinstance(args, str) and not any(rule.endswith("__read") for rule in fmt._c.shapes):
            assert again == text


# What a model writes where its template drops the thinking of an answer from the history, in the
# format's own terminals: DeepSeek-R1 after the <think> its prompt opens, Command R7B in its turn.
MODEL_THINKING = {
    "deepseek-r1-distill": lambda t, thought, answer: thought + t["_THINK_END"] + answer,
    "command-r7b": lambda t, thought, answer: (
        t["_START_THINKING"] + thought + t["_END_THINKING"] + t["_START_RESPONSE"] + answer + t["_END_RESPONSE"]
    ),
}


def _reasoned(name: str) -> tuple[str, str, dict[str, Any]]:
    """A prompt, and a completion that thinks (mentioning a tag) then answers."""
    fmt = cg.get_format(name)
    options: dict[str, Any] = {"enable_thinking": True} if "enable_thinking" in fmt.option_values else {}
    user = [{"role": "user", "content": "Hi"}]
    prompt = fmt.render(user, add_generation_prompt=True, **options)
    answer = {"role": "assistant", "content": "Hello there.", "reasoning_content": "Greet <tool_call> them."}
    full = fmt.render([*user, answer], **options)
    if full.startswith(prompt) and answer["reasoning_content"] in full:
        return prompt, full[len(prompt) :], options
    # The history drops the thinking: the model writes it in its own answer.
    write = MODEL_THINKING[name]
    completion = write(fmt._c.spec.terminals, answer["reasoning_content"], answer["content"]) + (fmt.eos or "")
    return prompt, completion, options


@pytest.mark.parametrize("name", WITH_REASONING)
@pytest.mark.parametrize("size", [1, 16])
def test_streamed_reasoning(name: str, size: int) -> None:
    prompt, completion, options = _reasoned(name)
    parser = cg.StreamParser(name, **options)
    events: list[cg.Event] = parser.feed(prompt)
    for k in range(0, len(completion), size):
        events += parser.feed(completion[k : k + size])
    events += parser.close()
    last = max(e.index for e in events if isinstance(e, cg.MessageStart))
    thinking = "".join(e.text for e in events if isinstance(e, cg.ReasoningDelta) and e.index == last)
    answer = "".join(e.text for e in events if isinstance(e, cg.ContentDelta) and e.index == last)
    assert thinking.strip("\n") == "Greet <tool_call> them."
    assert answer.strip("\n") == "Hello there."
    expected = cg.get_format(name).parse_completion(completion, prompt=prompt, **options).message
    assert expected is not None and (thinking, answer) == (expected.reasoning_content, expected.content)


def test_structure_the_format_does_not_write_is_refused() -> None:
    with pytest.raises(cg.UnsupportedConversationError, match="tool definitions"):
        cg.render([{"role": "user", "content": "Hi"}], "chatml", tools=[WEATHER])
    with pytest.raises(cg.UnsupportedConversationError, match="reasoning"):
        cg.render([{"role": "assistant", "content": "x", "reasoning_content": "y"}], "llama3")
    with pytest.raises(cg.UnsupportedConversationError, match="tool calls"):
        cg.render([{"role": "user", "content": "x"}, AGENT[2]], "zephyr")
    # Ids and names of tool results a template does not write are a loss normalize shows.
    got = cg.get_format("chatml").normalize([{"role": "tool", "content": "1", "tool_call_id": "c1"}])
    assert got == [cg.Message(role="tool", content="1")]


@pytest.mark.parametrize("role", STRUCTURAL)
def test_structural_roles_are_reserved(role: str) -> None:
    with pytest.raises(cg.RenderError, match="keeps for the parts of a message"):
        cg.render([{"role": role, "content": "x"}], "qwen3")


@pytest.mark.parametrize(
    ("call", "match"),
    [
        ("not a dict", "tool call 0 is a str"),
        ({"type": "function", "function": {"arguments": {}}}, "no function name"),
        ({"function": {"name": "f"}}, "no 'arguments'"),
        (_call("f", {"x": {1, 2}}), "not JSON"),
    ],
)
def test_malformed_calls_are_refused(call: Any, match: str) -> None:
    msgs = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "", "tool_calls": [call]}]
    with pytest.raises(cg.RenderError, match=match) as e:
        cg.render(msgs, "qwen2.5")
    assert e.value.index == 1


def test_delimiters_in_a_call_are_refused_where_they_stand() -> None:
    fmt = cg.get_format("qwen2.5")
    msgs = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "", "tool_calls": [_call("a", {})]}]
    msgs[1]["tool_calls"].append(_call("b<|im_end|>", {}))
    with pytest.raises(cg.UnsafeContentError, match=r"message 1 \(the name of its tool call 1\)") as e:
        fmt.render(msgs)
    assert e.value.index == 1 and e.value.delimiter == "<|im_end|>"
    # Content that spells a call is refused too: it would read back as one.
    spelled = fmt.render(
        [{"role": "user", "content": "x"}, {"role": "assistant", "content": "", "tool_calls": [_call("f", {})]}]
    )
    body = spelled[spelled.index("<tool_call>") : spelled.rindex("</tool_call>") + len("</tool_call>")]
    with pytest.raises(cg.UnsafeContentError):
        fmt.render([{"role": "user", "content": "x"}, {"role": "assistant", "content": body}])


@pytest.mark.parametrize("name", WITH_TOOLS)
@settings(max_examples=25)
@given(data=st.data())
def test_arguments_as_strings(name: str, data: st.DataObject) -> None:
    """OpenAI-style arguments (a JSON string) render as the template writes them, and read back decoded."""
    fmt = cg.get_format(name)
    args = data.draw(st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=3))
    content = "" if _calls_without_content(fmt) else data.draw(safe_contents(fmt))
    msgs = [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": content, "tool_calls": [_call("f", json.dumps(args), "call00001")]},
    ]
    try:
        ours = fmt.render(msgs, date=reference.FIXED_DATE)
    except cg.UnsafeContentError:
        return
    assert ours == reference.render(fmt, [cg.Message(**m) for m in msgs])
    assert fmt.parse(ours) == fmt.normalize(msgs, date=reference.FIXED_DATE)


# -- DeepSeek V2.5, V3 and the R1 distills: their templates' tool quirks ----------------------

DEEPSEEK = ["deepseek-v3", "deepseek-v2.5", "deepseek-r1-distill"]


def _ds_call(fmt: cg.Format, name: str, arguments: Any) -> dict[str, Any]:
    """A call as the format's template takes it (arguments as JSON text where it takes text only)."""
    return _taken(fmt, [{"role": "assistant", "content": "", "tool_calls": [_call(name, arguments)]}])[0]["tool_calls"][
        0
    ]


def _ds_rounds(fmt: cg.Format) -> list[dict[str, Any]]:
    """Two rounds of calls and results, then a question: the flags the templates never reset."""
    c = functools.partial(_ds_call, fmt)
    return [
        {"role": "user", "content": "Weather in Paris and Zürich?"},
        {"role": "assistant", "content": "", "tool_calls": [c("get_weather", {"city": "Paris"}), c("get_weather", {})]},
        {"role": "tool", "content": "21"},
        {"role": "tool", "content": "17"},
        {"role": "assistant", "content": "21°C and 17°C."},
        {"role": "user", "content": "And the time?"},
        {"role": "assistant", "content": "", "tool_calls": [c("get_time", {})]},
        {"role": "tool", "content": "14:05"},
    ]


@pytest.mark.parametrize("name", DEEPSEEK)
@pytest.mark.parametrize("gen", [False, True])
def test_deepseek_only_the_first_call_and_result_of_a_conversation_open_their_blocks(name: str, gen: bool) -> None:
    fmt = cg.get_format(name)
    t = fmt._c.spec.terminals
    msgs = _ds_rounds(fmt)
    text = fmt.render(msgs, add_generation_prompt=gen)
    assert text == reference.render(fmt, [cg.Message(**m) for m in msgs], gen)
    assert text.count(t["_FIRST_CALL"]) == 1 and text.count(t["_NEXT_CALL"]) == 2
    assert text.count(t["_TOOL_OUTPUTS_BEGIN"]) == 1 and text.count(t["_NL"] + t["_TOOL_OUTPUT_BEGIN"]) == 2
    assert text.count(t["_TOOL_CALLS_END"] + t["_EOS"]) == 2
    # V2.5 and V3 close every call but the first of the conversation (none here); R1 each answer's calls.
    single = msgs[:1] + [{**msgs[1], "tool_calls": msgs[1]["tool_calls"][:1]}]
    first = fmt.render(single)
    assert first == reference.render(fmt, [cg.Message(**m) for m in single])
    assert first.endswith(t["_TOOL_CALLS_END"] + t["_EOS"]) == (name == "deepseek-r1-distill")
    # After results an answer opens with the outputs' end; the text ends with it, with no prompt.
    assert t["_TOOL_OUTPUTS_END"] + "21°C" in text
    assert text.endswith(t["_TOOL_OUTPUTS_END"])
    got = fmt.parse(text)
    assert got == fmt.normalize(msgs, add_generation_prompt=gen) == [cg.Message(**m) for m in msgs]
    assert fmt.render(got) == text


@pytest.mark.parametrize("name", DEEPSEEK)
def test_deepseek_content_beside_calls_is_refused(name: str) -> None:
    """V3 writes the content and drops the calls; R1 writes the content as an answer of its own."""
    fmt = cg.get_format(name)
    call = _ds_call(fmt, "get_time", {})
    msgs = [{"role": "user", "content": "Time?"}, {"role": "assistant", "content": "Checking.", "tool_calls": [call]}]
    with pytest.raises(cg.UnsupportedConversationError, match="beside its tool calls") as e:
        fmt.render(msgs)
    assert e.value.index == 1
    theirs = reference.render(fmt, [cg.Message(**m) for m in msgs])
    if name == "deepseek-r1-distill":  # the same text as the calls, then the text as the next answer
        split = [msgs[0], {**msgs[1], "content": ""}, {"role": "assistant", "content": "Checking."}]
        assert theirs == fmt.render(split) and fmt.parse(theirs) == [cg.Message(**m) for m in split]
    else:  # the calls are gone
        assert theirs == fmt.render([msgs[0], {"role": "assistant", "content": "Checking."}])


@pytest.mark.parametrize("name", ["deepseek-v3", "deepseek-v2.5"])
def test_deepseek_v3_call_only_answers_in_a_row_are_refused(name: str) -> None:
    """V3 writes <｜tool▁calls▁end｜><｜end▁of▁sentence｜> after each later call: two answers read as one."""
    fmt = cg.get_format(name)
    c = functools.partial(_ds_call, fmt)
    one = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "", "tool_calls": [c("f", {})]}]
    two = [*one, {"role": "assistant", "content": "", "tool_calls": [c("g", {})]}]
    merged = [one[0], {"role": "assistant", "content": "", "tool_calls": [c("f", {}), c("g", {})]}]
    as_given = [cg.Message(**m) for m in two]
    assert reference.render(fmt, as_given) == reference.render(fmt, [cg.Message(**m) for m in merged])
    with pytest.raises(cg.UnsupportedConversationError, match="Give message 1 all the calls") as e:
        fmt.render(two)
    assert e.value.index == 2
    assert fmt.parse(fmt.render(merged)) == [cg.Message(**m) for m in merged]
    # With a message between them, both are written.
    between = [*one, {"role": "user", "content": "y"}, two[2]]
    assert fmt.render(between) == reference.render(fmt, [cg.Message(**m) for m in between])


@pytest.mark.parametrize("name", ["deepseek-v3", "deepseek-v2.5"])
def test_deepseek_v3_arguments_are_text(name: str) -> None:
    fmt = cg.get_format(name)
    user = {"role": "user", "content": "x"}
    as_dict = [user, {"role": "assistant", "content": "", "tool_calls": [_call("f", {"a": 1})]}]
    with pytest.raises(reference.TemplateRaised):
        reference.render(fmt, [cg.Message(**m) for m in as_dict])
    with pytest.raises(cg.UnsupportedConversationError, match="JSON string") as e:
        fmt.render(as_dict)
    assert e.value.index == 1
    # Text is written as it is and read back as text, JSON or not (reported when not).
    for args in ('{"a": 1}', '{"a":1}', "not json"):
        msgs = [user, {"role": "assistant", "content": "", "tool_calls": [_call("f", args)]}]
        text = fmt.render(msgs)
        assert text == reference.render(fmt, [cg.Message(**m) for m in msgs])
        got = fmt.parse(text, strict=False)
        assert got[1].tool_calls == [_call("f", args)]
        assert [d.code for d in got.diagnostics] == ([] if args != "not json" else ["invalid-arguments"])


def test_deepseek_r1_writes_arguments_as_json() -> None:
    """R1 writes arguments | tojson: a string (OpenAI's shape) as a JSON string."""
    fmt = cg.get_format("deepseek-r1-distill")
    for args in ({"a": 1}, '{"a": 1}'):
        msgs = [
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": "", "tool_calls": [_call("f", args)]},
        ]
        text = fmt.render(msgs)
        assert text == reference.render(fmt, [cg.Message(**m) for m in msgs])
        assert json.dumps(args) in text
        assert fmt.parse(text)[1].tool_calls == [_call("f", args)]


@pytest.mark.parametrize("name", DEEPSEEK)
def test_deepseek_calls_of_another_type_are_refused(name: str) -> None:
    fmt = cg.get_format(name)
    call = _ds_call(fmt, "f", {})
    for other in ({**call, "type": "code"}, {"function": call["function"]}):
        msgs = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "", "tool_calls": [other]}]
        with pytest.raises(cg.UnsupportedConversationError, match="'function' only") as e:
            fmt.render(msgs)
        assert e.value.index == 1
    # The template writes the type it is given, and raises on a call with none.
    typed = [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": "", "tool_calls": [{**call, "type": "code"}]},
    ]
    assert "code" + fmt._c.spec.terminals["_TOOL_SEP"] in reference.render(fmt, [cg.Message(**m) for m in typed])
    untyped = [typed[0], {**typed[1], "tool_calls": [{"function": call["function"]}]}]
    with pytest.raises(reference.TemplateRaised):
        reference.render(fmt, [cg.Message(**m) for m in untyped])
    with pytest.raises(cg.UnsupportedConversationError, match="tool definitions"):
        fmt.render(typed[:1], tools=[WEATHER])


@pytest.mark.parametrize("size", [1, 7, 1000])
def test_deepseek_r1_completion_thinks_then_calls(size: int) -> None:
    """R1's prompt opens <think>: the model thinks, closes it, then writes its calls."""
    fmt = cg.get_format("deepseek-r1-distill")
    t = fmt._c.spec.terminals
    user = [{"role": "user", "content": "Weather in Paris?"}]
    prompt = fmt.render(user, add_generation_prompt=True, enable_thinking=True)
    history = fmt.render(
        [*user, {"role": "assistant", "content": "", "tool_calls": [_call("get_weather", {"city": "Paris"})]}]
    )
    calls = history[history.index(t["_TOOL_CALLS_BEGIN"]) :]
    completion = "Paris, so get_weather.\n" + t["_THINK_END"] + "\n\n" + calls
    got = fmt.parse_completion(completion, prompt=prompt, enable_thinking=True)
    assert not got.diagnostics
    assert got.message == cg.Message(
        role="assistant",
        content="\n\n",
        reasoning_content="Paris, so get_weather.\n",
        tool_calls=[_call("get_weather", {"city": "Paris"})],
    )
    parser = cg.StreamParser(fmt, enable_thinking=True)
    events = parser.feed(prompt)
    for k in range(0, len(completion), size):
        events += parser.feed(completion[k : k + size])
    events += parser.close()
    kinds = [type(e).__name__ for e in events if getattr(e, "index", None) == 1 or getattr(e, "message", None) == 1]
    assert kinds[0] == "MessageStart" and kinds[-1] == "MessageEnd"
    assert kinds.index("ReasoningDelta") < kinds.index("ToolCallStart") < kinds.index("ToolCallEnd")
    args = "".join(e.arguments_text for e in events if isinstance(e, cg.ToolCallDelta))
    assert json.loads(args) == {"city": "Paris"}


# Command R7B writes no id of the caller's: each call's running index in the conversation, and a
# result's tool_call_id as the index of the call with that id (call-ids: index).
COHERE = "command-r7b"
TIME_TEXT = (
    '{"name": "get_time", "description": "", "parameters": {"type": "object", "properties": {}}, "responses": null}'
)


def _cohere_agent() -> list[dict[str, Any]]:
    return [
        *AGENT[:6],
        {"role": "assistant", "content": "", "tool_calls": [_call("get_time", {}, "call00004")]},
        {"role": "tool", "content": "14:06", "tool_call_id": "call00004"},
        *AGENT[6:],
    ]


def test_call_ids_are_written_as_running_indexes_and_read_back_as_them() -> None:
    fmt = cg.get_format(COHERE)
    agent = _cohere_agent()
    text = fmt.render(agent, tools=[WEATHER, TIME])
    assert text == reference.render(fmt, [cg.Message(**m) for m in agent], tools=[WEATHER, TIME])
    assert '{"tool_call_id": "3", "tool_name": "get_time", "parameters": {}}' in text
    assert '"tool_call_id": "3",\n        "results": {\n            "0": "14:06"' in text
    got = fmt.parse(text)
    assert [c["id"] for m in got if m.tool_calls for c in m.tool_calls] == ["0", "1", "2", "3"]
    assert [m.tool_call_id for m in got if m.role == "tool"] == ["0", "1", "2", "3"]
    assert got == fmt.normalize(agent, tools=[WEATHER, TIME])  # the loss of the ids, declared
    assert fmt.render(got) == text


def test_a_result_answering_no_call_is_written_with_an_empty_id() -> None:
    fmt = cg.get_format(COHERE)
    msgs = [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": "", "tool_calls": [_call("f", {}), _call("g", {}, "c2")]},
        {"role": "tool", "content": "for the call with no id"},  # Jinja: undefined == undefined
        {"role": "tool", "content": "for nothing", "tool_call_id": "c9"},
    ]
    text = fmt.render(msgs)
    assert text == reference.render(fmt, [cg.Message(**m) for m in msgs])
    assert [m.tool_call_id for m in fmt.parse(text) if m.role == "tool"] == ["0", ""]


def test_a_result_the_template_skips_is_refused() -> None:
    """The template keeps the ids of the results after the first of a turn, and skips a later result with one."""
    fmt = cg.get_format(COHERE)
    msgs = [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": "", "tool_calls": [_call("f", {}, "a"), _call("g", {}, "b")]},
        {"role": "tool", "content": "one", "tool_call_id": "a"},
        {"role": "tool", "content": "two", "tool_call_id": "b"},
        {"role": "user", "content": "again?"},
        {"role": "tool", "content": "three", "tool_call_id": "b"},
    ]
    assert "three" not in reference.render(fmt, [cg.Message(**m) for m in msgs])
    with pytest.raises(cg.UnsupportedConversationError, match="skips a result") as e:
        fmt.render(msgs)
    assert e.value.index == 5
    # The same id within one turn of results is written twice, and reads back so.
    msgs[4:] = [{"role": "tool", "content": "three", "tool_call_id": "b"}]
    text = fmt.render(msgs)
    assert text == reference.render(fmt, [cg.Message(**m) for m in msgs])
    assert [m.tool_call_id for m in fmt.parse(text) if m.role == "tool"] == ["0", "1", "1"]


@pytest.mark.parametrize(
    ("old", "new", "what"),
    [
        ('"tool_call_id": "1", "tool_name"', '"tool_call_id": "2", "tool_name"', "call id '2' where"),
        ('"tool_call_id": "1",\n', '"tool_call_id": "7",\n', "result id '7', but the text has 2"),
    ],
)
def test_ids_that_are_not_the_running_indexes_do_not_parse(old: str, new: str, what: str) -> None:
    fmt = cg.get_format(COHERE)
    msgs = [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": "", "tool_calls": [_call("f", {}, "a"), _call("g", {}, "b")]},
        {"role": "tool", "content": "one", "tool_call_id": "a"},
        {"role": "tool", "content": "two", "tool_call_id": "b"},
    ]
    text = fmt.render(msgs).replace(old, new)
    with pytest.raises(cg.ParseError, match=what) as e:
        fmt.parse(text)
    assert text[e.value.pos] == new.split('"')[3]  # at the number
    got = fmt.parse(text, strict=False)
    assert [d.code for d in got.diagnostics] == ["call-index"] and got.diagnostics[0].pos == e.value.pos
    # A result skipped by the template, when the text has it, does not parse either.
    skipped = fmt.render(
        [*msgs, {"role": "user", "content": "y"}, {"role": "tool", "content": "0", "tool_call_id": "a"}]
    )
    with pytest.raises(cg.ParseError, match="skips such a result"):
        fmt.parse(
            skipped.replace(
                '"tool_call_id": "0",\n        "results": {\n            "0": "0"',
                '"tool_call_id": "1",\n        "results": {\n            "0": "0"',
            )
        )


def test_tool_definitions_are_written_field_by_field() -> None:
    """{"name": "NAME", "description": "DESC", "parameters": ..., "responses": null}, name and description unescaped."""
    fmt = cg.get_format(COHERE)
    user = [cg.Message(role="user", content="x")]
    time = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
    text = fmt.render(user, tools=[WEATHER, time])
    assert text == reference.render(fmt, user, tools=[WEATHER, time])
    assert (
        '{"name": "get_time", "description": "", "parameters": {"type": "object", "properties": {}}, "responses": null}'
        in text
    )
    assert fmt.parse(text).tools == [WEATHER, time]  # an empty description reads back as none
    # What tojson would escape, the template writes as it is: it would not read back as JSON.
    quoted = {"type": "function", "function": {**WEATHER["function"], "description": 'Say "hi"'}}
    assert '"description": "Say "hi""' in reference.render(fmt, user, tools=[quoted])
    with pytest.raises(cg.UnsupportedConversationError, match="holds characters JSON escapes"):
        fmt.render(user, tools=[quoted])
    # Without parameters the template fails (tojson of undefined); so does chatgrammar.
    bare = {"type": "function", "function": {"name": "f"}}
    with pytest.raises(reference.TemplateRaised):
        reference.render(fmt, user, tools=[bare])
    with pytest.raises(cg.UnsupportedConversationError, match="no 'parameters'"):
        fmt.render(user, tools=[bare])
    # The type, other keys of the function and "responses" are not written: normalize shows it.
    extra = {"type": "function", "function": {**TIME["function"], "strict": True, "responses": {"200": {}}}}
    assert fmt.normalize(user, tools=[extra]).tools == [TIME]
    # A definition that is JSON, but not the object the template writes, is kept as text and reported.
    odd = text.replace('"responses": null}\n]', '"responses": {}}\n]')
    got = fmt.parse(odd)
    assert got.tools is not None and got.tools[1] == TIME_TEXT.replace("null", "{}")
    assert [d.code for d in got.diagnostics] == ["invalid-tool"]
    assert "not the object the template writes" in got.diagnostics[0].message
    assert fmt.render(got) == odd


def test_thinking_and_text_of_answers_as_the_template_writes_them() -> None:
    fmt = cg.get_format(COHERE)
    msgs = [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": "dropped", "reasoning_content": "plan", "tool_calls": [_call("f", {})]},
        {"role": "tool", "content": "1"},
        {"role": "assistant", "content": "", "tool_calls": [_call("f", {})]},  # an empty thinking block
        {"role": "tool", "content": "2"},
        {"role": "assistant", "content": "Done.", "reasoning_content": "not written"},
    ]
    for options in ({}, {"enable_thinking": True}, {"enable_citations": True}):
        text = fmt.render(msgs, tools=[TIME], **options)
        assert text == reference.render(fmt, [cg.Message(**m) for m in msgs], tools=[TIME], options=options)
        assert fmt.options_in(text) == {"enable_thinking": False, "enable_citations": False, **options}
    t = fmt._c.spec.terminals
    assert t["_START_THINKING"] + "plan" + t["_END_THINKING"] in text
    assert t["_START_THINKING"] + t["_END_THINKING"] + t["_START_ACTION"] in text
    assert "dropped" not in text and "not written" not in text
    got = fmt.parse(text)
    assert got == fmt.normalize(msgs, tools=[TIME], enable_citations=True)
    assert (got[1].content, got[1].reasoning_content, got[5].reasoning_content) == ("", "plan", None)


@pytest.mark.parametrize("enable_thinking", [False, True])
def test_completions_read_what_the_model_writes(enable_thinking: bool) -> None:
    fmt = cg.get_format(COHERE)
    t = fmt._c.spec.terminals
    prompt = fmt.render([{"role": "user", "content": "x"}], tools=[WEATHER], enable_thinking=enable_thinking)
    calls = '[\n    {"tool_call_id": "0", "tool_name": "get_weather", "parameters": {"city": "Par}\n]'
    thought = t["_START_THINKING"] + "Look it up." + t["_END_THINKING"] if enable_thinking else ""
    action = thought + t["_START_ACTION"] + calls + t["_END_ACTION"] + t["_EOT"]
    got = fmt.parse_completion(action, prompt=prompt, enable_thinking=enable_thinking)
    assert got.message == cg.Message(
        role="assistant",
        content="",
        reasoning_content="Look it up." if enable_thinking else None,
        tool_calls=[{"id": "0", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Par'}}],
    )
    assert [d.code for d in got.diagnostics] == ["invalid-arguments"]
    answer = thought + t["_START_RESPONSE"] + "Sunny." + t["_END_RESPONSE"] + t["_EOT"]
    got = fmt.parse_completion(answer, prompt=prompt, enable_thinking=enable_thinking)
    assert got.message == cg.Message(
        role="assistant", content="Sunny.", reasoning_content="Look it up." if enable_thinking else None
    )
    assert not got.diagnostics
    # Streamed in small pieces, the same (then the template opens the chatbot's turn again).
    parser = cg.StreamParser(COHERE, enable_thinking=enable_thinking)
    events: list[cg.Event] = parser.feed(prompt)
    transcript = action + prompt[prompt.rindex(t["_EOT"]) + len(t["_EOT"]) :]
    for k in range(0, len(transcript), 5):
        events += parser.feed(transcript[k : k + 5])
    events += parser.close()
    assert "".join(e.text for e in events if isinstance(e, cg.ReasoningDelta)) == (
        "Look it up." if enable_thinking else ""
    )
    assert [(e.index, e.name) for e in events if isinstance(e, cg.ToolCallStart)] == [(0, "get_weather")]
    assert [e.id for e in events if isinstance(e, cg.ToolCallEnd)] == ["0"]
    assert "".join(e.arguments_text for e in events if isinstance(e, cg.ToolCallDelta)) == '{"city": "Par'


def test_tool_calls_with_no_thinking_block_are_read() -> None:
    """With enable_thinking, the model may skip its plan: its turn then opens with the calls."""
    fmt = cg.get_format(COHERE)
    t = fmt._c.spec.terminals
    prompt = fmt.render([{"role": "user", "content": "x"}], tools=[TIME], enable_thinking=True)
    calls = '[\n    {"tool_call_id": "0", "tool_name": "get_time", "parameters": {}}\n]'
    completion = t["_START_ACTION"] + calls + t["_END_ACTION"] + t["_EOT"]
    got = fmt.parse_completion(completion, prompt=prompt, enable_thinking=True)
    assert got.message is not None and got.message.tool_calls == [
        {"id": "0", "type": "function", "function": {"name": "get_time", "arguments": {}}}
    ]
    assert not got.diagnostics


# -- gpt-oss (OpenAI harmony) ------------------------------------------------------------------

GPT_OSS = cg.get_format("gpt-oss")


def _like_the_template(msgs: list[dict[str, Any]], gen: bool = False, tools: list[Any] | None = None) -> str:
    """gpt-oss's render of ``msgs``, checked against its real template."""
    ours = GPT_OSS.render(msgs, add_generation_prompt=gen, tools=tools, date=reference.FIXED_DATE)
    theirs = reference.render(GPT_OSS, [cg.Message(**m) for m in msgs], gen, tools=tools)
    assert ours == theirs, reference.first_difference(ours, theirs)
    return ours


def test_gpt_oss_writes_thinking_after_the_last_answer_only() -> None:
    """The template writes thinking (its "thinking" key) for calls after the last answer without calls, and
    for a last answer with no generation prompt after it; everywhere else it drops it."""
    msgs: list[dict[str, Any]] = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "", "reasoning_content": "T1", "tool_calls": [_call("get_weather", {})]},
        {"role": "tool", "content": "21"},
        {"role": "assistant", "content": "Mild.", "reasoning_content": "T2"},
        {"role": "user", "content": "And now?"},
        {"role": "assistant", "content": "", "reasoning_content": "T3", "tool_calls": [_call("get_weather", {})]},
        {"role": "tool", "content": "22"},
    ]
    for gen in (False, True):
        text = _like_the_template(msgs, gen)
        assert "T1" not in text and "T2" not in text and "T3" in text
        expected = GPT_OSS.normalize(msgs, add_generation_prompt=gen)
        assert [m.reasoning_content for m in expected if m.role == "assistant" and m.complete] == [None, None, "T3"]
        assert GPT_OSS.parse(text) == expected
    # The last answer, with no generation prompt after it, keeps its thinking and ends with <|return|>.
    last = [*msgs, {"role": "assistant", "content": "Warmer.", "reasoning_content": "T4"}]
    text = _like_the_template(last)
    assert "T3" not in text and text.endswith("T4<|end|><|start|>assistant<|channel|>final<|message|>Warmer.<|return|>")
    assert GPT_OSS.parse(text)[-1] == cg.Message(**last[-1])
    assert "T4" not in _like_the_template(last, gen=True)


def test_gpt_oss_reads_the_thinking_key_as_reasoning_content() -> None:
    answer = {"role": "assistant", "content": "Hi.", "thinking": "Greet."}
    msgs = [{"role": "user", "content": "Hi"}, answer]
    text = GPT_OSS.render(msgs)
    assert text == GPT_OSS.render([msgs[0], {"role": "assistant", "content": "Hi.", "reasoning_content": "Greet."}])
    assert GPT_OSS.parse(text)[-1] == cg.Message(role="assistant", content="Hi.", reasoning_content="Greet.")
    assert GPT_OSS.render([msgs[0], {**answer, "reasoning_content": "Greet."}]) == text  # both, the same
    with pytest.raises(cg.RenderError, match="both 'reasoning_content' and 'thinking'") as e:
        GPT_OSS.render([msgs[0], {**answer, "reasoning_content": "Other."}])
    assert e.value.index == 1
    with pytest.raises(cg.RenderError, match="'thinking'"):
        cg.render([msgs[0], answer], "qwen3")  # only a format whose template reads it takes it


def test_gpt_oss_writes_the_content_beside_a_call_as_its_thinking() -> None:
    msgs: list[dict[str, Any]] = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [_call("get_weather", {"city": "Paris"})]},
    ]
    text = _like_the_template(msgs)
    assert "<|channel|>analysis<|message|>Checking.<|end|>" in text
    got = GPT_OSS.parse(text)
    assert got[-1].content == "" and got[-1].reasoning_content == "Checking."  # the loss, declared
    assert got == GPT_OSS.normalize(msgs)
    # Content and thinking both: the template raises, and so does chatgrammar, with its reason.
    both = [msgs[0], {**msgs[1], "reasoning_content": "Hmm."}]
    with pytest.raises(reference.TemplateRaised):
        reference.render(GPT_OSS, [cg.Message(**m) for m in both])
    with pytest.raises(cg.UnsupportedConversationError, match="Cannot pass both content and thinking") as e:
        GPT_OSS.render(both)
    assert e.value.index == 1


def test_gpt_oss_writes_one_call_per_answer() -> None:
    msgs = [{"role": "user", "content": "x"}, {**AGENT[2], "content": ""}]
    with pytest.raises(cg.UnsupportedConversationError, match="at most 1 tool call in an answer; message 1 has 3"):
        GPT_OSS.render(msgs)
    with pytest.raises(cg.UnsupportedConversationError, match="content_type"):  # the template writes it instead
        GPT_OSS.render(
            [
                msgs[0],
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [{"function": {"name": "f", "arguments": {}, "content_type": "code"}}],
                },
            ]
        )


def test_gpt_oss_names_a_result_after_the_call_it_answers() -> None:
    call = {"role": "assistant", "content": "", "tool_calls": [_call("get_weather", {"city": "Paris"})]}
    msgs: list[dict[str, Any]] = [{"role": "user", "content": "Weather?"}, call, {"role": "tool", "content": "21°C"}]
    text = _like_the_template(msgs, gen=True)
    assert '<|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>"21°C"<|end|>' in text
    got = GPT_OSS.parse(text)
    assert got[3] == cg.Message(role="tool", content="21°C", name="get_weather")  # the name, as written
    named = [*msgs[:2], {**msgs[2], "name": "get_weather"}]
    assert GPT_OSS.render(named, add_generation_prompt=True, date=reference.FIXED_DATE) == text
    with pytest.raises(cg.UnsupportedConversationError, match="named 'get_time'.*'get_weather'") as e:
        GPT_OSS.render([*msgs[:2], {**msgs[2], "name": "get_time"}])
    assert e.value.index == 2
    # With no call since the last answer without calls, the template has no name to write: it raises.
    orphan = [msgs[0], {"role": "assistant", "content": "Sunny."}, msgs[2]]
    with pytest.raises(reference.TemplateRaised, match="no previous assistant message with a tool call"):
        reference.render(GPT_OSS, [cg.Message(**m) for m in orphan])
    with pytest.raises(cg.UnsupportedConversationError, match="no previous assistant message with a tool call"):
        GPT_OSS.render(orphan)
    # A text naming another tool than the call: never written by the template, so not a gpt-oss text.
    wrong = text.replace("functions.get_weather to=", "functions.get_time to=")
    with pytest.raises(cg.ParseError, match="names 'get_time'"):
        GPT_OSS.parse(wrong)
    tolerant = GPT_OSS.parse(wrong, strict=False)
    assert [d.code for d in tolerant.diagnostics] == ["misnamed-result"]
    assert tolerant[3].name == "get_time"


def test_gpt_oss_tool_definitions_read_back_as_their_text() -> None:
    text = _like_the_template([{"role": "user", "content": "Hi"}], tools=[WEATHER, TIME])
    got = GPT_OSS.parse(text)
    assert got.tools == [
        "// Current weather for a city (°C).\ntype get_weather = (_: {\ncity: string,\n}) => any;",
        "// The time.\ntype get_time = () => any;",
    ]
    assert GPT_OSS.render(got, date=reference.FIXED_DATE) == text
    # A definition without a description: the template raises (it adds the description to text).
    bare = {"type": "function", "function": {"name": "f", "parameters": {}}}
    with pytest.raises(reference.TemplateRaised):
        reference.render(GPT_OSS, [cg.Message(role="user", content="Hi")], tools=[bare])
    with pytest.raises(cg.UnsupportedConversationError, match="tool 0: .*'description' is missing"):
        GPT_OSS.render([{"role": "user", "content": "Hi"}], tools=[bare])


def test_gpt_oss_reads_what_the_model_writes_after_the_prompt() -> None:
    user = [{"role": "user", "content": "Weather in Paris?"}]
    prompt = GPT_OSS.render(user, tools=[WEATHER], add_generation_prompt=True)
    assert prompt.endswith("<|start|>assistant")
    thought = "<|channel|>analysis<|message|>Use the tool.<|end|>"
    call = '<|start|>assistant to=functions.get_weather<|channel|>commentary json<|message|>{"city": "Paris"}<|call|>'
    got = GPT_OSS.parse_completion(thought + call, prompt=prompt)
    assert got.stop == "<|call|>" and not got.diagnostics
    assert got.message == cg.Message(
        role="assistant",
        content="",
        reasoning_content="Use the tool.",
        tool_calls=[_call("get_weather", {"city": "Paris"})],
    )
    answer = "<|start|>assistant<|channel|>final<|message|>It is mild.<|return|>"
    got = GPT_OSS.parse_completion(thought + answer, prompt=prompt)
    assert got.message == cg.Message(role="assistant", content="It is mild.", reasoning_content="Use the tool.")
    assert got.stop == "<|return|>"


_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=False), st.text(max_size=4))
_ODD = st.one_of(st.text(alphabet="ab \n/\"'{}", max_size=6), _LEAF)  # what a schema should not hold there
_KIND = st.sampled_from(["string", "number", "integer", "boolean", "object", "array", "null"])
_KEY = st.text(alphabet="abc_", min_size=1, max_size=3)


def _schema(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    common = {
        "description": _ODD,
        "default": st.recursive(_LEAF, lambda i: st.lists(i, max_size=2) | st.dictionaries(_KEY, i, max_size=2)),
        "nullable": st.booleans() | _LEAF,
    }
    enum = st.lists(_ODD, max_size=3) | _ODD
    properties = st.dictionaries(_KEY, inner, max_size=3) | _ODD
    required = st.lists(_KEY, max_size=3) | _ODD
    return st.one_of(
        st.fixed_dictionaries({"type": st.just("string")}, optional={**common, "enum": enum}),
        st.fixed_dictionaries({"type": st.just("array")}, optional={**common, "items": inner | _ODD}),
        st.fixed_dictionaries(
            {"type": st.just("object")}, optional={**common, "properties": properties, "required": required}
        ),
        st.fixed_dictionaries({"oneOf": st.lists(inner, max_size=3) | _ODD}, optional=common),
        st.fixed_dictionaries({"type": st.lists(_KIND, max_size=3) | _ODD}, optional=common),
        st.fixed_dictionaries({"type": _KIND}, optional=common),
    )


_SCHEMAS = st.recursive(st.fixed_dictionaries({"type": _KIND}) | _ODD, _schema, max_leaves=8)
_PARAMETERS = st.fixed_dictionaries(
    {"type": st.just("object"), "properties": st.dictionaries(_KEY, _SCHEMAS, max_size=4)},
    optional={"required": st.lists(_KEY, max_size=3) | _ODD},
)
_DEFINITIONS = st.fixed_dictionaries(
    {
        "type": st.just("function"),
        "function": st.fixed_dictionaries(
            {"name": _KEY, "description": st.text(alphabet="ab /", max_size=6)},
            optional={"parameters": _PARAMETERS | _SCHEMAS},
        ),
    }
) | st.fixed_dictionaries({"function": st.dictionaries(st.sampled_from(["name", "description", "parameters"]), _ODD)})


@settings(max_examples=300)
@given(tool=_DEFINITIONS)
def test_gpt_oss_writes_tool_definitions_as_its_template_does(tool: Any) -> None:
    """JSON schemas as TypeScript: nested objects, arrays, enums, defaults, nullable, oneOf, type lists, and
    values a schema should not hold there (the template then raises, or writes what Jinja makes of them)."""
    user = [cg.Message(role="user", content="Hi")]
    try:
        theirs = reference.render(GPT_OSS, user, tools=[tool])
    except reference.TemplateRaised:
        with pytest.raises(cg.UnsupportedConversationError, match="tool 0: the template cannot write"):
            GPT_OSS.render(user, tools=[tool], date=reference.FIXED_DATE)
        return
    try:
        ours = GPT_OSS.render(user, tools=[tool], date=reference.FIXED_DATE)
    except cg.UnsafeContentError:  # a blank line or a token inside the definition: it would not read back
        return
    assert ours == theirs, reference.first_difference(ours, theirs)


# The calls harmony's documentation (openai/harmony, docs/format.md) shows the model writing, besides the
# template's own form: the recipient after the channel, the content type after <|constrain|>, or none.
HARMONY_CALLS = [
    '<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city": "Paris"}<|call|>',
    '<|channel|>commentary to=functions.get_weather<|constrain|>json<|message|>{"city": "Paris"}<|call|>',
    '<|channel|>commentary to=functions.get_weather json<|message|>{"city": "Paris"}<|call|>',
    '<|channel|>commentary to=functions.get_weather<|message|>{"city": "Paris"}<|call|>',
    ' to=functions.get_weather<|channel|>commentary <|constrain|>json<|message|>{"city": "Paris"}<|call|>',
    ' to=functions.get_weather<|channel|>commentary json<|message|>{"city": "Paris"}<|call|>',  # the template's
]


@pytest.mark.parametrize("call", HARMONY_CALLS)
@pytest.mark.parametrize("thought", [False, True])
def test_gpt_oss_reads_the_calls_harmony_documents(call: str, thought: bool) -> None:
    prompt = GPT_OSS.render(
        [{"role": "user", "content": "Weather in Paris?"}], tools=[WEATHER], add_generation_prompt=True
    )
    completion = ("<|channel|>analysis<|message|>Need the tool.<|end|><|start|>assistant" if thought else "") + call
    expected = cg.Message(
        role="assistant",
        content="",
        tool_calls=[_call("get_weather", {"city": "Paris"})],
        reasoning_content="Need the tool." if thought else None,
    )
    got = GPT_OSS.parse_completion(completion, prompt=prompt)
    assert (got.message, got.stop, got.diagnostics) == (expected, "<|call|>", [])
    # Streamed, as the model writes it, in small chunks.
    parser = cg.StreamParser(GPT_OSS)
    events: list[cg.Event] = parser.feed(prompt)
    for k in range(0, len(completion), 3):
        events += parser.feed(completion[k : k + 3])
    events += parser.close()
    assert [(e.index, e.name) for e in events if isinstance(e, cg.ToolCallStart)] == [(0, "get_weather")]
    args = "".join(e.arguments_text for e in events if isinstance(e, cg.ToolCallDelta))
    assert json.loads(args) == {"city": "Paris"}
    thinking = "".join(e.text for e in events if isinstance(e, cg.ReasoningDelta))
    assert thinking == (expected.reasoning_content or "")
    # In a transcript, the call reads the same, and renders back as the template writes calls.
    transcript = GPT_OSS.parse(prompt + completion)
    assert transcript[-1] == expected
    again = GPT_OSS.render(transcript)
    assert GPT_OSS.parse(again) == transcript
    assert again.endswith(HARMONY_CALLS[-1]) and (again == prompt + completion) == (call == HARMONY_CALLS[-1])


# -- Functionary v3.2 and Phi-4-mini -----------------------------------------------------------

# Definitions that take each branch of Functionary's TypeScript macros: descriptions with and
# without their final period, defaults (a string's quoted), bounds (0 is no comment alone),
# examples (written after a comment only, except for objects and arrays), enums, nullable, integer
# and float as number, a type list, oneOf (its formats; with none, an empty "Format="), nested
# objects, arrays of objects, of arrays and of enums, items without a type, a non-mapping property
# (skipped), and a tool given as its function object, with no description and no parameters.
QUIRKY_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "search",
            "description": "Search the catalogue.",
            "parameters": {
                "type": "object",
                "required": ["query", "filters"],
                "properties": {
                    "query": {"type": "string", "description": "What to look for", "examples": ["red 'shoes'", 3]},
                    "limit": {"type": "integer", "default": 10, "maximum": 50, "minimum": 0},
                    "only": {"type": "number", "maximum": 0},
                    "lang": {"type": "string", "default": "en", "enum": ["en", "fr", 1], "nullable": True},
                    "ratio": {"type": "float", "examples": ["ignored without a comment"]},
                    "kind": {"type": ["string", "null"], "format": "uri"},
                    "when": {"oneOf": [{"type": "string", "format": "date"}, {"type": "integer", "format": "epoch"}]},
                    "any": {"oneOf": [{"type": "string"}, {"type": "String"}, {"description": "untyped"}]},
                    "filters": {
                        "type": "object",
                        "description": "Filters.",
                        "examples": [{"size": 9}],
                        "properties": {
                            "size": {"type": "integer", "description": "EU size"},
                            "tags": {"type": "array", "items": {"type": "string"}, "description": "Tags"},
                            "grid": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
                            "picks": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}},
                        },
                    },
                    "rows": {
                        "type": "array",
                        "items": {"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]},
                    },
                    "raw": {"type": "array", "items": {}, "description": "Anything"},
                    "loose": {"type": "array"},
                    "skipped": "not a mapping",
                },
            },
        },
    },
    {"name": "ping"},
]


def test_functionary_writes_typescript_definitions_as_its_template() -> None:
    fmt = cg.get_format("functionary-v3.2")
    msgs = [{"role": "user", "content": "Find shoes."}]
    text = fmt.render(msgs, tools=QUIRKY_TOOLS, add_generation_prompt=True)
    assert text == reference.render(fmt, [cg.Message(**m) for m in msgs], True, tools=QUIRKY_TOOLS)
    # oneOf without formats: an empty "Format="; its types unique, case-insensitively. No description: "// ".
    assert "// Format=\nany?: string,\n" in text and "// \ntype ping = () => any;" in text
    back = fmt.parse(text)
    assert back.tools == [fmt._c.payloads.tool_text(t, k) for k, t in enumerate(QUIRKY_TOOLS)]
    assert fmt.render(back) == text


@pytest.mark.parametrize(
    ("tool", "why"),
    [
        ({"type": "function", "function": {"name": "f", "description": None}}, "adds NoneType to a text"),
        ({"type": "function", "function": {"name": 5}}, "adds int to a text"),
        (
            {"name": "f", "parameters": {"type": "object", "properties": {"x": {"type": "string", "description": 1}}}},
            "description is a int",
        ),
    ],
)
def test_functionary_refuses_the_definitions_its_template_raises_on(tool: dict[str, Any], why: str) -> None:
    fmt = cg.get_format("functionary-v3.2")
    msgs = [cg.Message(role="user", content="Hi")]
    with pytest.raises(reference.TemplateRaised):
        reference.render(fmt, msgs, tools=[tool])
    with pytest.raises(cg.UnsupportedConversationError, match=why):
        fmt.render(msgs, tools=[tool])


def test_functionary_refuses_the_definitions_its_template_writes_otherwise() -> None:
    fmt = cg.get_format("functionary-v3.2")
    msgs = [cg.Message(role="user", content="Hi")]
    # A tool with no name: the template writes nothing for it, which would not read back.
    nameless = {"type": "function", "function": {"description": "No name."}}
    assert reference.render(fmt, msgs, tools=[nameless]) == reference.render(fmt, msgs, tools=[])
    with pytest.raises(cg.UnsupportedConversationError, match="has no name"):
        fmt.render(msgs, tools=[nameless])
    # A code interpreter: the template writes a further system turn of instructions.
    interpreter = {"type": "code_interpreter"}
    assert "Jupyter" in reference.render(fmt, msgs, tools=[interpreter])
    with pytest.raises(cg.UnsupportedConversationError, match="code interpreter"):
        fmt.render(msgs, tools=[interpreter])


def test_functionary_calls_that_would_read_as_text_are_refused() -> None:
    fmt = cg.get_format("functionary-v3.2")
    user = {"role": "user", "content": "Hi"}

    def answer(content: str, *calls: tuple[str, Any]) -> dict[str, Any]:
        return {"role": "assistant", "content": content, "tool_calls": [_call(n, a) for n, a in calls]}

    # The template writes a call named "all" as it writes an answer's text: it reads back as text.
    named_all = [user, answer("", ("all", "Hello"))]
    theirs = reference.render(fmt, [cg.Message(**m) for m in named_all])
    assert fmt.parse(theirs)[-1] == cg.Message(role="assistant", content="Hello")
    with pytest.raises(cg.UnsupportedConversationError, match="named 'all'.*Rename the function") as e:
        fmt.render(named_all)
    assert e.value.index == 1
    # Arguments (and an answer's text before calls) end at the next ">>>": holding one, they would not.
    for msgs in ([user, answer("", ("f", '{"x": ">>>g"}'))], [user, answer("See >>>f\n{}", ("f", "{}"))]):
        with pytest.raises(cg.UnsafeContentError, match="'>>>'"):
            fmt.render(msgs)
    # The template concatenates the arguments as text, and raises on a dict.
    with pytest.raises(reference.TemplateRaised):
        reference.render(fmt, [cg.Message(**user), cg.Message(**answer("", ("f", {"x": 1})))])
    with pytest.raises(cg.UnsupportedConversationError, match="give them as a JSON string"):
        fmt.render([user, answer("", ("f", {"x": 1}))])


def test_functionary_reads_what_the_model_writes_after_its_prompt() -> None:
    fmt = cg.get_format("functionary-v3.2")
    prompt = fmt.render([{"role": "user", "content": "Weather?"}], tools=[WEATHER], add_generation_prompt=True)
    assert prompt.endswith(">>>")  # the model writes "all" and its answer, or a function's name
    cases = {
        "all\nIt is sunny.<|eot_id|>": cg.Message(role="assistant", content="It is sunny."),
        'get_weather\n{"city": "Paris"}<|eot_id|>': cg.Message(
            role="assistant", content="", tool_calls=[_call("get_weather", '{"city": "Paris"}')]
        ),
        'all\nChecking.>>>get_weather\n{"city": "Paris"}>>>get_time\n{}<|eot_id|>': cg.Message(
            role="assistant",
            content="Checking.",
            tool_calls=[_call("get_weather", '{"city": "Paris"}'), _call("get_time", "{}")],
        ),
    }
    for out, message in cases.items():
        assert cg.parse_completion(out, fmt, prompt=prompt).message == message
        assert (
            fmt.render([{"role": "user", "content": "Weather?"}, message], tools=[WEATHER]) == prompt[:-3] + ">>>" + out
        )


def test_phi4_mini_takes_the_tools_as_its_users_give_them() -> None:
    fmt = cg.get_format("phi-4-mini")
    msgs = [{"role": "system", "content": "You have tools."}, {"role": "user", "content": "Weather in Zürich?"}]
    text = fmt.render(msgs, tools=[WEATHER, TIME], add_generation_prompt=True)
    # As the model card shows: the list, as json.dumps writes it, under the system message's "tools".
    given = [{**msgs[0], "tools": json.dumps([WEATHER, TIME])}, msgs[1]]
    entry = reference.entry_for(fmt)
    src = (reference.TEMPLATES / entry["template_file"]).read_text(encoding="utf-8")
    assert text == reference.render_reference.render(
        src, given, add_generation_prompt=True, bos_token=entry["bos_token"], eos_token=entry["eos_token"]
    )
    assert "\\u00b0C" in text  # json.dumps escapes what is not ASCII
    back = fmt.parse(text)
    assert back.tools == [WEATHER, TIME] and back[0] == cg.Message(**msgs[0])
    assert fmt.render(back) == text
    # With no system message to hold them, the tools are refused, not dropped.
    with pytest.raises(cg.UnsupportedConversationError, match="add one first"):
        fmt.render(msgs[1:], tools=[WEATHER])
    # The template writes no tool calls.
    call = {"role": "assistant", "content": "", "tool_calls": [_call("get_weather", {"city": "Zürich"})]}
    with pytest.raises(cg.UnsupportedConversationError, match="does not write tool calls"):
        fmt.render([*msgs, call], tools=[WEATHER])


def test_phi4_mini_reads_tools_its_users_wrote_otherwise() -> None:
    fmt = cg.get_format("phi-4-mini")
    system = "<|system|>Tools:<|tool|>{}<|/tool|><|end|><|user|>Hi<|end|><|assistant|>"
    # Written another way than json.dumps: read as their value, and reported.
    pretty = fmt.parse(system.format(json.dumps([WEATHER], indent=2, ensure_ascii=False)))
    assert pretty.tools == [WEATHER]
    assert [d.code for d in pretty.diagnostics] == ["noncanonical-json"]
    # Not a JSON list: kept as the text it is, which renders back the same.
    for written in ("get_weather(city)", json.dumps(WEATHER)):
        text = system.format(written)
        back = fmt.parse(text)
        assert back.tools == [written] and [d.code for d in back.diagnostics] == ["invalid-tool"]
        assert fmt.render(back) == text


NEMO = cg.get_format("mistral-nemo")
NEMO_CALLS = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": "", "tool_calls": [_call("get_weather", {"city": "Paris"}, "abc123XYZ")]},
    {"role": "tool", "content": "21°C", "tool_call_id": "abc123XYZ"},
]


def _nemo(msgs: list[dict[str, Any]], tools: list[Any] | None = None) -> str:
    """What Mistral Nemo's template writes, as a check of ours."""
    return reference.render(NEMO, [cg.Message(**m) for m in msgs], tools=tools)


def test_nemo_writes_definitions_key_by_key_without_return() -> None:
    """Each key of the function object in its order, a string as it is between quotes, "return" left out."""
    fn = {"parameters": {"type": "object", "properties": {}}, "name": "f", "return": {"type": "string"}, "x": 1}
    tool = {"type": "function", "function": fn}
    msgs = NEMO_CALLS[:1]
    text = NEMO.render(msgs, tools=[tool, WEATHER])
    assert text == _nemo(msgs, [tool, WEATHER])
    back = NEMO.parse(text)
    written = {"type": "function", "function": {k: v for k, v in fn.items() if k != "return"}}
    assert back.tools == [written, WEATHER] == NEMO.normalize(msgs, tools=[tool, WEATHER]).tools
    assert NEMO.render(back) == text


@pytest.mark.parametrize("fn", [{"name": "f", "description": 'Say "hi"'}, {"name": "f", "a\nb": 1}])
def test_nemo_refuses_definitions_it_writes_as_no_json(fn: dict[str, Any]) -> None:
    """A key or string JSON would escape is written as it is: it would not read back."""
    text = _nemo(NEMO_CALLS[:1], [{"type": "function", "function": fn}])
    written = text[text.index("[AVAILABLE_TOOLS]") + len("[AVAILABLE_TOOLS]") : text.index("[/AVAILABLE_TOOLS]")]
    with pytest.raises(json.JSONDecodeError):
        json.loads(written)
    with pytest.raises(cg.UnsupportedConversationError, match="as it is between quotes"):
        NEMO.render(NEMO_CALLS[:1], tools=[{"type": "function", "function": fn}])


def test_nemo_writes_calls_and_results_with_their_ids() -> None:
    """Calls as their function objects with the id added; a result's content as it is (not JSON), then its id."""
    text = NEMO.render(NEMO_CALLS, tools=[WEATHER])
    assert text == _nemo(NEMO_CALLS, [WEATHER])
    assert NEMO.parse(text) == NEMO.normalize(NEMO_CALLS, tools=[WEATHER])
    assert NEMO.parse(text)[1:] == [cg.Message(**m) for m in NEMO_CALLS[1:]]
    # Ids of another length: the template raises, with its own reason.
    short = [NEMO_CALLS[0], {**NEMO_CALLS[1], "tool_calls": [_call("get_weather", {}, "c1")]}]
    with pytest.raises(reference.TemplateRaised, match="length 9"):
        _nemo(short)
    with pytest.raises(cg.UnsupportedConversationError, match="length 9"):
        NEMO.render(short)


def test_nemo_refuses_a_function_object_it_writes_otherwise() -> None:
    """The template writes a call's whole function object: more keys than name and arguments, or another order."""
    for fn in ({"name": "f", "arguments": {}, "strict": True}, {"arguments": {}, "name": "f"}):
        msgs = [
            NEMO_CALLS[0],
            {**NEMO_CALLS[1], "tool_calls": [{"type": "function", "id": "abc123XYZ", "function": fn}]},
        ]
        assert json.dumps(fn, ensure_ascii=False)[:-1] in _nemo(msgs)
        with pytest.raises(cg.UnsupportedConversationError, match="'name' then 'arguments'"):
            NEMO.render(msgs)


def test_nemo_places_the_tools_and_the_system_message_at_the_last_user_message() -> None:
    """The tools before the last user message, the system message in it; when the last message is not the
    user's, the template drops the system message (normalize shows it)."""
    system = {"role": "system", "content": "Be brief."}
    again = {"role": "user", "content": "And in Rome?"}
    for msgs in ([system, *NEMO_CALLS, {"role": "assistant", "content": "21°C."}, again], [system, *NEMO_CALLS]):
        text = NEMO.render(msgs, tools=[WEATHER])
        assert text == _nemo(msgs, [WEATHER])
        assert NEMO.render(NEMO.parse(text)) == text
    assert [m.role for m in NEMO.normalize(msgs, tools=[WEATHER])] == ["user", "assistant", "tool"]


def test_nemo_refuses_what_its_template_writes_as_no_grammar_can() -> None:
    """Empty lists (it tests `is not none`: a lone "[" is written) and tools with no user message (dropped)."""
    user = NEMO_CALLS[:1]
    assert _nemo(user, []) != _nemo(user)
    with pytest.raises(cg.UnsupportedConversationError, match=r"tools=\[\]"):
        NEMO.render(user, tools=[])
    empty = [*user, {"role": "assistant", "content": "Hi.", "tool_calls": []}]
    assert _nemo(empty) != _nemo([*user, {"role": "assistant", "content": "Hi."}])
    with pytest.raises(cg.UnsupportedConversationError, match=r"tool_calls=\[\]"):
        NEMO.render(empty)
    no_user = [{"role": "system", "content": "Be brief."}, *NEMO_CALLS[1:]]
    assert _nemo(no_user, [WEATHER]) == _nemo(no_user)
    with pytest.raises(cg.UnsupportedConversationError, match="no user message|there is none"):
        NEMO.render(no_user, tools=[WEATHER])


def test_nemo_calls_are_detected() -> None:
    """Every format reads Nemo's calls tolerantly and stops (Mistral Small 3.2's reader looped on them)."""
    text = NEMO.render(NEMO_CALLS, tools=[WEATHER])
    assert text == _nemo(NEMO_CALLS, [WEATHER])
    assert cg.detect(text)[0][0] == "mistral-nemo"
    calls = text[text.index(NEMO._c.spec.terminals["_TOOL_CALLS"]) :]
    assert cg.get_format("mistral-small-3.2").parse(calls, strict=False).diagnostics
