"""Mistakes in a grammar are reported in chatgrammar's terms, with the grammar's line."""

from __future__ import annotations

import pytest

import chatgrammar as cg
from chatgrammar._registry import grammar_dir

GOOD = """// name: demo
// roles: user, assistant
// tokens: _U _A _E
%declare TEXT
start: (user assistant)* [user [generation]]
user: _U [TEXT] _E
assistant: _A [TEXT] _E
generation: assistant
_U: "<u>"
_A: "<a>"
_E: "</e>"
"""


def compile_(source: str) -> cg.Format:
    fmt = cg.Format(source, origin="demo.lark", import_paths=[str(grammar_dir())])
    fmt.render([])
    return fmt


def test_the_good_grammar_works() -> None:
    fmt = compile_(GOOD)
    text = fmt.render([{"role": "user", "content": "hi"}], add_generation_prompt=True)
    assert text == "<u>hi</e><a>"
    assert fmt.parse(text)[-1] == cg.Message(role="assistant", content="", complete=False)


@pytest.mark.parametrize(
    "change,words,line",
    [
        (("// name: demo\n", ""), "no '// name: ...' line", 1),
        (("// name: demo", "// name: Demo Format"), "not a lowercase slug", 1),
        (("// tokens: _U _A _E\n", "// tokens: _U _A _E\n// stopp: _E\n"), "unknown header key 'stopp'", 4),
        (("// tokens: _U _A _E", "// tokens: _U _X"), "header 'tokens' names '_X'", 3),
        (("user: _U [TEXT] _E", "user: _U [TEXT] _E user"), "rule 'user' is recursive", 6),
        (('_U: "<u>"', "_U: /<u+>/"), "regular expression", 9),
        (("start: (user assistant)* [user [generation]]", "start: (user assistant)* (("), "not valid Lark syntax", 5),
        (("user: _U [TEXT] _E", "user: _U [TEXT] [TEXT] _E"), "exactly one content slot", 6),
        (("start: (user assistant)*", "start: TEXT (user assistant)*"), "outside any message rule", None),
        (("assistant: _A [TEXT] _E", "assistant: _A [TEXT] [_U] _E"), "optional part without the content slot", 7),
        (("assistant: _A [TEXT] _E", "assistant: _A ([TEXT] | _U) _E"), "repetition or alternatives", 7),
    ],
)
def test_mistakes(change: tuple[str, str], words: str, line: int | None) -> None:
    old, new = change
    assert old in GOOD
    with pytest.raises(cg.GrammarError) as info:
        compile_(GOOD.replace(old, new))
    assert words in str(info.value)
    if line is not None:
        assert info.value.line == line
        assert info.value.column is not None and info.value.column >= 1
        assert str(info.value).startswith(f"demo.lark:{line}:{info.value.column}: ")


def test_adjacent_slots_are_refused() -> None:
    # A user turn that ends with its content, then an assistant turn that starts with its own.
    src = GOOD.replace("user: _U [TEXT] _E", "user: _U TEXT").replace("assistant: _A [TEXT] _E", "assistant: TEXT _E")
    with pytest.raises(cg.GrammarError) as info:
        compile_(src)
    assert "no literal between them" in str(info.value)


def test_generation_must_open_the_assistant() -> None:
    with pytest.raises(cg.GrammarError) as info:
        compile_(GOOD.replace("generation: assistant", "generation: user"))
    assert "must open the assistant's" in str(info.value)
