"""The llama-cpp-python formats against llama-cpp-python's own ``chat_format`` functions.

The layouts of these formats come from no Hugging Face template but from
llama_cpp/llama_chat_format.py; llamacpp_reference.py fetches that release and runs
its formatting functions. llama-cpp-python always ends the prompt with the
assistant's role, so each conversation is rendered with add_generation_prompt=True
(and the formats write the same without it). As in test_conformance.py:

* both render: the texts are identical;
* chatgrammar refuses: llama-cpp-python must be losing information there, and the
  test finds a *witness*, another conversation it renders to the very same text.
"""

from __future__ import annotations

from typing import Any

import llamacpp_reference
import pytest
from hypothesis import given, reject
from hypothesis import strategies as st

import chatgrammar as cg
from chatgrammar.testing import HARD_CONTENTS, Conversation, conversations, safe_contents

# llama-cpp-python chat_format name -> chatgrammar format
FORMATS = {
    "oasst_llama": "oasst-llama",
    "redpajama-incite": "redpajama-incite",
    "phind": "phind",
    "intel": "intel",
    "open-orca": "open-orca",
    "mistrallite": "mistrallite",
    "saiga": "saiga",
    "pygmalion": "pygmalion",
    "baichuan": "baichuan",
    "baichuan-2": "baichuan-2",
}
# How llama-cpp-python must be called for the same conversation: the roles it writes the
# model's (and the user's) turns for. Its saiga function keeps "bot" messages, not
# "assistant" ones; its open-orca function keeps only roles spelled "User" and "Assistant".
ROLE_NAMES: dict[str, dict[str, str]] = {
    "saiga": {"assistant": "bot"},
    "open-orca": {"user": "User", "assistant": "Assistant"},
}
# Stop strings of llama-cpp-python that the format does not list, and why.
STOP_DIFFERENCES: dict[str, str] = {}
ROLES = ["system", "user", "assistant"]
NAMES = list(FORMATS)


@pytest.fixture(scope="module")
def llamacpp() -> llamacpp_reference.Reference:
    try:
        return llamacpp_reference.load(NAMES)
    except llamacpp_reference.Unavailable as e:
        pytest.skip(f"llama-cpp-python's source is not available (offline?): {e}")


def _dicts(name: str, messages: list[cg.Message]) -> list[dict[str, Any]]:
    names = ROLE_NAMES.get(name, {})
    return [{"role": names.get(m.role, m.role), "content": m.content} for m in messages]


def _theirs(ref: llamacpp_reference.Reference, name: str, messages: list[cg.Message]) -> str:
    return ref.format(name, _dicts(name, messages)).prompt


def _ours(fmt: cg.Format, messages: list[cg.Message]) -> str | cg.RenderError:
    try:
        text = fmt.render(messages, add_generation_prompt=True)
    except cg.UnsafeContentError:
        reject()
    except cg.RenderError as e:
        return e
    # llama-cpp-python always writes the prompt; so do the formats, asked or not.
    assert fmt.render(messages) == text
    return text


def _witness(
    ref: llamacpp_reference.Reference, name: str, msgs: list[cg.Message], text: str
) -> list[cg.Message] | None:
    """Another conversation llama-cpp-python writes as ``text``: proof that it loses information."""
    fmt = cg.get_format(FORMATS[name])
    candidates: list[list[cg.Message]] = []
    for i, m in enumerate(msgs):
        candidates.append(msgs[:i] + msgs[i + 1 :])
        candidates.append(msgs[:i] + [cg.Message(role=m.role, content=m.content + "witness")] + msgs[i + 1 :])
        candidates += [msgs[:i] + [cg.Message(role=r, content=m.content)] + msgs[i + 1 :] for r in ROLES if r != m.role]
        if m.role == "system":  # written first, wherever it stands
            candidates.append([m] + msgs[:i] + msgs[i + 1 :])
    try:
        candidates.append([m for m in fmt.parse(text) if m.complete])
    except cg.ParseError:
        pass
    for w in candidates:
        if w != msgs and _theirs(ref, name, w) == text:
            return w
    return None


def check(ref: llamacpp_reference.Reference, name: str, msgs: list[cg.Message]) -> None:
    fmt = cg.get_format(FORMATS[name])
    ours = _ours(fmt, msgs)
    theirs = _theirs(ref, name, msgs)
    shown = _dicts(name, msgs)
    if isinstance(ours, cg.RenderError):
        assert isinstance(ours, cg.UnsupportedConversationError), ours
        assert _witness(ref, name, msgs, theirs) is not None, (
            f"{fmt.name}: chatgrammar refused ({ours}) a conversation llama-cpp-python writes "
            f"without losing anything: {shown} -> {theirs!r}"
        )
    else:
        assert ours == theirs, f"{fmt.name}: {shown}\n ours:   {ours!r}\n theirs: {theirs!r}"


@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
def test_renders_like_llamacpp(llamacpp: llamacpp_reference.Reference, name: str, data: st.DataObject) -> None:
    fmt = cg.get_format(FORMATS[name])
    conv: Conversation = data.draw(conversations(fmt, content=safe_contents(fmt), allow_open=False))
    check(llamacpp, name, conv.messages)


@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
def test_refuses_only_where_llamacpp_loses(
    llamacpp: llamacpp_reference.Reference, name: str, data: st.DataObject
) -> None:
    fmt = cg.get_format(FORMATS[name])
    roles = data.draw(st.lists(st.sampled_from(ROLES), max_size=6))
    content = safe_contents(fmt)
    check(llamacpp, name, [cg.Message(role=r, content=data.draw(content)) for r in roles])


SHAPES = [[], ["user"], ["user", "assistant", "user"], ["system", "user", "assistant"], ["assistant", "assistant"]]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("k", range(len(HARD_CONTENTS)))
def test_hard_contents_render_like_llamacpp(llamacpp: llamacpp_reference.Reference, name: str, k: int) -> None:
    fmt = cg.get_format(FORMATS[name])
    checked = 0
    for roles in SHAPES:
        for i in range(max(len(roles), 1)):
            msgs = [cg.Message(role=r, content=HARD_CONTENTS[k] if j == i else f"{r} {j}") for j, r in enumerate(roles)]
            try:
                fmt.render(msgs, add_generation_prompt=True)
            except cg.UnsafeContentError:
                continue
            except cg.RenderError:
                pass
            check(llamacpp, name, msgs)
            checked += 1
    assert checked


@pytest.mark.parametrize("name", NAMES)
def test_stop_strings_include_llamacpps(llamacpp: llamacpp_reference.Reference, name: str) -> None:
    fmt = cg.get_format(FORMATS[name])
    for stop in llamacpp.stop(name):
        assert stop in fmt.stop or stop.strip() in fmt.stop or name in STOP_DIFFERENCES, (name, stop, fmt.stop)


@pytest.mark.parametrize("name", NAMES)
def test_the_chat_format_name_is_an_alias(name: str) -> None:
    assert cg.get_format(name) is cg.get_format(FORMATS[name])
    grammar = cg.get_format(name).grammar
    assert "llama_chat_format.py" in grammar and "3691546f1c9e0c1bf93323dff02230bd959cf562" in grammar
