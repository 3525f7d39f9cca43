"""Reading chat templates and special tokens from where models ship them (all in tmp_path, no network)."""

from __future__ import annotations

import hashlib
import json
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

from chatgrammar._errors import ChatGrammarError
from chatgrammar._sources import (
    TemplateSource,
    TemplateSourceError,
    from_gguf,
    from_pretrained,
    from_tokenizer_config,
)

CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
TOOL_USE = "{{ bos_token }}{% for tool in tools %}{{ tool | tojson }}{% endfor %}— outils"
LLAMA = "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}{{ eos_token }}{% endfor %}"


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    return path


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


# --- tokenizer_config.json ---------------------------------------------------------------------------


def test_string_template_and_string_tokens(tmp_path: Path) -> None:
    path = write_json(
        tmp_path / "my-model" / "tokenizer_config.json",
        {"chat_template": LLAMA, "bos_token": "<s>", "eos_token": "</s>", "pad_token": None, "add_bos_token": True},
    )
    source = from_tokenizer_config(path)
    assert source == TemplateSource(
        template=LLAMA,
        bos_token="<s>",
        eos_token="</s>",
        special_tokens=("<s>", "</s>"),
        origin=str(path),
        name="my-model",
        add_bos_token=True,
    )


def test_added_token_dicts_and_special_tokens_in_order(tmp_path: Path) -> None:
    def added(content: str, special: bool = True) -> dict[str, Any]:
        return {
            "__type": "AddedToken",
            "content": content,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": special,
        }

    path = write_json(
        tmp_path / "tokenizer_config.json",
        {
            "chat_template": CHATML,
            "bos_token": added("<|begin|>"),
            "eos_token": added("<|im_end|>"),
            "unk_token": None,
            "pad_token": added("<|endoftext|>"),
            "additional_special_tokens": ["<|im_start|>", added("<|im_end|>"), "<tool_call>"],
            "added_tokens_decoder": {
                "151646": added("<|fim_pad|>"),
                "151643": added("<|endoftext|>"),
                "151644": added("<|im_start|>"),
                "151657": added("<think>", special=False),
                "2": added("<|begin|>"),
            },
        },
    )
    source = from_tokenizer_config(path)
    assert source.bos_token == "<|begin|>"
    assert source.eos_token == "<|im_end|>"
    assert source.template == CHATML
    assert source.special_tokens == (
        "<|begin|>",
        "<|im_end|>",
        "<|endoftext|>",
        "<|im_start|>",
        "<tool_call>",
        "<|fim_pad|>",
    )
    assert "<think>" not in source.special_tokens
    assert source.add_bos_token is None


def test_transformers_5_extra_special_tokens(tmp_path: Path) -> None:
    path = write_json(
        tmp_path / "tokenizer_config.json",
        {"chat_template": CHATML, "eos_token": "<eos>", "extra_special_tokens": {"image_token": "<image>"}},
    )
    assert from_tokenizer_config(path).special_tokens == ("<eos>", "<image>")


def test_named_templates(tmp_path: Path) -> None:
    path = write_json(
        tmp_path / "tokenizer_config.json",
        {
            "chat_template": [{"name": "default", "template": CHATML}, {"name": "tool_use", "template": TOOL_USE}],
            "bos_token": "<s>",
        },
    )
    default = from_tokenizer_config(path)
    assert default.template == CHATML
    assert default.origin == f"{path}:chat_template[default]"
    tool_use = from_tokenizer_config(path, template_name="tool_use")
    assert tool_use.template == TOOL_USE
    assert tool_use.origin == f"{path}:chat_template[tool_use]"
    assert tool_use.bos_token == "<s>"

    with pytest.raises(TemplateSourceError, match=r"no chat template named 'rag'.*'default', 'tool_use'"):
        from_tokenizer_config(path, template_name="rag")


def test_named_templates_without_default_need_a_name(tmp_path: Path) -> None:
    path = write_json(
        tmp_path / "tokenizer_config.json",
        {"chat_template": [{"name": "tool_use", "template": TOOL_USE}, {"name": "rag", "template": LLAMA}]},
    )
    with pytest.raises(TemplateSourceError, match=r"none named 'default'.*'tool_use', 'rag'"):
        from_tokenizer_config(path)
    assert from_tokenizer_config(path, template_name="rag").template == LLAMA


def test_single_template_has_no_other_names(tmp_path: Path) -> None:
    path = write_json(tmp_path / "tokenizer_config.json", {"chat_template": CHATML})
    assert from_tokenizer_config(path, template_name="default").template == CHATML
    with pytest.raises(TemplateSourceError, match=r"no chat template named 'tool_use': it has 'default'"):
        from_tokenizer_config(path, template_name="tool_use")


