"""The registry: names, aliases and model ids, from the grammars' headers."""

from __future__ import annotations

from typing import Any

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


# Templates no grammar can express yet, with the reason (the test fails once one can: then drop it here).
NOT_YET: dict[str, str] = {}


@pytest.mark.parametrize(
    "entry",
    [
        pytest.param(e, id=e["slug"], marks=pytest.mark.xfail(strict=True, reason=NOT_YET[e["template_file"]]))
        if e["template_file"] in NOT_YET
        else pytest.param(e, id=e["slug"])
        for e in reference.index()
    ],
)
def test_every_template_entry_resolves_by_slug_and_model_id(entry: dict[str, Any]) -> None:
    """Each template in ../shared/templates (and tests/templates) is a built-in format,
    found by its slug and by every model id."""
    fmt = cg.get_format(entry["slug"])
    assert fmt.reference == entry["template_file"], entry["slug"]
    for model_id in entry["model_ids"]:
        assert cg.get_format(model_id) is fmt, model_id


def test_model_ids_resolve_without_their_organisation() -> None:
    for name in cg.formats():
        for model in cg.get_format(name).models:
            org, slash, short = model.partition("/")
            if not slash:
                continue
            try:
                found = cg.get_format(short)
            except cg.UnknownFormatError:  # ambiguous between formats: then not a short name
                others = [n for n in cg.formats() if any(m.endswith("/" + short) for m in cg.get_format(n).models)]
                assert len(others) > 1, model
                continue
            assert found is cg.get_format(model) or found.name == normalize_name(short), model


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


# llama.cpp's template names (src/llama-chat.cpp @ 0192c1297ddde77b0d9688179779e4218cf04db4,
# LLM_CHAT_TEMPLATES) resolve to the format whose real template llama.cpp's own detection
# (llm_chat_detect_template) classifies under that name: the substrings it looks for are below.
LLAMA_CPP_NAMES = {
    "chatml": ("chatml", ["<|im_start|>"]),
    "llama2-sys-bos": ("llama2", ["[INST]", "<<SYS>>", "bos_token + '[INST]"]),
    "mistral-v1": ("mixtral", ["[INST]", "' [INST] ' + system_message"]),
    "mistral-v3-tekken": ("mistral-nemo", ["[INST]", "[AVAILABLE_TOOLS]", '"[INST]"']),
    "mistral-v7": ("mistral-large-2411", ["[INST]", "[SYSTEM_PROMPT]"]),
    "phi4": ("phi-4", ["<|im_start|>", "<|im_sep|>"]),
    "zephyr": ("zephyr", ["<|user|>"]),
    "gemma": ("gemma", ["<start_of_turn>"]),
    "openchat": ("openchat", ["GPT4 Correct "]),
    "vicuna-orca": ("orca-vicuna", ["USER: ", "ASSISTANT: ", "SYSTEM: "]),
    "deepseek": ("deepseek-coder", ["### Instruction:", "<|EOT|>"]),
    "deepseek3": ("deepseek-v3", ["<｜Assistant｜>", "<｜User｜>", "<｜end▁of▁sentence｜>"]),
    "command-r": ("command-r", ["<|START_OF_TURN_TOKEN|>", "<|USER_TOKEN|>"]),
    "llama3": ("llama3", ["<|start_header_id|>", "<|end_header_id|>"]),
    "exaone3": ("exaone3.5", ["[|system|]", "[|assistant|]", "[|endofturn|]"]),
    "llama4": ("llama4", ["<|header_start|>", "<|header_end|>"]),
}


@pytest.mark.parametrize("alias", sorted(LLAMA_CPP_NAMES))
def test_llama_cpp_template_names(alias: str) -> None:
    name, needles = LLAMA_CPP_NAMES[alias]
    fmt = cg.get_format(alias)
    assert fmt.name == name
    source = reference._source(reference.entry_for(fmt)["template_file"])
    for needle in needles:
        assert needle in source, f"{alias}: llama.cpp detects it by {needle!r}, which {fmt.reference} lacks"
