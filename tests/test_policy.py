"""Role policies (Format.policy): derived from the grammar, checked against the real templates."""

from __future__ import annotations

import pytest
import reference
from reference import TemplateRaised

import chatgrammar as cg
from chatgrammar import Message

ALL = cg.formats()
WITH_REFERENCE = [name for name in ALL if cg.get_format(name).reference]
S, U, A = "Sys-7f3a", "User-91c2", "Bot-5d0e"


def _msgs(*pairs: tuple[str, str]) -> list[Message]:
    return [Message(role=r, content=c) for r, c in pairs]


def _template(fmt: cg.Format, messages: list[Message]) -> str | None:
    try:
        return reference.render(fmt, messages)
    except TemplateRaised:
        return None


@pytest.mark.parametrize("name", ALL)
def test_policy_matches_what_render_does(name: str) -> None:
    fmt = cg.get_format(name)
    p = fmt.policy
    assert p.system in ("native", "merged-first-user", "merged-last-user", "dropped", "none")
    assert fmt.system == p.system and fmt.alternation == p.alternation and fmt.losses == list(p.losses)
    convo = [{"role": "system", "content": S}, {"role": "user", "content": U}]
    if p.system == "none":
        with pytest.raises(cg.UnsupportedConversationError):
            fmt.render(convo)
        return
    back = fmt.parse(fmt.render(convo))
    if p.system == "dropped":
        assert not any(S in m.content for m in back)
        assert any("system message" in loss for loss in p.losses)
    elif p.system == "native":
        assert [m.content for m in back if m.role == "system"][-1:] == [S]
    else:
        assert not any(m.content == S for m in back)
        assert any(S in m.content and U in m.content for m in back if m.role == "user")
    for roles in (["user", "user"], ["user", "assistant", "assistant"]):
        msgs = [{"role": r, "content": f"{r}-{k}"} for k, r in enumerate(roles)]
        if p.alternation:
            with pytest.raises(cg.UnsupportedConversationError):
                fmt.render(msgs)
    if not p.alternation:
        assert any(
            _renders(fmt, [{"role": r, "content": f"{r}-{k}"} for k, r in enumerate(roles)])
            for roles in (["user", "user"], ["user", "assistant", "assistant"])
        )


def _renders(fmt: cg.Format, msgs: list[dict[str, str]]) -> bool:
    try:
        fmt.render(msgs)
    except cg.UnsupportedConversationError:
        return False
    return True


@pytest.mark.parametrize("name", WITH_REFERENCE)
def test_policy_matches_the_template(name: str) -> None:
    fmt = cg.get_format(name)
    p = fmt.policy
    with_system = _template(fmt, _msgs(("system", S), ("user", U)))
    if p.system == "none":  # the template refuses it
        assert with_system is None
    elif p.system == "dropped":  # the template writes nothing for it
        assert with_system is not None and S not in with_system
    elif p.system == "native":
        assert with_system is not None and S in with_system
        assert with_system.index(S) < with_system.index(U)
    else:
        assert with_system is not None and S in with_system
        sep = (p.losses and next(x for x in p.losses if "system message is written into" in x)) or ""
        assert sep, "a merged system message is declared among the losses"
    # Strict alternation: the template itself refuses two user turns in a row, or writes them
    # like something else (the conformance tests find the witness); no alternation: it writes both.
    two_users = _template(fmt, _msgs(("user", U), ("user", U + "2")))
    if not p.alternation:
        assert two_users is not None and U + "2" in two_users
    elif two_users is not None:
        assert U + "2" not in two_users or fmt.render(_msgs(("user", U))) != two_users


@pytest.mark.parametrize("name", ALL)
def test_declared_default_system_is_what_is_written(name: str) -> None:
    fmt = cg.get_format(name)
    default = fmt.policy.default_system
    if default is None:
        return
    text = fmt.render([{"role": "user", "content": U}], date=reference.FIXED_DATE)
    first = fmt.parse(text)[0]
    assert first.role == "system"
    if "{date}" in default:  # the date is written in one of the template's usual spellings
        head, tail = default.split("{date}", 1)
        assert first.content.startswith(head) and first.content.endswith(tail)
        assert str(reference.FIXED_DATE.year) in first.content
    elif fmt._header.get("default-system-if") == "not-first-or-empty":
        assert first.content == ""  # the default is what an empty system message writes: it reads as one
        assert default in text
    else:
        assert first.content == default


def test_policies_of_known_formats() -> None:
    # Facts about the templates, read from their sources (see ../shared/templates).
    assert cg.get_format("llama2").alternation
    assert not cg.get_format("chatml").alternation
    assert cg.get_format("gemma3").system == "merged-first-user"
    assert cg.get_format("mixtral").system == "merged-first-user"
    assert cg.get_format("mistral-nemo").system == "merged-last-user"
    assert cg.get_format("mistral").system == "none"
    assert cg.get_format("chatml").system == "native"
    assert cg.get_format("qwen2.5").policy.default_system is not None
