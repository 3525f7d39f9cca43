"""The round-trip laws, for every registered format, on generated conversations.

parse(render(m)) == normalize(m)   and   render(parse(s)) == s
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, reject
from hypothesis import strategies as st

import chatgrammar as cg
from chatgrammar._format import _with_dropped
from chatgrammar._structure import collapse
from chatgrammar.testing import conversations

FORMATS = cg.formats()


def test_every_format_is_covered() -> None:
    # The parametrisations below take formats() itself; this pins that the list is not empty
    # and that every grammar file of the package is a registered format.
    assert len(FORMATS) >= 7
    from chatgrammar._registry import grammar_dir

    files = sorted(p.stem for p in grammar_dir().glob("*.lark"))
    assert sorted(cg.get_format(f).name for f in files) == FORMATS


def _render_or_reject(fmt: cg.Format, conv) -> str:
    try:
        return fmt.render(conv.messages, **conv.render_args())
    except cg.UnsafeContentError as e:
        # Generated content may hold this format's delimiters; refusing them is right
        # (tests/test_unsafe.py checks refusals), but there is no round trip to check.
        assert e.index is not None or "tool definition" in str(e)
        fields = conv.messages[e.index].to_dict() if e.index is not None else conv.tools
        written = [fmt._c.payloads.tool_text(t, k) for k, t in enumerate(conv.tools or [])] if e.index is None else []
        # In a tool definition written as TypeScript, the delimiter may join a field and what follows it.
        assert e.delimiter == "" or any(e.delimiter in text for text in _strings(fields) + written)
        reject()


def _strings(value: object) -> list[str]:
    """Every string in a message's fields (content, reasoning, call names, arguments...)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in _strings(k) + _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [json.dumps(value)]


@pytest.mark.parametrize("name", FORMATS)
@given(data=st.data())
def test_parse_of_render_is_normalize(name: str, data: st.DataObject) -> None:
    fmt = cg.get_format(name)
    conv = data.draw(conversations(fmt))
    text = _render_or_reject(fmt, conv)
    expected = fmt.normalize(conv.messages, **conv.render_args())
    assert fmt.parse(text) == expected
    # The reference parser (Lark) of the same options reads the same text the same way.
    variant = fmt._variant(conv.options or None)
    assert collapse(_with_dropped(variant, variant.lark.parse(text)), variant.compiled.payloads).messages == expected


@pytest.mark.parametrize("name", FORMATS)
@given(data=st.data())
def test_render_of_parse_is_identity(name: str, data: st.DataObject) -> None:
    fmt = cg.get_format(name)
    conv = data.draw(conversations(fmt))
    text = _render_or_reject(fmt, conv)
    assert fmt.render(fmt.parse(text), **fmt.options_in(text)) == text


@pytest.mark.parametrize("name", FORMATS)
@given(data=st.data())
def test_dicts_and_models_render_alike(name: str, data: st.DataObject) -> None:
    fmt = cg.get_format(name)
    conv = data.draw(conversations(fmt))
    try:
        from_models = fmt.render(conv.messages, **conv.render_args())
    except cg.UnsafeContentError:
        reject()
    assert fmt.render(conv.dicts(), **conv.render_args()) == from_models


@pytest.mark.parametrize("name", FORMATS)
@given(data=st.data())
def test_normalize_is_idempotent(name: str, data: st.DataObject) -> None:
    fmt = cg.get_format(name)
    conv = data.draw(conversations(fmt))
    try:  # normalize speaks of conversations the format writes: not those it refuses as unsafe
        fmt.render(conv.messages, **conv.render_args())
        once = fmt.normalize(conv.messages, **conv.render_args())
    except cg.UnsafeContentError:
        reject()
    assert fmt.normalize(once, date=conv.date, **conv.options) == once


@pytest.mark.parametrize("name", FORMATS)
def test_generation_prompt_is_an_open_assistant_turn(name: str) -> None:
    fmt = cg.get_format(name)
    msgs = [cg.Message(role="user", content="Hi")]
    try:
        with_prompt = fmt.render(msgs, add_generation_prompt=True)
    except cg.UnsupportedConversationError:
        pytest.skip(f"{name} cannot render a lone user message")
    opened = fmt.render(msgs + [cg.Message(role="assistant", content="", complete=False)])
    assert opened == with_prompt
    assert with_prompt.endswith(fmt.generation_prompt or "")
