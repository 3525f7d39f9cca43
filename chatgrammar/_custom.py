"""Bring your own format: user grammars, declarative specs, and the registry's door for them."""

from __future__ import annotations

import json
import os
import re
import tomllib
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._errors import GrammarError, GrammarWarning, RenderError
from ._format import Format
from ._registry import grammar_dir, register
from ._spec import _tokens_in, spec_source

__all__ = ["format_from_spec", "from_gguf", "from_pretrained", "from_tokenizer_config", "load_format", "register"]


def _compiled(fmt: Format) -> Format:
    """Compile now, so that a mistake is reported where the format is loaded, not where it is used."""
    fmt._c  # noqa: B018 - compiling is the point
    return fmt


def load_format(path_or_source: str | os.PathLike[str], *, register_it: bool = False) -> Format:
    """A format from a ``.lark`` grammar file, or from grammar source text, in the built-ins' form.

    ``%import .fragments.…`` finds the built-in fragments; a file's own folder is searched
    first, so a user's grammars can share fragments of their own. The grammar is compiled
    at once: mistakes raise :class:`GrammarError` with the grammar's line and column.

    >>> import chatgrammar as cg
    >>> fmt = cg.load_format('''// name: my-chat
    ... // roles: user, assistant
    ... // tokens: _U _A _END
    ... // stop: _END
    ... %declare TEXT
    ... start: (user assistant)* [user [generation]]
    ... user: _U [TEXT] _END
    ... assistant: _A [TEXT] _END
    ... generation: assistant
    ... _U: "<u>"
    ... _A: "<a>"
    ... _END: "<end>"
    ... ''')
    >>> fmt.render([{"role": "user", "content": "Hi"}], add_generation_prompt=True)
    '<u>Hi<end><a>'
    >>> fmt.stop
    ['<end>']

    ``register_it=True`` also adds it to the registry (:func:`register`).
    """
    paths = [str(grammar_dir())]
    text = os.fspath(path_or_source)
    if isinstance(path_or_source, os.PathLike) or ("\n" not in text and text.endswith(".lark")):
        path = Path(text)
        if not path.is_file():
            raise FileNotFoundError(f"no grammar file at {text!r}")
        source, origin = path.read_text(encoding="utf-8"), str(path)
        paths.insert(0, str(path.resolve().parent))
    else:
        source, origin = text, "<grammar>"
    fmt = _compiled(Format(source, origin=origin, import_paths=paths))
    _check_token_literals(fmt, source, origin)
    if register_it:
        register(fmt)
    return fmt


_TERMINAL_LINE = re.compile(r"^_?[A-Z][A-Z0-9_]*(?:\.-?\d+)?[ \t]*:(?P<body>.*)$", re.M)
_STRING = re.compile(r'"((?:[^"\\\n]|\\.)*)"')


def _check_token_literals(fmt: Format, source: str, origin: str) -> None:
    """Warn of a literal shaped like a special token (``<|im_end|>``, ``[INST]``) that content may
    still hold: if it is one of the model's special tokens, a message holding it would forge a
    turn once tokenized. Declared in ``// tokens:``, it is refused in content."""
    roles = fmt.roles or ["user", "assistant", "system"]
    for m in _TERMINAL_LINE.finditer(source):
        for lit in _STRING.finditer(m.group("body")):
            try:
                text = json.loads(f'"{lit.group(1)}"')
            except json.JSONDecodeError:
                continue
            for piece in _tokens_in([text]):
                if piece in fmt.tokens or not _content_can_hold(fmt, roles, piece):
                    continue
                warnings.warn(
                    GrammarWarning(
                        f"literal {piece!r} can also occur inside content: if it is a special token of the "
                        "model, declare its terminal in `// tokens:` so that content holding it is refused "
                        "(it would forge a turn once tokenized)",
                        source=origin,
                        line=source.count("\n", 0, m.start()) + 1,
                        column=m.start("body") + lit.start() - m.start() + 1,
                    ),
                    stacklevel=3,
                )


