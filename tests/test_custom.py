"""Bring your own format: specs, user grammars, formats derived from real templates, export.

Each derived or declared format is compared with an independent renderer: litellm's and
chatformat's algorithms written out here, and the real templates rendered by
../shared/templates/render_reference.py (Hugging Face's renderer or jinja2 set up as it).
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import TemplateRaised, _render, _source, index

import chatgrammar as cg
from chatgrammar.testing import check_format, conversations

CONTENT = st.text(st.characters(blacklist_categories=["Cs"]), max_size=30)
ROLES = st.sampled_from(["system", "user", "assistant"])


def litellm_custom_prompt(role_dict, messages, initial="", final="", bos="", eos=""):
    """litellm's custom_prompt, as its factory.py writes it."""
    prompt = bos + initial
    bos_open = True
    for message in messages:
        role = message["role"]
        if role in ["system", "human"] and not bos_open:
            prompt += bos
            bos_open = True
        pre = role_dict.get(role, {}).get("pre_message", "")
        post = role_dict.get(role, {}).get("post_message", "")
        prompt += pre + message["content"] + post
        if role == "assistant":
            prompt += eos
            bos_open = False
    return prompt + final


LITELLM = {
    "system": {"pre_message": "[INST] <<SYS>>\n", "post_message": "\n<</SYS>>\n [/INST]\n"},
    "user": {"pre_message": "[INST] ", "post_message": " [/INST]"},
    "assistant": {"pre_message": "\n", "post_message": "\n"},
}


@settings(max_examples=150, deadline=None)
@given(msgs=st.lists(st.fixed_dictionaries({"role": ROLES, "content": CONTENT}), max_size=6))
def test_litellm_spec_renders_as_litellm(msgs) -> None:
    fmt = cg.Format.from_spec({"name": "lit", "roles": LITELLM, "bos_token": "<s>", "eos_token": "</s>"})
    try:
        text = fmt.render(msgs)
    except cg.UnsafeContentError:
        return
    assert text == litellm_custom_prompt(LITELLM, msgs, bos="<s>", eos="</s>")
    assert fmt.parse(text) == fmt.normalize(msgs)


def chatformat(template, messages):
    """chatformat's format_chat_prompt on a custom template (system first, then rounds)."""
    system, offset = (messages[0]["content"], 1) if messages and messages[0]["role"] == "system" else (None, 0)
    rounds = []
    for i in range(offset, len(messages), 2):
        m2 = messages[i + 1] if len(messages) >= i + 2 else None
        rounds.append((messages[i]["content"], m2["content"] if m2 else None))
    blocks = []
    for i, (user, assistant) in enumerate(rounds):
        prompt = (
            template["with_system"].replace("{system}", system) if system and i == 0 else template["without_system"]
        )
        prompt = prompt.replace("{user}", user)
        if i < len(rounds) - 1:
            prompt = prompt.replace("{assistant}", assistant)
        else:
            prompt = prompt[: prompt.index("{assistant}")] + (assistant or "")
        blocks.append(prompt)
    return template["round_seperator"].join(blocks)


CHATFORMAT = {
    "with_system": ">system: {system}\n>user: {user}\n>assistant: {assistant}</s>",
    "without_system": ">user: {user}\n>assistant: {assistant}</s>",
    "round_seperator": "\n",
}


@settings(max_examples=150, deadline=None)
@given(
    system=st.one_of(st.none(), CONTENT.filter(bool)),
    pairs=st.lists(st.tuples(CONTENT, CONTENT), min_size=1, max_size=4),
    trailing_user=st.booleans(),
)
def test_chatformat_spec_renders_as_chatformat(system, pairs, trailing_user) -> None:
    fmt = cg.Format.from_spec({"name": "cf", **CHATFORMAT})
    msgs = [{"role": "system", "content": system}] if system else []
    for u, a in pairs:
        msgs += [{"role": "user", "content": u}, {"role": "assistant", "content": a}]
    if trailing_user:
        msgs.append({"role": "user", "content": "next"})
    ours = [dict(m) for m in msgs]
    gen = trailing_user
    if not trailing_user:  # chatformat leaves the last answer open (an empty one is the prompt)
        ours[-1] = {**ours[-1], "complete": False}
        if not ours[-1]["content"]:
            ours.pop()
            gen = True
    try:
        text = fmt.render(ours, add_generation_prompt=gen)
    except cg.UnsafeContentError:
        return
    assert text == chatformat(CHATFORMAT, msgs)


