"""Reading real model output, for every registered format, on generated conversations:
spans, tolerant parse of truncated text, completions, streaming, detection, validation."""

from __future__ import annotations

import json

import pytest
from hypothesis import find, given, reject, settings
from hypothesis import strategies as st
from hypothesis.errors import NoSuchExample

import chatgrammar as cg
from chatgrammar.testing import Conversation, conversations, safe_contents

FORMATS = cg.formats()


def _render(fmt: cg.Format, conv) -> str:
    try:
        return fmt.render(conv.messages, **conv.render_args())
    except cg.UnsafeContentError:
        reject()


def _assemble(events: list[cg.Event], fmt: cg.Format) -> list[cg.Message]:
    """The messages a stream of events describes; checks the events are well formed."""
    roles: dict[int, str] = {}
    contents: dict[int, list[str]] = {}
    thinking: dict[int, list[str]] = {}
    calls: dict[int, list[tuple[str, list[str], bool]]] = {}
    ids: dict[tuple[int, int], str] = {}
    ended: dict[int, bool] = {}
    results: dict[int, str] = {}
    names: dict[int, str] = {}  # a result's name (of the call it answers), where the format writes it
    for e in events:
        if isinstance(e, cg.MessageStart):
            assert e.index == len(roles), f"message {e.index} started out of order"
            roles[e.index] = e.role
            contents[e.index], thinking[e.index], calls[e.index] = [], [], []
        elif isinstance(e, cg.ContentDelta):
            assert e.index in roles and e.index not in ended and e.text
            contents[e.index].append(e.text)
        elif isinstance(e, cg.ReasoningDelta):
            assert e.index in roles and e.index not in ended and e.text
            thinking[e.index].append(e.text)
        elif isinstance(e, cg.ToolCallStart):
            assert e.message in roles and e.message not in ended and e.index == len(calls[e.message])
            calls[e.message].append((e.name, [], False))
            if e.id is not None:
                ids[e.message, e.index] = e.id
        elif isinstance(e, cg.ToolCallDelta):
            name, parts, done = calls[e.message][e.index]
            assert not done and e.arguments_text
            parts.append(e.arguments_text)
        elif isinstance(e, cg.ToolCallEnd):
            name, parts, done = calls[e.message][e.index]
            assert not done
            calls[e.message][e.index] = (name, parts, True)
            if e.id is not None:  # the id, once known, is on the end (and on the start when written first)
                assert ids.setdefault((e.message, e.index), e.id) == e.id
        else:
            assert isinstance(e, cg.MessageEnd)
            assert e.index in roles and e.index not in ended
            ended[e.index] = e.complete
            if e.tool_call_id is not None:
                results[e.index] = e.tool_call_id
            if e.name is not None:
                names[e.index] = e.name
    assert sorted(ended) == sorted(roles), "a message started and never ended"
    out = []
    for i in sorted(roles):
        fields: dict[str, object] = {}
        if thinking[i]:
            fields["reasoning_content"] = "".join(thinking[i])
        if calls[i]:
            fields["tool_calls"] = [
                _call(fmt, name, "".join(parts), done, ids.get((i, k)))
                for k, (name, parts, done) in enumerate(calls[i])
            ]
        if i in results:
            fields["tool_call_id"] = results[i]
        if i in names:
            fields["name"] = names[i]
        out.append(cg.Message(role=roles[i], content="".join(contents[i]), complete=ended[i], **fields))
    return out


def _call(fmt: cg.Format, name: str, arguments: str, done: bool, call_id: str | None) -> dict[str, object]:
    # Arguments read back as their value, or as the text written where the template takes text.
    value: object = fmt._c.payloads.read_args(arguments, False)[0] if done else arguments
    call: dict[str, object] = {"type": "function", "function": {"name": name, "arguments": value}}
    return call if call_id is None else {"id": call_id, **call}


# -- spans ---------------------------------------------------------------------


