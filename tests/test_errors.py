"""Error messages: exact text for a set of broken inputs (position, expected, snippet)."""

from __future__ import annotations

import pytest

import chatgrammar as cg

CASES = [
    # A turn that never ends, followed by another turn.
    (
        "chatml",
        "<|im_start|>user\nhi<|im_start|>assistant\n",
        (2, 3, 19),
        'expected "<|im_end|>" or end of text before "<|im_start|>" (line 2, column 3)\n'
        "  hi<|im_start|>assistant\n"
        "    ^",
    ),
    # The text stops after a turn's opening token: its role is missing.
    (
        "chatml",
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>",
        (3, 13, 42),
        "expected role (at end of text)\n  <|im_start|>\n              ^",
    ),
    # Llama 3 headers end with two newlines, not one.
    (
        "llama3",
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\nhi<|eot_id|>",
        (1, 41, 40),
        'expected "<|end_header_id|>\\n\\n" before "<|end_header"... (line 1, column 41)\n'
        "  <|begin_of_text|><|start_header_id|>user<|end_header_id|>\n"
        "                                          ^",
    ),
    # Mistral prompts start with the BOS token.
    (
        "mistral",
        "[INST] hi [/INST]",
        (1, 1, 0),
        "the text does not start with the BOS token '<s>' that mistral writes first (add it, or read with "
        "strict=False, which reads the text without it) (line 1, column 1)\n  [INST] hi [/INST]\n  ^",
    ),
    # Zephyr turns end with a newline after </s>.
    ("zephyr", "<|user|>\nhi</s>", (2, 7, 15), 'expected "\\n" (at end of text)\n  hi</s>\n        ^'),
    # An Alpaca answer ends with </s> before the blank line.
    (
        "alpaca",
        "<s>### Instruction:\nhi\n\n### Response:\nok\n\n",
        (5, 3, 40),
        'expected "</s>" or end of text before "\\n\\n" (line 5, column 3)\n  ok\n    ^',
    ),
    # Llama 2 trims the answer: two spaces after [/INST] are not what the template writes.
    (
        "llama2",
        "<s>[INST] hi [/INST]  ok </s>",
        (1, 23, 22),
        'expected "</s>" before "ok </s>" (line 1, column 23)\n'
        "  <s>[INST] hi [/INST]  ok </s>\n"
        "                        ^",
    ),
]


@pytest.mark.parametrize("fmt,text,where,message", CASES)
def test_parse_error_text(fmt: str, text: str, where: tuple[int, int, int], message: str) -> None:
    with pytest.raises(cg.ParseError) as info:
        cg.parse(text, fmt)
    e = info.value
    assert (e.line, e.column, e.pos) == where
    assert str(e) == message
    assert e.format == fmt
    assert isinstance(e, ValueError)


def test_expected_is_listed_as_written() -> None:
    with pytest.raises(cg.ParseError) as info:
        cg.parse("<|im_start|>user\nhi<|im_start|>assistant\n", "chatml")
    assert info.value.expected == ['"<|im_end|>"', "end of text"]


def test_error_at_end_of_text_points_past_the_last_character() -> None:
    text = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>"
    with pytest.raises(cg.ParseError) as info:
        cg.parse(text, "chatml")
    assert info.value.pos == len(text)


def test_snippet_stays_short_on_huge_lines() -> None:
    text = "<|im_start|>user\n" + "x" * 100_000 + "<|im_start|>"
    with pytest.raises(cg.ParseError) as info:
        cg.parse(text, "chatml")
    assert len(str(info.value)) < 300
    assert info.value.pos == len(text) - len("<|im_start|>")


def test_unknown_format_suggests_canonical_names() -> None:
    with pytest.raises(cg.UnknownFormatError) as info:
        cg.get_format("lama2")
    assert info.value.suggestions[0] == "llama2"
    assert len(set(info.value.suggestions)) == len(info.value.suggestions)
    assert "Did you mean 'llama2'" in str(info.value)
    assert isinstance(info.value, LookupError) and isinstance(info.value, cg.ChatGrammarError)


def test_unknown_format_without_close_names() -> None:
    with pytest.raises(cg.UnknownFormatError) as info:
        cg.get_format("zzz-no-such-thing")
    assert info.value.suggestions == []
    assert (
        str(info.value)
        == "unknown chat format 'zzz-no-such-thing'. chatgrammar.formats() lists the registered formats."
    )


def test_role_order_error_carries_the_template_reason_and_index() -> None:
    with pytest.raises(cg.UnsupportedConversationError) as info:
        cg.render([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "mistral")
    assert info.value.index == 1
    assert str(info.value).startswith("Conversation roles must alternate user/assistant/user/assistant/...")


def test_unknown_role_is_named() -> None:
    with pytest.raises(cg.UnsupportedConversationError) as info:
        cg.render([{"role": "tool", "content": "x"}], "llama2")
    assert info.value.index == 0
    assert "no 'tool' role" in str(info.value)


def test_a_dropped_system_message_is_declared() -> None:
    # The Llama 2 template writes nothing for a lone system message. chatgrammar writes
    # the same, and normalize shows the loss: the message reads back empty.
    fmt = cg.get_format("llama2")
    assert fmt.render([{"role": "system", "content": "x"}]) == ""
    assert fmt.normalize([{"role": "system", "content": "x"}]) == [cg.Message(role="system", content="")]
    # Between two user turns a system message is dropped too, and read back empty.
    msgs = [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}, {"role": "user", "content": "c"}]
    text = fmt.render(msgs)
    assert text == "<s>[INST] a [/INST]<s>[INST] c [/INST]"
    assert fmt.parse(text)[1] == cg.Message(role="system", content="")
    assert fmt.render(fmt.parse(text)) == text


def test_open_turn_and_generation_prompt_together() -> None:
    with pytest.raises(cg.RenderError):
        cg.render(
            [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "complete": False}],
            "chatml",
            add_generation_prompt=True,
        )


def test_open_turn_must_be_last() -> None:
    msgs = [{"role": "user", "content": "a", "complete": False}, {"role": "assistant", "content": "b"}]
    with pytest.raises(cg.RenderError) as info:
        cg.render(msgs, "chatml")
    assert info.value.index == 0


def test_empty_open_turn_of_a_user_is_refused() -> None:
    with pytest.raises(cg.RenderError):
        cg.render([{"role": "user", "content": "", "complete": False}], "chatml")


def test_unknown_role_lists_only_roles_a_caller_gives() -> None:
    # The parts of a message (tool_call, tool_args, tool_def) are not roles of the conversation.
    with pytest.raises(cg.UnsupportedConversationError) as info:
        cg.render([{"role": "planner", "content": "x"}], "qwen2.5")
    roles = "'assistant', 'system', 'tool', 'user'"
    assert str(info.value).endswith(f"(message 0 is 'planner'; the roles of qwen2.5: {roles})")


@pytest.mark.parametrize("name", cg.formats())
def test_no_silent_fallback_for_names_or_roles(name: str) -> None:
    """Every entry point refuses an unknown format; no format writes a role it does not have."""
    for call in (
        lambda: cg.render([{"role": "user", "content": "x"}], name + "-nope"),
        lambda: cg.parse("x", name + "-nope"),
        lambda: cg.StreamParser(name + "-nope"),
    ):
        with pytest.raises(cg.UnknownFormatError):
            call()
    fmt = cg.get_format(name)
    if fmt.roles is not None:
        with pytest.raises(cg.UnsupportedConversationError) as info:
            fmt.render([{"role": "nobody", "content": "x"}])
        assert "'nobody'" in str(info.value)