def test_spec_mistakes_are_explained() -> None:
    with pytest.raises(cg.GrammarError, match="unknown key 'rolez'"):
        cg.Format.from_spec({"name": "x", "rolez": {}})
    # Two contents with nothing between them: no reader could tell where one ends.
    with pytest.raises(cg.GrammarError, match="no literal between them"):
        cg.Format.from_spec({"roles": {"user": {"pre": "U:"}, "assistant": {"post": "\n"}}})
    with pytest.raises(cg.GrammarError, match="order 'sideways' is not one of"):
        cg.Format.from_spec({"roles": {"user": {"pre": "U:"}}, "order": "sideways"})


def test_literals_with_no_token_among_them() -> None:
    """Plain-text openings, each optional content between them: "U:" and "A:" can follow each
    other in any number, which once made the stop strings explode; now the shortest stand for all."""
    roles = {"user": {"pre": "U:"}, "assistant": {"pre": "A:", "post": "."}, "system": {"pre": "S:"}}
    fmt = cg.Format.from_spec({"roles": roles})
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}, {"role": "user", "content": "x"}]
    assert fmt.render(msgs) == "U:hiA:.U:x"
    assert [m.to_dict() for m in fmt.parse("U:hiA:.U:x")] == msgs
    with pytest.raises(cg.UnsafeContentError):
        fmt.render([{"role": "user", "content": "say A: then"}])
    check_format(fmt, max_examples=30)


def test_check_format_finds_a_broken_spec() -> None:
    """An answer with no closing text: a final empty answer is written as the generation prompt
    is, so it reads back as an open turn. check_format says so, as it would for a user's grammar."""
    fmt = cg.Format.from_spec({"roles": {"user": {"pre": "U:"}, "assistant": {"pre": "A:"}}})
    with pytest.raises(AssertionError, match="parse\\(render\\(m\\)\\) != normalize\\(m\\)"):
        check_format(fmt, max_examples=300)


def llama2_order_ok(roles: list[str], system_first: bool) -> bool:
    """Llama 2's (and, without the system exemption, Gemma's) check, as their templates write it."""
    rest = roles[1:] if system_first and roles[:1] == ["system"] else roles
    return all((r == "user") == (i % 2 == 0) for i, r in enumerate(rest))


@pytest.mark.parametrize("order", ["user-even", "system-first-user-even"])
@settings(max_examples=60, deadline=None)
@given(roles=st.lists(ROLES, max_size=5))
def test_user_even_orders(order: str, roles: list[str]) -> None:
    turn = {"pre": "<{role}>", "post": "</>"}
    fmt = cg.Format.from_spec(
        {"roles": {r: {"pre": f"<{r}>", "post": turn["post"]} for r in ("system", "user", "assistant")}, "order": order}
    )
    msgs = [{"role": r, "content": "c"} for r in roles]
    if llama2_order_ok(roles, order == "system-first-user-even"):
        assert fmt.render(msgs) == "".join(f"<{r}>c</>" for r in roles)
    else:
        with pytest.raises(cg.UnsupportedConversationError):
            fmt.render(msgs)