def _content_can_hold(fmt: Format, roles: list[str], piece: str) -> bool:
    for role in roles:
        try:
            fmt.render([{"role": role, "content": f"a {piece} b"}])
        except RenderError:  # refused as unsafe, or the role cannot stand alone: no proof either way
            continue
        return True
    return False


def _read_spec(spec: Mapping[str, Any] | str | os.PathLike[str]) -> Mapping[str, Any]:
    if isinstance(spec, Mapping):
        return spec
    text = os.fspath(spec)
    path = Path(text)
    if "\n" not in text and path.suffix in (".toml", ".json") and path.is_file():
        text, suffix = path.read_text(encoding="utf-8"), path.suffix
    else:
        suffix = ".json" if text.lstrip().startswith("{") else ".toml"
    try:
        loaded: Any = json.loads(text) if suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        raise GrammarError(f"the spec is not valid {suffix[1:].upper()}: {e}", source=str(spec)[:80]) from None
    if not isinstance(loaded, Mapping):
        raise GrammarError("a spec is a mapping (a JSON object or a TOML table)")
    return loaded


def format_from_spec(spec: Mapping[str, Any] | str | os.PathLike[str]) -> Format:
    """The format a declarative spec describes (``Format.from_spec``; see :mod:`chatgrammar._spec`)."""
    mapping = _read_spec(spec)
    source = spec_source(mapping)
    try:
        return _compiled(
            Format(source, origin=f"<spec {mapping.get('name', 'custom')}>", import_paths=[str(grammar_dir())])
        )
    except GrammarError as e:
        raise GrammarError(
            f"the spec does not make a format chatgrammar can read back: {getattr(e, 'message', type(e).__name__)}\n"
            f"the grammar it compiled to:\n{source}"
        ) from None


def _from_source(src: Any, name: str | None, conversations: int) -> Format:
    from ._derive import from_template

    return from_template(
        src.template,
        bos_token=src.bos_token or "",
        eos_token=src.eos_token or "",
        name=name or _name_of(src.name),
        special_tokens=src.special_tokens,
        conversations=conversations,
    )


def _name_of(model: str | None) -> str:
    if not model:
        return "custom"
    return model.rsplit("/", 1)[-1].lower()


def from_tokenizer_config(
    path_or_config: str | os.PathLike[str] | Mapping[str, Any],
    *,
    template_name: str | None = None,
    name: str | None = None,
    conversations: int = 300,
) -> Format:
    """A format derived from a ``tokenizer_config.json`` (a file, its folder, or the dict).

    Its ``chat_template`` (or a ``chat_template.jinja`` beside it, which wins as in
    transformers), BOS and EOS tokens and special tokens go to :func:`from_template`.
    """
    from ._sources import from_tokenizer_config as read

    return _from_source(read(path_or_config, template_name=template_name), name, conversations)


def from_gguf(
    path: str | os.PathLike[str], *, template_name: str | None = None, name: str | None = None, conversations: int = 300
) -> Format:
    """A format derived from a GGUF file's ``tokenizer.chat_template`` and its BOS/EOS and control tokens.

    Needs the ``gguf`` package: ``pip install 'chatgrammar[gguf]'``.
    """
    from ._sources import from_gguf as read

    return _from_source(read(path, template_name=template_name), name, conversations)


def from_pretrained(
    model_id_or_dir: str,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    revision: str | None = None,
    template_name: str | None = None,
    name: str | None = None,
    conversations: int = 300,
) -> Format:
    """A format derived from a model's files: a folder, a ``.gguf`` or ``tokenizer_config.json``
    file, or a Hugging Face model id read from the **local** cache only (nothing is downloaded).

    A model id needs ``pip install 'chatgrammar[hub]'``.
    """
    from ._sources import from_pretrained as read

    src = read(model_id_or_dir, cache_dir=cache_dir, revision=revision, template_name=template_name)
    return _from_source(src, name, conversations)