@pytest.mark.parametrize("name", FORMATS)
@given(data=st.data())
def test_spans_locate_every_message(name: str, data: st.DataObject) -> None:
    fmt = cg.get_format(name)
    conv = data.draw(conversations(fmt, content=safe_contents(fmt)))
    text = _render(fmt, conv)
    parsed = fmt.parse(text, spans=True)
    assert parsed == fmt.parse(text)
    assert parsed.spans is not None and len(parsed.spans) == len(parsed)
    last = 0
    for m, s in zip(parsed, parsed.spans, strict=True):
        assert last <= s.start <= s.content_start <= s.content_end <= s.end <= len(text)
        last = s.end
        written = text[s.content_start : s.content_end]
        if s.end > s.start and written:  # put-back dropped messages stand empty
            assert m.content in (written, _json(written))
    # render_spans gives the same text, and each given message's content where it is written
    rendered, spans = fmt.render_spans(conv.messages, **conv.render_args())
    assert rendered == text
    assert len(spans) == len(conv.messages)
    expected = fmt.normalize(conv.messages, **conv.render_args())
    by_turn = {(s.start, s.content_start): m for m, s in zip(parsed, parsed.spans, strict=True)}
    for given_message, span in zip(conv.messages, spans, strict=True):
        if span is None:
            continue
        assert 0 <= span.start <= span.content_start <= span.content_end <= span.end <= len(text)
        piece = text[span.content_start : span.content_end]
        # the content is written as the template writes it: the caller's text, trimmed or encoded, or
        # with the flags the template takes out of a first system message (SmolLM3's /think) taken out
        given = given_message.content
        for _option, _value, flag in fmt._header.get("option-flags", []):
            given = given.replace(flag, "")
        assert piece == "" or piece in given or _json(piece) == given_message.content
        if (span.start, span.content_start) in by_turn and by_turn[(span.start, span.content_start)].role == "user":
            continue  # a system message merged into this user turn shares it
        if (span.start, span.content_start) in by_turn:
            assert by_turn[(span.start, span.content_start)] in expected


def _json(text: str) -> str | None:
    import json

    try:
        value = json.loads(text)
    except (ValueError, RecursionError):  # not JSON, or nested deeper than the decoder goes
        return None
    return value if isinstance(value, str) else None


def test_assistant_loss_mask_from_spans() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "Goodbye."},
    ]
    for name in ["llama2", "chatml", "gemma3", "llama3", "alpaca", "mixtral", "deepseek-v3", "phi-3.5"]:
        text, spans = cg.render_spans(messages, name)
        answers = [
            text[s.content_start : s.content_end]
            for m, s in zip(messages, spans, strict=True)
            if s and m["role"] == "assistant"
        ]
        assert answers == ["Hello!", "Goodbye."], name
        # the assistant turns hold their end token: that is what the model must learn to write
        turns = [text[s.start : s.end] for m, s in zip(messages, spans, strict=True) if s and m["role"] == "assistant"]
        assert all(any(stop in t for stop in cg.get_format(name).stop) for t in turns), name


def test_merged_system_message_gets_its_part_of_the_user_turn() -> None:
    text, spans = cg.render_spans([{"role": "system", "content": "S"}, {"role": "user", "content": "U"}], "gemma3")
    system, user = spans
    assert system is not None and user is not None
    assert system.turn == user.turn
    assert text[system.content_start : system.content_end] == "S"
    assert text[user.content_start : user.content_end] == "U"


def test_gathered_system_messages_get_their_parts() -> None:
    msgs = [
        {"role": "system", "content": "A"},
        {"role": "user", "content": "Q"},
        {"role": "system", "content": "B"},
        {"role": "assistant", "content": "R"},
    ]
    text, spans = cg.render_spans(msgs, "deepseek-v3")
    assert [text[s.content_start : s.content_end] for s in spans if s] == ["A", "Q", "B", "R"]


# -- tolerant parse ----------------------------------------------------------------