def test_load_format_register_and_check(tmp_path: Path) -> None:
    path = tmp_path / "mine.lark"
    path.write_text(
        "// name: mine-test\n// aliases: mine-alias\n// roles: user, assistant\n// tokens: _U _A _E\n// stop: _E\n"
        "%declare TEXT\nstart: (user assistant)* [user [generation]]\nuser: _U [TEXT] _E\n"
        'assistant: _A [TEXT] _E\ngeneration: assistant\n_U: "<u>"\n_A: "<a>"\n_E: "</e>"\n',
        encoding="utf-8",
    )
    fmt = cg.load_format(str(path))
    with pytest.raises(cg.UnknownFormatError):
        cg.get_format("mine-test")
    cg.register(fmt)
    try:
        assert cg.get_format("mine-alias") is fmt
        assert cg.render([{"role": "user", "content": "x"}], "mine-test") == "<u>x</e>"
        with pytest.raises(cg.GrammarError, match="already names"):
            cg.register(cg.load_format(str(path)))
        check_format(fmt, max_examples=30)
    finally:
        cg.unregister("mine-test")
    with pytest.raises(cg.UnknownFormatError):
        cg.get_format("mine-alias")
    with pytest.raises(cg.GrammarError) as info:
        cg.load_format(path.read_text().replace("user: _U [TEXT] _E", "user: _U [TEXT] [TEXT] _E"))
    assert (info.value.line, info.value.column) == (8, 1)


def test_a_token_shaped_literal_content_may_hold_is_warned_of() -> None:
    source = (
        "// name: tok-test\n// roles: user, assistant\n// tokens: _END\n// stop: _END\n%declare TEXT\n"
        "start: (user assistant)* [user [generation]]\nuser: _U [TEXT] _END\nassistant: _A [TEXT] _END\n"
        'generation: assistant\n_U: "<|user|>\\n"\n_A: "<|assistant|>\\n"\n_END: "<|end|>"\n'
    )
    with pytest.warns(cg.GrammarWarning, match="can also occur inside content") as caught:
        fmt = cg.load_format(source)
    found = [(w.message.line, w.message.column, str(w.message).split("'")[1]) for w in caught]
    assert found == [(10, 5, "<|user|>"), (11, 5, "<|assistant|>")]
    # it is true: content holding it renders
    assert "<|user|>" in fmt.render([{"role": "user", "content": "<|user|>"}])
    declared = cg.load_format(source.replace("// tokens: _END", "// tokens: _END _U _A"))  # no warning
    with pytest.raises(cg.UnsafeContentError):
        declared.render([{"role": "user", "content": "<|user|>"}])


# -- from_template, on every real template -------------------------------------------------


def reference_render(source: str, msgs, gen: bool, bos: str = "", eos: str = "", **kwargs) -> str | None:
    """The template's text, rendered independently (None: it refuses)."""
    try:
        return _render(source, msgs, add_generation_prompt=gen, bos_token=bos, eos_token=eos, **kwargs)
    except TemplateRaised:
        return None


ENTRIES = index()


@functools.cache
def derived(slug: str) -> cg.Format | cg.TemplateCaptureError:
    """The format ``from_template`` derives from a real template, given only its text and tokens."""
    entry = next(e for e in ENTRIES if e["slug"] == slug)
    try:
        return cg.from_template(
            _source(entry["template_file"]),
            bos_token=entry["bos_token"] or "",
            eos_token=entry["eos_token"] or "",
            name=slug,
            conversations=100,
            **entry.get("render_kwargs", {}),
        )
    except cg.TemplateCaptureError as e:
        return e


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["slug"] for e in ENTRIES])
def test_from_template_is_exact_or_says_why(entry) -> None:
    source = _source(entry["template_file"])
    kwargs = entry.get("render_kwargs", {})
    bos, eos = entry["bos_token"] or "", entry["eos_token"] or ""
    fmt = derived(entry["slug"])
    if isinstance(fmt, cg.TemplateCaptureError):
        assert fmt.probe and fmt.reason and "the template was not captured" in str(fmt)
        return

    @settings(max_examples=40, deadline=None)
    @given(data=st.data())
    def agrees(data) -> None:
        conv = data.draw(conversations(fmt, allow_open=False))
        msgs = [m.to_dict() for m in conv.messages]
        gen = bool(conv.add_generation_prompt)
        try:
            ours = fmt.render(msgs, add_generation_prompt=gen)
        except cg.UnsafeContentError:
            return
        theirs = reference_render(source, msgs, gen, bos, eos, **kwargs)
        assert ours == theirs
        assert fmt.parse(theirs) == fmt.normalize(msgs, add_generation_prompt=gen)

    agrees()


