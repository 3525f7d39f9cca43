"""Where a model's chat template comes from: its ``tokenizer_config.json``, a GGUF file, the Hugging Face cache.

Each reader returns a :class:`TemplateSource`: the Jinja text of the template, the BOS and EOS
tokens it refers to, and the texts of the tokenizer's special tokens. Nothing here renders a
template nor reaches the network: ``gguf`` and ``huggingface_hub`` are optional, imported only
by the readers that need them (``pip install 'chatgrammar[gguf]'``, ``'chatgrammar[hub]'``).

>>> source = from_tokenizer_config(
...     {"chat_template": "{{ bos_token }}{{ messages[0]['content'] }}", "bos_token": "<s>",
...      "eos_token": {"content": "</s>", "special": True}, "unk_token": None}
... )
>>> source.bos_token, source.eos_token, source.special_tokens
('<s>', '</s>', ('<s>', '</s>'))
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ._errors import ChatGrammarError

if TYPE_CHECKING:
    from gguf import ReaderField

__all__ = ["TemplateSource", "TemplateSourceError", "from_gguf", "from_pretrained", "from_tokenizer_config"]

CONFIG_FILE = "tokenizer_config.json"
TEMPLATE_FILE = "chat_template.jinja"  # transformers >= 4.47 saves the default template here
TEMPLATE_DIR = "additional_chat_templates"  # ... and each named one as <name>.jinja here
LEGACY_TEMPLATE_FILE = "chat_template.json"  # processors (multimodal models) of older transformers
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"  # older tokenizers keep bos/eos only here

# The special tokens a tokenizer names, in the order transformers lists them.
_NAMED_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
# The same in GGUF metadata (sic: llama.cpp spells "seperator").
_GGUF_NAMED_IDS = tuple(
    f"tokenizer.ggml.{key}_token_id" for key in ("bos", "eos", "unknown", "seperator", "padding", "eot", "eom")
)
_GGUF_TEMPLATE = "tokenizer.chat_template"
_GGUF_CONTROL = 3  # gguf.TokenType.CONTROL: the tokens a tokenizer treats as special

# What a Hugging Face model id looks like ("org/name" or "name"); anything else is taken for a path.
_MODEL_ID = re.compile(r"[A-Za-z0-9][\w.-]*(?:/[A-Za-z0-9][\w.-]*)?")


class TemplateSourceError(ChatGrammarError):
    """No chat template could be read: a missing or malformed file, no template in it, an unknown
    template name, a model that is not in the local cache. ``source`` is the file, directory or
    model id at fault when there is one."""

    def __init__(self, message: str, *, source: str | None = None) -> None:
        self.source = source
        super().__init__(message)


@dataclass(frozen=True)
class TemplateSource:
    """A model's chat template and the tokens it is rendered with.

    ``special_tokens`` holds the texts of the tokens the tokenizer marks special, each once,
    the named ones first (BOS, EOS, UNK, ...), then the extra ones, then the rest by token id.
    ``origin`` says where the template was read (a path, ``"path:chat_template[tool_use]"``,
    ``"model.gguf:tokenizer.chat_template"``), ``name`` the model id or file stem when known.
    ``add_bos_token`` is the tokenizer's own setting when it records one, for information:
    whether a tokenizer adds the BOS itself does not change ``bos_token``.
    """

    template: str
    bos_token: str | None
    eos_token: str | None
    special_tokens: tuple[str, ...]
    origin: str
    name: str | None = None
    add_bos_token: bool | None = None


# --- tokenizer_config.json and the files beside it -------------------------------------------------


def from_tokenizer_config(
    path_or_dict: str | os.PathLike[str] | Mapping[str, Any], *, template_name: str | None = None
) -> TemplateSource:
    """The template of a ``tokenizer_config.json``, given as a path (or its directory) or as its parsed dict.

    As transformers does, the template files beside the config come first: ``chat_template.jinja``
    (the ``"default"`` template) and ``additional_chat_templates/<name>.jinja``, when there are any,
    replace the config's ``chat_template``; ``chat_template.json`` is read when neither has one.
    ``template_name`` picks one of several named templates (``"default"`` when not given). A dict
    has no files beside it: only its own ``chat_template`` counts.
    """
    if isinstance(path_or_dict, Mapping):
        return _build(
            dict(path_or_dict),
            config_origin="the tokenizer config",
            directory=None,
            template_name=template_name,
            name=None,
        )
    path = Path(path_or_dict).expanduser()
    if path.is_dir():
        return _from_directory(path, template_name=template_name, name=path.resolve().name or None)
    config = _read_json(path)
    directory = path.parent
    return _build(
        config,
        config_origin=str(path),
        directory=directory,
        template_name=template_name,
        name=directory.resolve().name or None,
    )


def _from_directory(directory: Path, *, template_name: str | None, name: str | None) -> TemplateSource:
    config_path = directory / CONFIG_FILE
    config = _read_json(config_path) if config_path.is_file() else None
    if config is None and not any(
        (directory / f).exists() for f in (TEMPLATE_FILE, TEMPLATE_DIR, LEGACY_TEMPLATE_FILE)
    ):
        raise TemplateSourceError(
            f"{directory} holds no {CONFIG_FILE}, {TEMPLATE_FILE} nor {LEGACY_TEMPLATE_FILE}: not a model directory",
            source=str(directory),
        )
    return _build(
        config or {}, config_origin=str(config_path), directory=directory, template_name=template_name, name=name
    )


def _build(
    config: dict[str, Any],
    *,
    config_origin: str,
    directory: Path | None,
    template_name: str | None,
    name: str | None,
) -> TemplateSource:
    templates = _collect_templates(config, config_origin, directory)
    template, origin = _choose(templates, template_name, config_origin)
    if directory is not None:
        special_map = directory / SPECIAL_TOKENS_MAP_FILE
        if special_map.is_file():
            # Older tokenizers keep some special tokens only there; the config's own values win.
            kept = (*_NAMED_TOKENS, "additional_special_tokens")
            config = {**{k: v for k, v in _read_json(special_map).items() if k in kept}, **config}
    add_bos = config.get("add_bos_token")
    return TemplateSource(
        template=template,
        bos_token=_token_text(config.get("bos_token")),
        eos_token=_token_text(config.get("eos_token")),
        special_tokens=_config_special_tokens(config),
        origin=origin,
        name=name,
        add_bos_token=add_bos if isinstance(add_bos, bool) else None,
    )


def _collect_templates(
    config: Mapping[str, Any], config_origin: str, directory: Path | None
) -> dict[str, tuple[str, str]] | None:
    """Template name -> (text, origin), from the first place that has any; None when none has."""
    if directory is not None:
        # Read as transformers reads them: text mode, so "\r\n" becomes "\n".
        found: dict[str, tuple[str, str]] = {}
        default = directory / TEMPLATE_FILE
        if default.is_file():
            found["default"] = (_read_text(default), str(default))
        extra = directory / TEMPLATE_DIR
        if extra.is_dir():
            for path in sorted(extra.glob("*.jinja")):
                found[path.name.removesuffix(".jinja")] = (_read_text(path), str(path))
        if found:
            return found
    in_config = _templates_of(config.get("chat_template"), config_origin)
    if in_config is not None:
        return in_config
    if directory is not None:
        legacy = directory / LEGACY_TEMPLATE_FILE
        if legacy.is_file():
            return _templates_of(_read_json(legacy).get("chat_template"), str(legacy))
    return None


def _templates_of(value: Any, origin: str) -> dict[str, tuple[str, str]] | None:
    """The templates of a ``chat_template`` entry: a string, a list of ``{"name", "template"}`` or a dict."""
    if value is None:
        return None
    if isinstance(value, str):
        return {"default": (value, origin)}
    if isinstance(value, Mapping):
        value = [{"name": k, "template": v} for k, v in value.items()]
    if isinstance(value, list):
        found: dict[str, tuple[str, str]] = {}
        for entry in value:
            if not (
                isinstance(entry, Mapping)
                and isinstance(entry.get("name"), str)
                and isinstance(entry.get("template"), str)
            ):
                raise TemplateSourceError(
                    f"{origin}: chat_template lists an entry that is not a {{'name': ..., 'template': ...}} of strings",
                    source=origin,
                )
            found[entry["name"]] = (entry["template"], f"{origin}:chat_template[{entry['name']}]")
        return found or None
    raise TemplateSourceError(
        f"{origin}: chat_template is a {type(value).__name__}, not a string nor a list of named templates",
        source=origin,
    )


def _choose(templates: Mapping[str, tuple[str, str]] | None, template_name: str | None, where: str) -> tuple[str, str]:
    if not templates:
        raise TemplateSourceError(
            f"{where} has no chat_template, and no {TEMPLATE_FILE}, {TEMPLATE_DIR}/ nor {LEGACY_TEMPLATE_FILE} "
            "was found beside it: the model ships no chat template (is it a base model?)",
            source=where,
        )
    return _pick(templates, template_name, where)


def _pick(templates: Mapping[str, tuple[str, str]], template_name: str | None, where: str) -> tuple[str, str]:
    wanted = "default" if template_name is None else template_name
    if wanted in templates:
        return templates[wanted]
    names = ", ".join(repr(n) for n in templates)
    if template_name is None:
        raise TemplateSourceError(
            f"{where} has several chat templates and none named 'default': pass template_name, one of {names}",
            source=where,
        )
    raise TemplateSourceError(f"{where} has no chat template named {template_name!r}: it has {names}", source=where)


def _token_text(value: Any) -> str | None:
    """A token given as a string or as an AddedToken dict (``{"content": ..., ...}``); None otherwise."""
    if isinstance(value, Mapping):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _config_special_tokens(config: Mapping[str, Any]) -> tuple[str, ...]:
    found: dict[str, None] = {}  # an ordered set

    def add(value: Any) -> None:
        text = _token_text(value)
        if text:
            found[text] = None

    for key in _NAMED_TOKENS:
        add(config.get(key))
    for key in ("additional_special_tokens", "extra_special_tokens"):  # the latter is transformers 5's name
        extra = config.get(key)
        if isinstance(extra, Mapping):
            extra = list(extra.values())
        if isinstance(extra, list):
            for token in extra:
                add(token)
    decoder = config.get("added_tokens_decoder")
    if isinstance(decoder, Mapping):
        for _, token in sorted(decoder.items(), key=lambda item: _id_order(item[0])):
            if isinstance(token, Mapping) and token.get("special") is True:
                add(token)
    return tuple(found)


def _id_order(key: Any) -> tuple[int, str]:
    try:
        return int(key), ""
    except (TypeError, ValueError):
        return 1 << 62, str(key)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise TemplateSourceError(f"cannot read {path}: {e}", source=str(path)) from e


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise TemplateSourceError(f"no such file: {path}", source=str(path))
    text = _read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise TemplateSourceError(f"{path} is not valid JSON: {e}", source=str(path)) from e
    if not isinstance(data, dict):
        raise TemplateSourceError(f"{path} holds a JSON {type(data).__name__}, not an object", source=str(path))
    return data


# --- GGUF ------------------------------------------------------------------------------------------


def from_gguf(path: str | os.PathLike[str], *, template_name: str | None = None) -> TemplateSource:
    """The template of a GGUF model file: ``tokenizer.chat_template`` (or ``tokenizer.chat_template.<name>``
    for ``template_name``), its BOS and EOS tokens and its CONTROL tokens. Needs the ``gguf`` package."""
    gguf = _import_gguf()
    file = Path(path).expanduser()
    if not file.is_file():
        raise TemplateSourceError(f"no such GGUF file: {file}", source=str(file))
    try:
        reader = gguf.GGUFReader(file)
    except Exception as e:  # the reader reports a damaged file by whatever numpy raises
        raise TemplateSourceError(f"{file} is not a readable GGUF file: {e}", source=str(file)) from e
    fields: Mapping[str, ReaderField] = reader.fields
    where = str(file)

    templates: dict[str, tuple[str, str]] = {}
    if _GGUF_TEMPLATE in fields:
        templates["default"] = (_gguf_template(fields, _GGUF_TEMPLATE, where), f"{where}:{_GGUF_TEMPLATE}")
    for key in fields:
        if key.startswith(_GGUF_TEMPLATE + "."):
            templates[key.removeprefix(_GGUF_TEMPLATE + ".")] = (_gguf_template(fields, key, where), f"{where}:{key}")
    if not templates:
        raise TemplateSourceError(
            f"{where} has no {_GGUF_TEMPLATE} in its metadata: the model ships no chat template", source=where
        )
    template, origin = _pick(templates, template_name, where)

    tokens = fields.get("tokenizer.ggml.tokens")
    if tokens is not None and list(tokens.types) != [_ARRAY, _STRING]:
        tokens = None  # not a token list: ignore it rather than misread it

    def token(key: str) -> str | None:
        field = fields.get(key)
        index = _gguf_scalar(field) if field is not None else None
        if tokens is None or not isinstance(index, int) or not 0 <= index < len(tokens.data):
            return None
        return _gguf_str(tokens, index)

    special: dict[str, None] = {}
    for key in _GGUF_NAMED_IDS:
        text = token(key)
        if text:
            special[text] = None
    types = fields.get("tokenizer.ggml.token_type")
    if tokens is not None and types is not None:
        for index, kind in enumerate(_gguf_ints(types)):
            if kind == _GGUF_CONTROL and index < len(tokens.data):
                text = _gguf_str(tokens, index)
                if text:
                    special[text] = None
    add_bos_field = fields.get("tokenizer.ggml.add_bos_token")
    add_bos = _gguf_scalar(add_bos_field) if add_bos_field is not None else None
    return TemplateSource(
        template=template,
        bos_token=token("tokenizer.ggml.bos_token_id"),
        eos_token=token("tokenizer.ggml.eos_token_id"),
        special_tokens=tuple(special),
        origin=origin,
        name=file.stem,
        add_bos_token=add_bos if isinstance(add_bos, bool) else None,
    )


# GGUFReader keeps each field as raw numpy parts: ``types`` the value type (an ARRAY's element type
# after it), ``data`` the indices of the parts holding the values (for a string, its bytes; for an
# array, one part per element). ``ReaderField.contents()`` decodes them too, but only in recent gguf
# releases and strictly as UTF-8, so the fields are read here from the parts, which every release has.

_STRING, _ARRAY, _BOOL = 8, 9, 7  # gguf.GGUFValueType


def _gguf_template(fields: Mapping[str, ReaderField], key: str, where: str) -> str:
    field = fields[key]
    if list(field.types) != [_STRING]:
        raise TemplateSourceError(f"{where}: {key} is not a string", source=where)
    try:
        return bytes(field.parts[field.data[0]]).decode("utf-8")
    except UnicodeDecodeError as e:
        raise TemplateSourceError(f"{where}: {key} is not UTF-8 text: {e}", source=where) from e


def _gguf_scalar(field: ReaderField) -> int | float | bool | str | None:
    """The value of a scalar field (None for an array)."""
    if not field.types or field.types[0] == _ARRAY or not field.data:
        return None
    part = field.parts[field.data[0]]
    if field.types[0] == _STRING:
        return bytes(part).decode("utf-8", errors="replace")
    value = part.tolist()[0]
    if field.types[0] == _BOOL:
        return bool(value)
    return value if isinstance(value, int | float) else None


def _gguf_str(field: ReaderField, index: int) -> str:
    """Element ``index`` of an array of strings (undecodable bytes replaced)."""
    return bytes(field.parts[field.data[index]]).decode("utf-8", errors="replace")


def _gguf_ints(field: ReaderField) -> list[int]:
    """The elements of an array of integers (empty for any other field)."""
    if len(field.types) != 2 or field.types[0] != _ARRAY or field.types[1] in (_STRING, _ARRAY):
        return []
    return [int(field.parts[i][0]) for i in field.data]


def _import_gguf() -> ModuleType:
    try:
        import gguf
    except ImportError as e:
        raise ImportError(
            "reading GGUF files needs the gguf package: pip install 'chatgrammar[gguf]'", name=e.name
        ) from e
    return gguf


# --- a directory, a file or a Hugging Face model id ------------------------------------------------


def from_pretrained(
    model_id_or_dir: str | os.PathLike[str],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    revision: str | None = None,
    template_name: str | None = None,
) -> TemplateSource:
    """The template of a model given as a directory, a ``.gguf`` or ``tokenizer_config.json`` file,
    or a Hugging Face model id.

    A model id is looked up in the local Hugging Face cache only (``cache_dir``, else the
    ``HF_HUB_CACHE`` default), at ``revision`` (a branch, tag or commit; ``"main"`` when not given):
    nothing is ever downloaded. ``revision`` and ``cache_dir`` do not apply to local paths. Model
    ids need the ``huggingface_hub`` package, ``.gguf`` files the ``gguf`` package.
    """
    text = os.fspath(model_id_or_dir)
    path = Path(text).expanduser()
    if path.is_dir():
        return _from_directory(path, template_name=template_name, name=path.resolve().name or None)
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return from_gguf(path, template_name=template_name)
        if path.suffix.lower() == ".json":
            return from_tokenizer_config(path, template_name=template_name)
        raise TemplateSourceError(
            f"{path} is neither a .gguf file, a {CONFIG_FILE} nor a model directory", source=str(path)
        )
    if not _MODEL_ID.fullmatch(text) or path.suffix.lower() in (".gguf", ".json", ".jinja"):
        raise TemplateSourceError(f"no such file or directory: {path}", source=text)
    return _from_hub_cache(text, cache_dir=cache_dir, revision=revision, template_name=template_name)


def _from_hub_cache(
    model_id: str, *, cache_dir: str | os.PathLike[str] | None, revision: str | None, template_name: str | None
) -> TemplateSource:
    hub = _import_hub()
    cache = os.fspath(cache_dir) if cache_dir is not None else str(hub.constants.HF_HUB_CACHE)
    found: Path | None = None
    absent: list[str] = []  # files the cache records as missing from the repository
    for filename in (CONFIG_FILE, TEMPLATE_FILE, LEGACY_TEMPLATE_FILE):
        try:
            cached = hub.try_to_load_from_cache(model_id, filename, cache_dir=cache, revision=revision)
        except ValueError as e:  # huggingface_hub's HFValidationError: not a valid repository id
            raise TemplateSourceError(
                f"{model_id!r} is neither an existing path nor a valid Hugging Face model id ({e})", source=model_id
            ) from e
        if isinstance(cached, str):
            found = Path(cached)
            break
        if cached is not None:
            absent.append(filename)
    at = f" at revision {revision!r}" if revision else ""
    if found is None:
        if absent:
            detail = f"the cache records that the repository has no {' nor '.join(absent)}{at}"
        else:
            detail = f"it is not in the local Hugging Face cache ({cache}){at}, nor is there a local path of that name"
        flags = (f" --revision {revision}" if revision else "") + (
            f" --cache-dir {cache}" if cache_dir is not None else ""
        )
        raise TemplateSourceError(
            f"no chat template found for {model_id!r}: {detail}. chatgrammar looks only in the local cache and never "
            f"downloads: fetch the files first with `hf download {model_id} {CONFIG_FILE}{flags}` (`huggingface-cli "
            f"download ...` before huggingface_hub 1.0), adding {TEMPLATE_FILE} when the repository has one",
            source=model_id,
        )
    # The cached files of one revision all lie in its snapshot directory, read like a local model's.
    return _from_directory(found.parent, template_name=template_name, name=model_id)


def _import_hub() -> ModuleType:
    try:
        import huggingface_hub
        import huggingface_hub.constants
    except ImportError as e:
        raise ImportError(
            "reading the Hugging Face cache needs the huggingface_hub package: pip install 'chatgrammar[hub]'",
            name=e.name,
        ) from e
    return huggingface_hub