@pytest.mark.parametrize("name", FORMATS)
@settings(max_examples=10)
@given(data=st.data())
def test_every_cut_of_a_text_reads_tolerantly(name: str, data: st.DataObject) -> None:
    fmt = cg.get_format(name)
    conv = data.draw(conversations(fmt, content=safe_contents(fmt), max_messages=4))
    text = _render(fmt, conv)
    full = fmt.parse(text)
    cut = data.draw(st.integers(0, len(text)))
    head = text[:cut]
    got = fmt.parse(head, strict=False, spans=True)
    # Only cuts, and tool-call arguments given as text that is not JSON (kept as text).
    assert all(d.code in ("truncated", "invalid-arguments") for d in got.diagnostics), [str(d) for d in got.diagnostics]
    assert got.spans is not None
    last = 0
    for m, s in zip(got, got.spans, strict=True):
        assert last <= s.start <= s.content_start <= s.content_end <= s.end <= cut
        last = s.end
        written = head[s.content_start : s.content_end]
        assert m.content in (written, _json(written)) or s.start == s.end
    for d in got.diagnostics:
        assert 0 <= d.pos <= d.end <= cut
    # Cut at the end of a turn of the full text, the turns before read as they do in it.
    # (Not where a turn is written as its bare content, or where a template writes nothing for
    # a message: there a prefix is another valid conversation, read as such.)
    full_spans = fmt.parse(text, spans=True).spans or []
    ends = [s.end for s in full_spans]
    bare = any(not shape.text_after_content for shape in fmt._c.shapes.values()) or fmt._planner.has_dropped
    if cut in ends and not bare:
        k = ends.index(cut) + 1
        assert got[: k - 1] == full[: k - 1]
        assert got[k - 1].role == full[k - 1].role and got[k - 1].content == full[k - 1].content


@pytest.mark.parametrize(
    ("name", "text", "content"),
    [
        ("chatml", "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_e", "Hello"),
        ("chatml", "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>", "Hello"),
        ("llama2", "<s>[INST] Hi [/INST] Hello </", "Hello"),
        ("llama2", "<s>[INST] Hi [/INST] Hello ", "Hello"),
        (
            "llama3",
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nOk<|eot",
            "Ok",
        ),
        ("alpaca", "<s>### Instruction:\nHi\n\n### Response:\nSure</s>\n", "Sure"),
    ],
)
def test_truncated_text_gives_the_last_turn_open(name: str, text: str, content: str) -> None:
    got = cg.parse(text, name, strict=False)
    assert got[-1] == cg.Message(role="assistant", content=content, complete=False)
    assert [d.code for d in got.diagnostics] == ["truncated"]
    d = got.diagnostics[0]
    assert text[d.pos : d.end] == text[len(text) - (d.end - d.pos) :]


def test_unreadable_text_is_reported_and_reading_goes_on() -> None:
    text = "<|im_start|>user\nHi<|im_end|>\ngarbage here\n<|im_start|>assistant\nHello<|im_end|>\n"
    got = cg.parse(text, "chatml", strict=False)
    assert [m.content for m in got] == ["Hi", "Hello"]
    (d,) = got.diagnostics
    assert d.code == "unexpected-text" and text[d.pos : d.end] == "garbage here\n"
    assert (d.line, d.column) == (3, 1)


def test_strict_parse_still_raises() -> None:
    with pytest.raises(cg.ParseError) as e:
        cg.parse("<|im_start|>user\nHi<|im_end|>\nxx", "chatml")
    assert (e.value.line, e.value.column) == (3, 1)


# -- completions -------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(
            n,
            marks=pytest.mark.skip(
                reason="its history drops an answer's reasoning, so no render extends the prompt: "
                "tests/test_tools.py reads its completions after the prefilled <think>"
            ),
        )
        if n == "deepseek-r1-distill"
        else n
        for n in FORMATS
    ],
)
@given(data=st.data())
def test_completion_after_a_prompt(name: str, data: st.DataObject) -> None:
    fmt = cg.get_format(name)
    conv = data.draw(conversations(fmt, content=safe_contents(fmt), allow_open=False, allow_generation=False))
    messages = list(conv.messages)
    while messages and messages[-1].role != "user":  # a completion answers a user turn
        messages.pop()
    messages = messages or [cg.Message(role="user", content="Hi")]
    answer = data.draw(st.sampled_from(["Sure.", "a b\nc", "x", "Paris, of course!"]))
    if any(stop in answer for stop in fmt.stop):
        answer = "Sure."
    with_answer = [*messages, cg.Message(role="assistant", content=answer)]
    try:
        prompt = fmt.render(messages, add_generation_prompt=True, date=conv.date, **conv.options)
        full = fmt.render(with_answer, date=conv.date, **conv.options)
    except cg.RenderError:
        reject()
    if not full.startswith(prompt):
        reject()  # a template that writes the answer's turn differently after the prompt
    completion = full[len(prompt) :]
    expected = fmt.normalize(with_answer, date=conv.date, **conv.options)[-1]
    got = fmt.parse_completion(completion, prompt=prompt, **conv.options)
    assert got.messages[-1].role == "assistant"
    assert got.messages[-1].content == expected.content
    assert not got.diagnostics, [str(d) for d in got.diagnostics]
    if got.stop is not None:
        assert got.messages[-1].complete
        cut = completion.find(got.stop)
        assert got.rest == completion[cut + len(got.stop) :]
    else:
        assert not got.messages[-1].complete and got.rest == ""
    # given as messages, the prompt is rendered the same way
    if conv.date is None:
        assert fmt.parse_completion(completion, prompt=messages, **conv.options) == got