def test_from_template_count() -> None:
    """How many of the real templates are captured byte-exact (the closing note's figure; each
    capture is checked against the template itself above)."""
    captured = [e["slug"] for e in ENTRIES if not isinstance(derived(e["slug"]), cg.TemplateCaptureError)]
    assert len(captured) >= 17, captured
    # the orders Llama 2 and Gemma check, and templates that leave messages out (refused instead)
    assert {"mistral-v0.1", "gemma", "command-r", "phi-3-mini"} <= set(captured)


def test_a_template_that_drops_messages_is_refused_not_lost() -> None:
    """Phi-3 Mini's template writes no system message: the derived format refuses one, and says so."""
    fmt = derived("phi-3-mini")
    assert isinstance(fmt, cg.Format)
    assert "leaves messages out" in fmt.description
    with pytest.raises(cg.UnsupportedConversationError):
        fmt.render([{"role": "system", "content": "S"}, {"role": "user", "content": "U"}])


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["slug"] for e in ENTRIES])
def test_match_template_names_the_builtin(entry) -> None:
    builtins = [n for n in cg.formats() if cg.get_format(n).reference == entry["template_file"]]
    if not builtins:
        pytest.skip("no built-in reproduces this template")
    source = _source(entry["template_file"])
    bos, eos = entry["bos_token"] or "", entry["eos_token"] or ""
    got = cg.match_template(source, bos_token=bos, eos_token=eos)
    # Another built-in may be equivalent on plain conversations (Mistral v0.1 and v0.2): then it
    # must render what the template renders.
    assert got is not None
    if got not in builtins:
        msgs = [
            {"role": "user", "content": " Hi "},
            {"role": "assistant", "content": "Yo"},
            {"role": "user", "content": "?"},
        ]
        assert cg.get_format(got).render(msgs, add_generation_prompt=True) == reference_render(
            source, msgs, True, bos, eos
        )


def test_match_template_of_an_unknown_template_is_none() -> None:
    assert cg.match_template("{% for m in messages %}@@{{ m.content }}@@{% endfor %}") is None


# -- export ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", cg.formats())
def test_to_jinja_renders_byte_identically_or_says_why(name: str) -> None:
    fmt = cg.get_format(name)
    try:
        source = fmt.to_jinja()
    except cg.TemplateCaptureError as e:
        assert f"exporting {name} to Jinja" in str(e)
        return

    @settings(max_examples=40, deadline=None)
    @given(data=st.data())
    def agrees(data) -> None:
        conv = data.draw(conversations(fmt, allow_open=False))
        if conv.tools or conv.options or any(m.role not in ("system", "user", "assistant") for m in conv.messages):
            return
        msgs = [{"role": m.role, "content": m.content} for m in conv.messages]
        gen = bool(conv.add_generation_prompt)
        try:
            ours = fmt.render(msgs, add_generation_prompt=gen)
        except cg.UnsafeContentError:
            return
        assert reference_render(source, msgs, gen) == ours

    agrees()


def test_to_jinja_exports_the_flat_formats() -> None:
    exported = []
    for name in cg.formats():
        try:
            cg.get_format(name).to_jinja()
            exported.append(name)
        except cg.TemplateCaptureError:
            pass
    assert {"chatml", "llama3", "zephyr", "phi-4", "qwen2.5"} <= set(exported)


def test_to_lark_is_the_grammar() -> None:
    fmt = cg.get_format("chatml")
    assert cg.load_format(fmt.to_lark()).render([{"role": "user", "content": "x"}]) == fmt.render(
        [{"role": "user", "content": "x"}]
    )