def test_sibling_chat_template_jinja(tmp_path: Path) -> None:
    path = write_json(tmp_path / "tokenizer_config.json", {"bos_token": "<s>", "eos_token": "</s>"})
    jinja = tmp_path / "chat_template.jinja"
    jinja.write_text(LLAMA, encoding="utf-8")
    source = from_tokenizer_config(path)
    assert source.template == LLAMA
    assert source.origin == str(jinja)
    assert (source.bos_token, source.eos_token) == ("<s>", "</s>")


def test_template_files_win_over_the_config_as_in_transformers(tmp_path: Path) -> None:
    # transformers' _from_pretrained: "If independent chat template file(s) exist, they take
    # priority over template entries in the tokenizer config".
    path = write_json(tmp_path / "tokenizer_config.json", {"chat_template": CHATML})
    (tmp_path / "chat_template.jinja").write_text(LLAMA, encoding="utf-8")
    (tmp_path / "additional_chat_templates").mkdir()
    (tmp_path / "additional_chat_templates" / "tool_use.jinja").write_text(TOOL_USE, encoding="utf-8")
    assert from_tokenizer_config(path).template == LLAMA
    tool_use = from_tokenizer_config(path, template_name="tool_use")
    assert tool_use.template == TOOL_USE
    assert tool_use.origin == str(tmp_path / "additional_chat_templates" / "tool_use.jinja")


def test_jinja_file_is_read_in_text_mode(tmp_path: Path) -> None:
    path = write_json(tmp_path / "tokenizer_config.json", {})
    (tmp_path / "chat_template.jinja").write_bytes(b"{{ bos_token }}\r\n{{ eos_token }}\r\n")
    assert from_tokenizer_config(path).template == "{{ bos_token }}\n{{ eos_token }}\n"


def test_legacy_chat_template_json(tmp_path: Path) -> None:
    path = write_json(tmp_path / "tokenizer_config.json", {"eos_token": "<end_of_turn>"})
    legacy = write_json(tmp_path / "chat_template.json", {"chat_template": TOOL_USE})
    source = from_tokenizer_config(path)
    assert source.template == TOOL_USE
    assert source.origin == str(legacy)
    # ... but the config's own template comes first.
    write_json(path, {"eos_token": "<end_of_turn>", "chat_template": CHATML})
    assert from_tokenizer_config(path).template == CHATML


def test_special_tokens_map_fills_what_the_config_lacks(tmp_path: Path) -> None:
    path = write_json(tmp_path / "tokenizer_config.json", {"chat_template": LLAMA, "eos_token": "</s>"})
    write_json(
        tmp_path / "special_tokens_map.json",
        {"bos_token": {"content": "<s>", "lstrip": False}, "eos_token": "<ignored>", "unk_token": "<unk>"},
    )
    source = from_tokenizer_config(path)
    assert (source.bos_token, source.eos_token) == ("<s>", "</s>")
    assert source.special_tokens == ("<s>", "</s>", "<unk>")


def test_no_template_anywhere(tmp_path: Path) -> None:
    path = write_json(tmp_path / "tokenizer_config.json", {"bos_token": "<s>", "eos_token": "</s>"})
    with pytest.raises(TemplateSourceError, match="has no chat_template") as info:
        from_tokenizer_config(path)
    assert str(path) in str(info.value)
    assert info.value.source == str(path)
    assert isinstance(info.value, ChatGrammarError) and isinstance(info.value, ValueError)


