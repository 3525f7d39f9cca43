"""Byte-exact conformance with the real chat templates in ../shared/templates.

Generated conversations are rendered by chatgrammar and by the format's real
template (jinja2 under Hugging Face's settings, see reference.py):

* both render: the texts are identical;
* the template raises: chatgrammar raises UnsupportedConversationError;
* chatgrammar refuses but the template renders: the template must be losing
  information there, and the test proves it by finding a *witness*, another
  conversation the template renders to the very same text (a message dropped,
  or its content or role changed, the generation prompt flag flipped, or what
  chatgrammar reads back from the template's text).
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import reference
from hypothesis import given, reject
from hypothesis import strategies as st
from reference import TemplateRaised, first_difference

import chatgrammar as cg
from chatgrammar.testing import HARD_CONTENTS, Conversation, conversations, safe_contents

WITH_REFERENCE = [name for name in cg.formats() if cg.get_format(name).reference]
ROLES = ["system", "user", "assistant"]


def test_every_reference_template_is_covered(templates_dir) -> None:
    entries = reference.index()
    assert entries, "index.json lists no templates"
    covered = {cg.get_format(n).reference for n in WITH_REFERENCE}
    core = {
        "chatml-openhermes.jinja",
        "llama2-chat.jinja",
        "llama3.jinja",
        "mistral-v0.1.jinja",
        "zephyr.jinja",
        "alpaca.jinja",
        "vicuna.jinja",
    }
    assert core <= covered
    for name in WITH_REFERENCE:
        reference.entry_for(cg.get_format(name))  # exactly one index entry per reference


def _ours(fmt: cg.Format, conv: Conversation) -> str | cg.ChatGrammarError:
    try:
        return fmt.render(conv.messages, **conv.render_args())
    except cg.UnsafeContentError:
        reject()
    except cg.RenderError as e:
        return e


def _theirs(fmt: cg.Format, conv: Conversation) -> str | TemplateRaised:
    try:
        return reference.render(fmt, conv.messages, conv.add_generation_prompt, conv.options, conv.tools)
    except TemplateRaised as e:
        return e


def _witness(fmt: cg.Format, conv: Conversation, text: str) -> Conversation | None:
    """Another conversation the template renders to ``text``: proof that it loses information."""
    msgs, gen, opts = conv.messages, conv.add_generation_prompt, conv.options
    candidates = [Conversation(msgs, not gen, opts)]
    for i, m in enumerate(msgs):
        candidates.append(Conversation(msgs[:i] + msgs[i + 1 :], gen, opts))
        other = cg.Message(role=m.role, content=m.content + "witness", complete=m.complete)
        candidates.append(Conversation(msgs[:i] + [other] + msgs[i + 1 :], gen, opts))
        for role in ROLES:
            if role != m.role:
                changed = cg.Message(role=role, content=m.content, complete=m.complete)
                candidates.append(Conversation(msgs[:i] + [changed] + msgs[i + 1 :], gen, opts))
    for i in range(len(msgs) - 1):  # two neighbours swapped, or run together into one message
        a, b = msgs[i], msgs[i + 1]
        candidates.append(Conversation(msgs[:i] + [b, a] + msgs[i + 2 :], gen, opts))
        for role in dict.fromkeys((a.role, b.role)):
            joined = cg.Message(role=role, content=a.content + b.content, complete=b.complete)
            candidates.append(Conversation(msgs[:i] + [joined] + msgs[i + 2 :], gen, opts))
    try:
        read = fmt.parse(text)
    except cg.ParseError:
        pass
    else:
        candidates.append(Conversation(read, False, opts))
    for w in candidates:
        if _same(w, conv):
            continue
        try:
            if reference.render(fmt, w.messages, w.add_generation_prompt, w.options) == text:
                return w
        except TemplateRaised:
            continue
    return None


def _same(a: Conversation, b: Conversation) -> bool:
    return a.messages == b.messages and a.add_generation_prompt == b.add_generation_prompt and a.options == b.options


# Conversations a grammar refuses on purpose, though the template writes them, because what
# it writes could not be read back as them; each is explained in the grammar's comments.
DECLARED_REFUSALS: dict[str, Callable[[list[cg.Message]], bool]] = {
    # A system text between turns runs into the user text before it; an empty one writes nothing.
    "deepseek-coder": lambda msgs: any(m.role == "system" and (i > 0 or not m.content) for i, m in enumerate(msgs)),
}


def check(fmt: cg.Format, conv: Conversation) -> None:
    ours = _ours(fmt, conv)
    theirs = _theirs(fmt, conv)
    shown = json.dumps(conv.dicts(), ensure_ascii=False)[:400]
    declared = DECLARED_REFUSALS.get(fmt.name)
    if isinstance(theirs, TemplateRaised):
        assert isinstance(ours, cg.UnsupportedConversationError), (
            f"{fmt.name}: the template raises ({theirs}) but chatgrammar rendered {ours!r} for {shown}"
        )
    elif isinstance(ours, cg.RenderError) and declared is not None and declared(conv.messages):
        pass
    elif isinstance(ours, cg.ChatGrammarError):
        witness = _witness(fmt, conv, theirs)
        assert witness is not None, (
            f"{fmt.name}: chatgrammar refused ({ours}) a conversation the template renders without "
            f"losing anything: {shown} -> {theirs!r}"
        )
    else:
        assert ours == theirs, f"{fmt.name}: {first_difference(ours, theirs)}\n ours:   {ours!r}\n theirs: {theirs!r}"


@pytest.mark.parametrize("name", WITH_REFERENCE)
@given(data=st.data())
def test_renders_like_the_template(name: str, data: st.DataObject) -> None:
    fmt = cg.get_format(name)
    conv = data.draw(conversations(fmt, content=safe_contents(fmt)))
    conv.date = reference.FIXED_DATE  # the references are rendered on that day
    last = conv.messages[-1] if conv.messages else None
    if last is not None and not last.complete:
        # transformers keeps trailing whitespace of a continued message even where the
        # template trims content; chatgrammar trims it as the template does (see the docs).
        conv.messages[-1] = cg.Message(role=last.role, content=last.content.rstrip(), complete=False)
    check(fmt, conv)


@st.composite
def any_roles(draw: st.DrawFn, fmt: cg.Format) -> Conversation:
    """Role sequences the format may not allow: the errors must match the template's."""
    roles = draw(st.lists(st.sampled_from(ROLES), max_size=6))
    content = safe_contents(fmt)
    msgs = [cg.Message(role=r, content=draw(content)) for r in roles]
    options = {name: draw(st.sampled_from(values)) for name, values in fmt.option_values.items()}
    return Conversation(msgs, draw(st.booleans()), options, reference.FIXED_DATE)