def test_completion_keeps_text_after_the_stop() -> None:
    c = cg.parse_completion(
        "Paris.<|im_end|>\n<|im_start|>user\nAnd", "chatml", prompt=[{"role": "user", "content": "Capital?"}]
    )
    assert c.message == cg.Message(role="assistant", content="Paris.", complete=True)
    assert (c.stop, c.rest) == ("<|im_end|>", "\n<|im_start|>user\nAnd")


def test_completion_cut_by_max_tokens_is_open() -> None:
    c = cg.parse_completion("The capital is Par", "llama3")
    assert c.message == cg.Message(role="assistant", content="The capital is Par", complete=False)
    assert c.stop is None and c.rest == ""


# -- streaming ---------------------------------------------------------------------


@pytest.mark.parametrize("name", FORMATS)
@settings(max_examples=12)
@given(data=st.data())
def test_stream_events_reassemble_to_parse(name: str, data: st.DataObject) -> None:
    fmt = cg.get_format(name)
    conv = data.draw(conversations(fmt, content=safe_contents(fmt), max_messages=5))
    text = _render(fmt, conv)
    cuts = sorted(set(data.draw(st.lists(st.integers(0, len(text)), max_size=12))))
    if data.draw(st.booleans()):  # small chunks throughout
        size = data.draw(st.integers(1, 7))
        cuts = sorted(set(cuts) | set(range(0, len(text), size)))
    parser = cg.StreamParser(fmt, **conv.options)
    events: list[cg.Event] = []
    last = 0
    for k in [*cuts, len(text)]:
        events += parser.feed(text[last:k])
        last = k
    events += parser.close()
    assert _assemble(events, fmt) == fmt.parse(text, **conv.options)


def test_stream_holds_back_partial_delimiters() -> None:
    p = cg.StreamParser("llama3")
    head = "<|begin_of_text|><|start_header_id|>assistant<|end_header_id|>\n\nHello<|eo"
    events = p.feed(head)
    deltas = "".join(e.text for e in events if isinstance(e, cg.ContentDelta))
    assert deltas == "Hello"  # not "Hello<|eo"
    events = p.feed("t_id|>") + p.close()
    assert events[-1] == cg.MessageEnd(0, True)


def test_stream_raises_parse_error_positioned_in_the_whole_text() -> None:
    p = cg.StreamParser("chatml")
    p.feed("<|im_start|>user\nHi<|im_end|>\n" * 3)
    with pytest.raises(cg.ParseError) as e:
        p.feed("junk" * 20)
        p.close()
    assert e.value.line == 7 and e.value.pos == 3 * len("<|im_start|>user\nHi<|im_end|>\n")


def test_stream_memory_is_the_current_turn() -> None:
    p = cg.StreamParser("chatml")
    turn = "<|im_start|>user\n" + "x" * 1000 + "<|im_end|>\n"
    for _ in range(200):
        p.feed(turn)
        assert len(p._buf) < 2 * len(turn)


# -- detection ---------------------------------------------------------------------


def _group(name: str) -> frozenset[str]:
    return next((g for g in cg.SAME_LANGUAGE if name in g), frozenset({name}))