def test_dict_config(tmp_path: Path) -> None:
    config = {"chat_template": [{"name": "default", "template": CHATML}], "eos_token": {"content": "<|im_end|>"}}
    source = from_tokenizer_config(config)
    assert (source.template, source.eos_token, source.name) == (CHATML, "<|im_end|>", None)
    with pytest.raises(TemplateSourceError, match="the tokenizer config has no chat_template"):
        from_tokenizer_config({"bos_token": "<s>"})


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not valid JSON"),
        ("[1, 2]", "holds a JSON list, not an object"),
        ('{"chat_template": 3}', "chat_template is a int"),
        ('{"chat_template": [{"name": "default"}]}', "not a {'name': ..., 'template': ...}"),
    ],
)
def test_malformed_configs(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "tokenizer_config.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(TemplateSourceError, match=message.replace("{", r"\{").replace("[", r"\[").replace(".", r"\.")):
        from_tokenizer_config(path)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(TemplateSourceError, match="no such file"):
        from_tokenizer_config(tmp_path / "absent" / "tokenizer_config.json")


# --- from_pretrained on local paths ------------------------------------------------------------------


def test_from_pretrained_directory_and_config_file(tmp_path: Path) -> None:
    model = tmp_path / "Qwen2.5-0.5B-Instruct"
    path = write_json(model / "tokenizer_config.json", {"chat_template": CHATML, "eos_token": "<|im_end|>"})
    by_dir = from_pretrained(str(model))
    by_file = from_pretrained(path)
    assert by_dir.template == by_file.template == CHATML
    assert by_dir.name == by_file.name == "Qwen2.5-0.5B-Instruct"
    assert by_dir.eos_token == "<|im_end|>"


def test_from_pretrained_directory_without_model_files(tmp_path: Path) -> None:
    with pytest.raises(TemplateSourceError, match="holds no tokenizer_config.json"):
        from_pretrained(tmp_path)


def test_from_pretrained_missing_paths(tmp_path: Path) -> None:
    for missing in (tmp_path / "nowhere", tmp_path / "model.gguf", Path("./relative/x/y")):
        with pytest.raises(TemplateSourceError, match="no such file or directory"):
            from_pretrained(missing)
    other = tmp_path / "notes.txt"
    other.write_text("hi", encoding="utf-8")
    with pytest.raises(TemplateSourceError, match="neither a .gguf file"):
        from_pretrained(other)


def test_optional_packages_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "gguf", None)
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(ImportError, match=r"pip install 'chatgrammar\[gguf\]'"):
        from_gguf(tmp_path / "model.gguf")
    with pytest.raises(ImportError, match=r"pip install 'chatgrammar\[hub\]'"):
        from_pretrained("org/name", cache_dir=tmp_path)


# --- GGUF --------------------------------------------------------------------------------------------

TOKENS = ["<unk>", "<s>", "</s>", "▁hello", "<|im_start|>", "<|im_end|>", "<tool>", "é"]
# UNKNOWN, CONTROL, CONTROL, NORMAL, CONTROL, CONTROL, USER_DEFINED, NORMAL
TOKEN_TYPES = [2, 3, 3, 1, 3, 3, 4, 1]


def write_gguf(path: Path, *, templates: str | list[dict[str, str]] | None, add_bos: bool = False) -> Path:
    gguf = pytest.importorskip("gguf")
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name("Tiny Test Model")
    writer.add_tokenizer_model("llama")
    writer.add_token_list(TOKENS)
    writer.add_token_types(TOKEN_TYPES)
    writer.add_token_scores([0.0] * len(TOKENS))
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(5)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(add_bos)
    if templates is not None:
        writer.add_chat_template(templates)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_gguf(tmp_path: Path) -> None:
    path = write_gguf(
        tmp_path / "tiny-q8_0.gguf",
        templates=[{"name": "default", "template": CHATML}, {"name": "tool_use", "template": TOOL_USE}],
    )
    source = from_gguf(path)
    assert source == TemplateSource(
        template=CHATML,
        bos_token="<s>",
        eos_token="<|im_end|>",
        special_tokens=("<s>", "<|im_end|>", "<unk>", "</s>", "<|im_start|>"),
        origin=f"{path}:tokenizer.chat_template",
        name="tiny-q8_0",
        add_bos_token=False,
    )
    tool_use = from_gguf(path, template_name="tool_use")
    assert tool_use.template == TOOL_USE  # non-ASCII text survives
    assert tool_use.origin == f"{path}:tokenizer.chat_template.tool_use"
    with pytest.raises(TemplateSourceError, match=r"no chat template named 'rag': it has 'default', 'tool_use'"):
        from_gguf(path, template_name="rag")
    # from_pretrained dispatches on the suffix.
    assert from_pretrained(str(path), template_name="tool_use") == tool_use


def test_gguf_add_bos_token_is_information_only(tmp_path: Path) -> None:
    source = from_gguf(write_gguf(tmp_path / "m.gguf", templates=LLAMA, add_bos=True))
    assert (source.template, source.bos_token, source.add_bos_token) == (LLAMA, "<s>", True)


def test_gguf_only_named_templates(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "m.gguf", templates=[{"name": "tool_use", "template": TOOL_USE}])
    with pytest.raises(TemplateSourceError, match=r"none named 'default'.*'tool_use'"):
        from_gguf(path)
    assert from_gguf(path, template_name="tool_use").template == TOOL_USE


def test_gguf_without_template(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "base.gguf", templates=None)
    with pytest.raises(TemplateSourceError, match="has no tokenizer.chat_template") as info:
        from_gguf(path)
    assert str(path) in str(info.value)


def test_not_a_gguf_file(tmp_path: Path) -> None:
    pytest.importorskip("gguf")
    path = tmp_path / "fake.gguf"
    path.write_bytes(b"NOPE" + bytes(60))
    with pytest.raises(TemplateSourceError, match="is not a readable GGUF file"):
        from_gguf(path)
    with pytest.raises(TemplateSourceError, match="no such GGUF file"):
        from_gguf(tmp_path / "absent.gguf")


# --- the Hugging Face cache ----------------------------------------------------------------------------

COMMIT = "0123456789abcdef0123456789abcdef01234567"
OTHER_COMMIT = "fedcba9876543210fedcba9876543210fedcba98"


def cache_file(repo: Path, commit: str, filename: str, text: str) -> None:
    """Store a file as huggingface_hub does: content in blobs/, a relative symlink in snapshots/<commit>/."""
    blob = repo / "blobs" / hashlib.sha256(text.encode()).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_text(text, encoding="utf-8")
    link = repo / "snapshots" / commit / filename
    link.parent.mkdir(parents=True, exist_ok=True)
    try:
        link.symlink_to(Path("..", "..", "blobs", blob.name))
    except OSError:  # no symlinks (Windows without developer mode): huggingface_hub copies then
        link.write_text(text, encoding="utf-8")


def make_cache(root: Path) -> Path:
    repo = root / "models--org--name"
    cache_file(repo, COMMIT, "tokenizer_config.json", json.dumps({"bos_token": "<s>", "eos_token": "</s>"}))
    cache_file(repo, COMMIT, "chat_template.jinja", LLAMA)
    cache_file(repo, OTHER_COMMIT, "tokenizer_config.json", json.dumps({"chat_template": CHATML}))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT, encoding="utf-8")  # no trailing newline, as huggingface_hub writes
    (repo / "refs" / "v1").write_text(OTHER_COMMIT, encoding="utf-8")
    return repo


def test_hub_cache(tmp_path: Path, no_network: None) -> None:
    pytest.importorskip("huggingface_hub")
    repo = make_cache(tmp_path)
    source = from_pretrained("org/name", cache_dir=tmp_path)
    assert source.template == LLAMA
    assert (source.bos_token, source.eos_token) == ("<s>", "</s>")
    assert source.name == "org/name"
    assert source.origin == str(repo / "snapshots" / COMMIT / "chat_template.jinja")

    assert from_pretrained("org/name", cache_dir=str(tmp_path), revision="v1").template == CHATML
    assert from_pretrained("org/name", cache_dir=tmp_path, revision=OTHER_COMMIT).template == CHATML


def test_hub_cache_default_location(tmp_path: Path, no_network: None, monkeypatch: pytest.MonkeyPatch) -> None:
    hub = pytest.importorskip("huggingface_hub")
    make_cache(tmp_path)
    monkeypatch.setattr(hub.constants, "HF_HUB_CACHE", str(tmp_path))
    assert from_pretrained("org/name").template == LLAMA


def test_hub_not_in_cache(tmp_path: Path, no_network: None) -> None:
    pytest.importorskip("huggingface_hub")
    make_cache(tmp_path)
    with pytest.raises(TemplateSourceError) as info:
        from_pretrained("org/other", cache_dir=tmp_path)
    message = str(info.value)
    assert "not in the local Hugging Face cache" in message
    assert str(tmp_path) in message
    assert "never downloads" in message
    assert "download org/other tokenizer_config.json" in message
    with pytest.raises(TemplateSourceError, match="revision 'v2'.*--revision v2"):
        from_pretrained("org/name", cache_dir=tmp_path, revision="v2")


def test_hub_cache_records_missing_files(tmp_path: Path, no_network: None) -> None:
    pytest.importorskip("huggingface_hub")
    repo = tmp_path / "models--org--gguf-only"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT, encoding="utf-8")
    (repo / "snapshots" / COMMIT).mkdir(parents=True)
    for filename in ("tokenizer_config.json", "chat_template.jinja", "chat_template.json"):
        (repo / ".no_exist" / COMMIT).mkdir(parents=True, exist_ok=True)
        (repo / ".no_exist" / COMMIT / filename).touch()
    with pytest.raises(TemplateSourceError, match="records that the repository has no tokenizer_config.json"):
        from_pretrained("org/gguf-only", cache_dir=tmp_path)


def test_hub_invalid_model_id(tmp_path: Path) -> None:
    pytest.importorskip("huggingface_hub")
    with pytest.raises(TemplateSourceError, match="neither an existing path nor a valid Hugging Face model id"):
        from_pretrained("org/name--", cache_dir=tmp_path)
