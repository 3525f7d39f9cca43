"""The registry of formats: finds the grammar files, indexes names, aliases and model ids.

Only the headers are read when the registry loads; a format's grammar is
compiled the first time it is used.
"""

from __future__ import annotations

import difflib
import threading
from pathlib import Path

from ._errors import GrammarError, UnknownFormatError
from ._format import Format

__all__ = ["formats", "get_format", "grammar_dir", "normalize_name", "register", "unregister"]

_lock = threading.Lock()
_by_name: dict[str, Format] = {}  # normalized name, alias or model id -> format
_canonical: dict[str, Format] = {}
_seen: dict[str, Format] = {}  # names exactly as callers spelled them (render/parse look up on every call)


def grammar_dir() -> Path:
    """Where the built-in grammars are: inside the installed package, or in a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "grammars", here.parent / "grammars"):
        if candidate.is_dir():
            return candidate
    raise RuntimeError(f"chatgrammar's grammars/ folder is missing (looked beside {here})")


def normalize_name(name: str) -> str:
    """The form names are compared in: case, surrounding space and ``_`` vs ``-`` do not matter.

    >>> normalize_name(" Llama_2 ")
    'llama-2'
    """
    return "-".join(name.strip().lower().replace("_", "-").split())


def _load() -> dict[str, Format]:
    if _canonical:
        return _by_name
    with _lock:
        if _canonical:
            return _by_name
        directory = grammar_dir()
        found: dict[str, Format] = {}
        index: dict[str, Format] = {}
        for path in sorted(directory.glob("*.lark")):
            if path.name.startswith("_"):
                continue  # shared fragments
            fmt = Format(path.read_text(encoding="utf-8"), origin=str(path), import_paths=[str(directory)])
            if fmt.name in found:
                raise GrammarError(f"format name {fmt.name!r} is used by two grammars", source=str(path))
            found[fmt.name] = fmt
            for key in [fmt.name, *fmt.aliases, *fmt.models]:
                norm = normalize_name(key)
                other = index.get(norm)
                if other is not None and other is not fmt:
                    raise GrammarError(f"{key!r} names both {other.name!r} and {fmt.name!r}", source=str(path))
                index[norm] = fmt
        # A model id also answers without its organisation ("Llama-2-7b-chat-hf"), where
        # that is not ambiguous and names nothing else.
        short: dict[str, set[str]] = {}
        for fmt in found.values():
            for model in fmt.models:
                if "/" in model:
                    short.setdefault(normalize_name(model.rsplit("/", 1)[1]), set()).add(fmt.name)
        for key, names in short.items():
            if len(names) == 1 and key not in index:
                index[key] = found[next(iter(names))]
        _by_name.update(index)
        _canonical.update(found)
    return _by_name


def formats() -> list[str]:
    """The canonical names of the registered formats, sorted.

    >>> "llama2" in formats()
    True
    """
    _load()
    return sorted(_canonical)


def get_format(name: str | Format) -> Format:
    """The format with this name, alias or model id (with or without its organisation).

    >>> get_format("Llama-2").name
    'llama2'
    >>> get_format("meta-llama/Llama-2-7b-chat-hf").name, get_format("llama-2-7b-chat-hf").name
    ('llama2', 'llama2')

    An unknown name raises UnknownFormatError, suggesting the closest names;
    there is never a fallback to a default format.
    """
    fmt = _seen.get(name)  # type: ignore[arg-type]
    if fmt is not None:
        return fmt
    if isinstance(name, Format):
        return name
    if not isinstance(name, str):
        raise TypeError(f"a format is named by a str, not {type(name).__name__}")
    index = _load()
    fmt = index.get(normalize_name(name))
    if fmt is not None and len(_seen) < 1024:
        _seen[name] = fmt
    if fmt is None:
        close = difflib.get_close_matches(normalize_name(name), list(index), n=6, cutoff=0.6)
        suggestions = list(dict.fromkeys(index[c].name for c in close))[:3]
        raise UnknownFormatError(name, suggestions)
    return fmt


def register(fmt: Format, *, replace: bool = False) -> Format:
    """Add a format to the registry: ``get_format``, ``render`` and ``parse`` find it by its name,
    aliases and model ids from then on.

    A name, alias or model id already taken by another format raises :class:`GrammarError`
    naming both, unless ``replace=True``, which first removes the format that had that name.
    Returns the format.
    """
    if not isinstance(fmt, Format):
        raise TypeError(f"register takes a Format (see load_format, Format.from_spec), not {type(fmt).__name__}")
    fmt._c  # noqa: B018 - compile first: a format that cannot compile is never registered
    _load()
    with _lock:
        if replace and fmt.name in _canonical and _canonical[fmt.name] is not fmt:
            _remove(_canonical[fmt.name])
        keys = [normalize_name(k) for k in [fmt.name, *fmt.aliases, *fmt.models]]
        for key in keys:
            other = _by_name.get(key)
            if other is not None and other is not fmt and _canonical.get(other.name) is other:
                raise GrammarError(
                    f"{key!r} already names the format {other.name!r}: rename yours, or register(..., replace=True)",
                    source=fmt.origin,
                )
        for key in keys:
            _by_name[key] = fmt
        _canonical[fmt.name] = fmt
        _seen.clear()
    return fmt


def _remove(fmt: Format) -> None:
    for key, value in list(_by_name.items()):
        if value is fmt:
            del _by_name[key]
    _canonical.pop(fmt.name, None)
    _seen.clear()


def unregister(name: str | Format) -> None:
    """Remove a format from the registry (a built-in comes back with ``register(..., replace=True)``)."""
    fmt = get_format(name)
    with _lock:
        _remove(fmt)