@pytest.mark.parametrize("name", FORMATS)
@settings(max_examples=10)
@given(data=st.data())
def test_detect_names_the_format_first(name: str, data: st.DataObject) -> None:
    fmt = cg.get_format(name)
    conv = data.draw(conversations(fmt, content=st.sampled_from(["Hi", "Hello there", "a\nb", "x y z"])))
    text = _render(fmt, conv)
    parsed = fmt.parse(text, spans=True)
    assert parsed.spans is not None
    if not any(
        m.content.strip() and (s.start, s.end) != (s.content_start, s.content_end)
        for m, s in zip(parsed, parsed.spans, strict=True)
    ):
        reject()  # nothing but bare content (or nothing): no delimiter tells the format
    ranked = cg.detect(text)
    scores = dict(ranked)
    assert name in scores
    above = {n for n, s in ranked if s >= scores[name] and n != name}
    assert above <= _group(name), f"{sorted(above - _group(name))} rank with or above {name}"


@pytest.mark.parametrize("name", sorted(set().union(*cg.SAME_LANGUAGE)))
def test_detect_groups_do_share_texts(name: str) -> None:
    # A declared group is real: each member writes, for some conversation, a text another
    # member reads at least as well, or reads another member's text at least as well.
    others = sorted(_group(name) - {name})

    def shared(writer: str, readers: list[str]):
        fmt = cg.get_format(writer)

        def check(conv) -> bool:
            try:
                text = fmt.render(conv.messages, **conv.render_args())
            except cg.RenderError:
                return False
            parsed = fmt.parse(text, spans=True)
            pairs = zip(parsed, parsed.spans or [], strict=True)
            if not any(m.content.strip() and (s.start, s.end) != s.content for m, s in pairs):
                return False  # bare content only: no delimiter to tell a format by
            scores = dict(cg.detect(text, [writer, *readers]))
            return writer in scores and any(scores.get(r, 0) >= scores[writer] for r in readers)

        return check

    contents = st.sampled_from(["Hi", "Hello there", "a\nb", "x y z"])
    attempts = [(name, others)] + [(other, [name]) for other in others]
    simple = [
        [cg.Message(role="user", content="Hi")],
        [cg.Message(role="system", content="Be brief."), cg.Message(role="user", content="Hi")],
        [cg.Message(role="user", content="Hi"), cg.Message(role="assistant", content="Hello there")],
    ]
    for writer, readers in attempts:
        check = shared(writer, readers)
        if any(check(Conversation(m, gen)) for m in simple for gen in (False, True)):
            return
    for writer, readers in attempts:
        try:
            find(
                conversations(cg.get_format(writer), content=contents),
                shared(writer, readers),
                settings=settings(max_examples=150, database=None),
            )
        except NoSuchExample:
            continue
        return
    pytest.fail(f"{name} shares no text with the rest of its group")


def test_detect_none() -> None:
    assert cg.detect("") == []
    assert cg.detect("just some words") == [] or all(s < 0.5 for _, s in cg.detect("just some words"))


# -- validation --------------------------------------------------------------------


@pytest.mark.parametrize("name", FORMATS)
@settings(max_examples=15)
@given(data=st.data())
def test_valid_renders_have_no_problems(name: str, data: st.DataObject) -> None:
    fmt = cg.get_format(name)
    conv = data.draw(conversations(fmt, content=safe_contents(fmt)))
    text = _render(fmt, conv)
    # Tool-call arguments given as text that is not JSON (written as they are) are reported.
    not_json = sum(1 for m in conv.messages for c in m.tool_calls or [] if not _is_json(c["function"]["arguments"]))
    found = cg.validate(text, fmt, **conv.options)
    assert [d.code for d in found] == ["invalid-arguments"] * not_json
    assert [d.code for d in cg.validate(conv.messages, fmt, **conv.options) if d.code != "unknown-role"] == []


