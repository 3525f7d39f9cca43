"""The registry: names, aliases and model ids, from the grammars' headers."""

from __future__ import annotations

import pytest
import reference

import chatgrammar as cg
from chatgrammar._registry import normalize_name


def test_formats_are_sorted_canonical_names() -> None:
    names = cg.formats()
    assert names == sorted(names)
    assert all(cg.get_format(n).name == n for n in names)


def test_names_are_unique_after_normalisation() -> None:
    seen: dict[str, str] = {}
    for name in cg.formats():
        fmt = cg.get_format(name)
        for key in [fmt.name, *fmt.aliases, *fmt.models]:
            norm = normalize_name(key)
            assert seen.setdefault(norm, name) == name, f"{key!r} names {seen[norm]} and {name}"


@pytest.mark.parametrize(
    "alias,name",
    [
        # llama-cpp-python's chat_format names
        ("llama-2", "llama2"),
        ("llama-3", "llama3"),
        ("mistral-instruct", "mistral"),
        ("chatml", "chatml"),
        ("zephyr", "zephyr"),
        ("alpaca", "alpaca"),
        ("vicuna", "vicuna"),
        # llm-templates' names
        ("llama2", "llama2"),
        ("llama3", "llama3"),
        ("mistral", "mistral"),
        # spelling does not matter
        (" LLAMA_2 ", "llama2"),
        ("Llama-3", "llama3"),
    ],
)
def test_aliases(alias: str, name: str) -> None:
    assert cg.get_format(alias).name == name


def test_model_ids_of_the_reference_templates_resolve(templates_dir) -> None:
    count = 0
    for name in cg.formats():
        fmt = cg.get_format(name)
        if not fmt.reference:
            continue
        entry = reference.entry_for(fmt)
        for model_id in entry["model_ids"]:
            assert cg.get_format(model_id) is fmt, model_id
            count += 1
        assert sorted(t.strip() for t in entry["stop"]) == sorted(fmt.stop) or set(fmt.stop) <= set(entry["stop"])
    assert count > 0


def test_stop_strings_end_the_assistant_turn() -> None:
    for name in cg.formats():
        fmt = cg.get_format(name)
        assert fmt.stop, name
        text = fmt.render([{"role": "user", "content": "q"}, {"role": "assistant", "content": "ANSWER"}])
        after = text[text.index("ANSWER") + len("ANSWER") :]
        assert any(s in after for s in fmt.stop), name


def test_get_format_passes_formats_through_and_rejects_other_types() -> None:
    fmt = cg.get_format("chatml")
    assert cg.get_format(fmt) is fmt
    with pytest.raises(TypeError):
        cg.get_format(3)  # type: ignore[arg-type]


def test_compiling_is_lazy() -> None:
    fmt = cg.Format(cg.get_format("chatml").grammar, origin="copy", import_paths=[str(_dir())])
    assert fmt.name == "chatml" and fmt._default is None
    fmt.render([])
    assert fmt._default is not None


def _dir():
    from chatgrammar._registry import grammar_dir

    return grammar_dir()