@pytest.mark.parametrize("name", WITH_REFERENCE)
@given(data=st.data())
def test_refuses_where_the_template_refuses_or_loses(name: str, data: st.DataObject) -> None:
    fmt = cg.get_format(name)
    check(fmt, data.draw(any_roles(fmt)))


@pytest.mark.parametrize("name", WITH_REFERENCE)
def test_reference_cases(name: str, templates_dir) -> None:
    """The simple cases shipped beside each template, errors included."""
    fmt = cg.get_format(name)
    slug = reference.entry_for(fmt)["slug"]
    path = templates_dir / "cases" / f"{slug}.jsonl"
    if not path.is_file():
        assert reference.entry_for(fmt) not in reference.shared_index(), f"{slug}: its cases are missing"
        pytest.skip(f"{slug}: a template kept in tests/templates comes without cases (the generated tests cover it)")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines
    for line in lines:
        case = json.loads(line)
        conv = Conversation([cg.Message(**m) for m in case["messages"]], case["add_generation_prompt"])
        conv.date = reference.FIXED_DATE
        if "error" in case:
            with pytest.raises(cg.UnsupportedConversationError):
                fmt.render(conv.messages, **conv.render_args())
        else:
            assert fmt.render(conv.messages, **conv.render_args()) == case["expected"]


@pytest.mark.parametrize("name", WITH_REFERENCE)
@pytest.mark.parametrize("k", range(len(HARD_CONTENTS)))
def test_hard_contents_render_like_the_template(name: str, k: int) -> None:
    """Every hard content, in every message of a plain conversation, with and without a system message."""
    fmt = cg.get_format(name)
    content = HARD_CONTENTS[k]
    checked = unsafe = 0
    for roles in (["user"], ["user", "assistant", "user"], ["system", "user", "assistant"]):
        for i in range(len(roles)):
            msgs = [cg.Message(role=r, content=content if j == i else f"{r} {j}") for j, r in enumerate(roles)]
            for gen in (False, True):
                conv = Conversation(msgs, gen, {}, reference.FIXED_DATE)
                try:
                    fmt.render(conv.messages, **conv.render_args())
                except cg.UnsafeContentError:  # refused as unsafe (a leading newline in Gemma 3's merged system)
                    unsafe += 1
                    continue
                except cg.RenderError:
                    pass
                check(fmt, conv)
                checked += 1
    assert checked > unsafe