def _is_json(arguments: object) -> bool:
    if not isinstance(arguments, str):
        return True
    try:
        json.loads(arguments)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("llama2", "<s>[INST] Hi [/INST]  Hello </s>", [("whitespace", 1, 22)]),
        ("llama2", "<s>[INST] Hi [/INST]Hello</s>", [("whitespace", 1, 21), ("whitespace", 1, 26)]),
        ("llama2", "<s><s>[INST] Hi [/INST]", [("double-bos", 1, 1)]),
        ("llama2", "[INST] Hi [/INST]", [("missing-bos", 1, 1)]),
        ("chatml", "<|im_start|>user\nHi\n<|im_start|>assistant\nHo<|im_end|>\n", [("unclosed-turn", 3, 1)]),
        ("chatml", "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHo<|im_end|>", [("truncated", 4, 3)]),
        ("chatml", "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHo<|im_e", []),  # reads strictly
        ("alpaca", "<s>### Instruction:\nHi\n### Response:\nx</s>\n\n", [("whitespace", 3, 1)]),
        (
            "llama3",
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nA<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nB<|eot_id|>",
            [],  # llama3 takes any role order
        ),
        (
            "gemma",
            "<bos><start_of_turn>user\nA<end_of_turn>\n<start_of_turn>user\nB<end_of_turn>\n",
            [("role-order", 3, 1)],
        ),
    ],
)
def test_validate_finds_each_problem(name: str, text: str, expected: list[tuple[str, int, int]]) -> None:
    got = cg.validate(text, name)
    assert [(d.code, d.line, d.column) for d in got] == expected, [str(d) for d in got]
    for d in got:
        assert d.message and d.hint


def test_validate_messages_reports_every_problem() -> None:
    got = cg.validate(
        [
            {"role": "user", "content": "a <|im_end|> b\n<|im_start|>system"},
            {"role": "user", "content": "two users"},
            {"role": "wizard", "content": "c"},
        ],
        "qwen2.5",
    )
    codes = [(d.code, d.index) for d in got]
    assert ("delimiter-in-content", 0) in codes and codes.count(("delimiter-in-content", 0)) == 2
    d = next(d for d in got if d.code == "delimiter-in-content")
    assert d.pos == 2 and (d.line, d.column) == (1, 3)
    roles = cg.validate([{"role": "wizard", "content": "c"}], "llama2")
    assert [d.code for d in roles] == ["unknown-role", "role-order"] or "unknown-role" in [d.code for d in roles]


def test_options_overridden_by_a_flag_in_the_system_message_still_read() -> None:
    # SmolLM3's template switches to /think when the system message says so, whatever
    # enable_thinking was: the text is then in the /think variant, and the flag is not written.
    fmt = cg.get_format("smollm3")
    msgs = [{"role": "system", "content": "/think"}, {"role": "user", "content": "Hi"}]
    text = fmt.render(msgs, add_generation_prompt=True, enable_thinking=False)
    assert text == fmt.render(msgs[1:], add_generation_prompt=True, enable_thinking=True)
    assert cg.validate(text, fmt, enable_thinking=False) == []
    assert fmt.parse(text, enable_thinking=False) == fmt.parse(text, enable_thinking=True)
    assert [m.role for m in fmt.parse(text, enable_thinking=False)][-2:] == ["user", "assistant"]
    with pytest.raises(cg.ParseError):  # a text /no_think cannot write is still refused
        fmt.parse(text.replace("<|im_start|>user", "<|im_start|>usr"), enable_thinking=False)


@pytest.mark.parametrize("name", ["chatml", "llama3", "llama2", "zephyr"])
def test_parse_completion_stopped_without_its_stop_string(name: str) -> None:
    """A server that stopped at a stop string and left it out: stopped=True reads the answer as
    complete, exactly as the completion with its first stop string reads."""
    fmt = cg.get_format(name)
    prompt = [{"role": "user", "content": "Hi"}]
    with_stop = fmt.parse_completion("Paris." + fmt.stop[0], prompt=prompt)
    assert with_stop.message.complete and with_stop.message.content == "Paris."
    told = fmt.parse_completion("Paris.", prompt=prompt, stopped=True)
    assert told.message == with_stop.message and told.stop == fmt.stop[0] and told.rest == ""
    assert not fmt.parse_completion("Paris.", prompt=prompt).message.complete  # ran out (max_tokens)
    # a completion that holds its stop string is read as it is
    kept = fmt.parse_completion("Paris." + fmt.stop[0] + "more", prompt=prompt, stopped=True)
    assert kept.rest == "more" and kept.message == with_stop.message
    assert cg.parse_completion("Paris.", name, prompt=prompt, stopped=True).message == with_stop.message
