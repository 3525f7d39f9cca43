"""Messages in: Message objects and Hugging Face style dicts, strictly checked."""

from __future__ import annotations

import pydantic
import pytest

import chatgrammar as cg


def test_message_model() -> None:
    m = cg.Message(role="user", content="hi")
    assert m.complete is True
    assert m.model_dump(exclude_none=True) == {"role": "user", "content": "hi", "complete": True}
    assert m.to_dict() == {"role": "user", "content": "hi"}
    with pytest.raises(pydantic.ValidationError):
        cg.Message(role="user", content="hi", speaker="bob")  # type: ignore[call-arg]
    with pytest.raises(pydantic.ValidationError):
        cg.Message(role="tool", content="hi", tool_call_id=3)  # type: ignore[arg-type]
    # Hugging Face's fields, None when absent and left out of repr and to_dict.
    call = {"type": "function", "function": {"name": "f", "arguments": {"x": 1}}}
    full = cg.Message(role="assistant", content="", reasoning_content="r", tool_calls=[call])
    assert full.to_dict() == {"role": "assistant", "content": "", "reasoning_content": "r", "tool_calls": [call]}
    assert cg.Message(**full.to_dict()) == full
    assert "tool_call_id" not in repr(full) and "reasoning_content='r'" in repr(full)
    with pytest.raises(pydantic.ValidationError):
        cg.Message(role="user", content=None)  # type: ignore[arg-type]
    with pytest.raises(pydantic.ValidationError):
        m.role = "assistant"  # frozen


def test_parsed_messages_are_real_models() -> None:
    (m,) = cg.parse("<|im_start|>user\nhi<|im_end|>\n", "chatml")
    assert m == cg.Message(role="user", content="hi")
    assert hash(m) == hash(cg.Message(role="user", content="hi"))
    assert m.model_dump(exclude_none=True) == {"role": "user", "content": "hi", "complete": True}
    assert m.model_copy(update={"content": "yo"}).content == "yo"
    assert m.model_dump(exclude_unset=True) == {"role": "user", "content": "hi"}
    opened = cg.parse("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nSu", "chatml")[-1]
    assert opened.model_dump(exclude_unset=True) == {"role": "assistant", "content": "Su", "complete": False}


@pytest.mark.parametrize(
    "message,words",
    [
        ({"role": "user", "content": "x", "speaker": "bob"}, "keys this format does not know: 'speaker'"),
        ({"role": "user"}, "has no 'content'"),
        ({"content": "x"}, "has no 'role'"),
        ({"role": "user", "content": 5}, "'content' must be a string, not int"),
        ({"role": None, "content": "x"}, "'role' must be a string, not NoneType"),
        ({"role": "user", "content": "x", "complete": "no"}, "'complete' must be a bool"),
        ("hi", "message 0 is a str"),
    ],
)
def test_bad_messages_are_refused_with_the_reason(message: object, words: str) -> None:
    for fmt in ("chatml", "llama2"):
        with pytest.raises(cg.RenderError) as info:
            cg.render([message], fmt)  # type: ignore[list-item]
        assert words in str(info.value)
        assert info.value.index == 0


def test_bad_message_after_a_known_shape_is_still_refused() -> None:
    # The fast path for known shapes must decline, not render, content that is not a string.
    ok = [{"role": "user", "content": "a"}]
    cg.render(ok, "chatml")
    with pytest.raises(cg.RenderError):
        cg.render([{"role": "user", "content": ["a"]}], "chatml")
    with pytest.raises(cg.RenderError):
        cg.render([{"role": "user", "content": "a", "speaker": "x"}], "chatml")


def test_any_iterable_of_messages() -> None:
    msgs = ({"role": "user", "content": str(i)} for i in range(1))
    assert cg.render(msgs, "chatml") == "<|im_start|>user\n0<|im_end|>\n"


def test_open_message_from_a_dict() -> None:
    text = cg.render(
        [{"role": "user", "content": "a"}, {"role": "assistant", "content": "Sure", "complete": False}], "chatml"
    )
    assert text.endswith("<|im_start|>assistant\nSure")
