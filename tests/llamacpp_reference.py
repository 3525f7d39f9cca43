"""llama-cpp-python's hand-written chat formats, as a reference renderer built at test time.

llama-cpp-python (MIT) keeps its ``chat_format`` layouts as Python functions in
llama_cpp/llama_chat_format.py. None of that code is kept in this repository: the
tests fetch the sdist of the release below with pip (cached in ``$CHATGRAMMAR_CACHE``,
else ``~/.cache/chatgrammar-tests``), read the module's source out of the tarball, and
execute only the pure formatting functions (the ``_format_*`` helpers,
``_get_system_message``, ``_map_roles`` and the ``format_*`` functions of the names
asked for) in a namespace of their own, since importing llama_cpp needs its compiled
library. When the sdist cannot be fetched (offline), ``Unavailable`` is raised and the
tests skip.
"""

from __future__ import annotations

import ast
import logging
import os
import subprocess
import sys
import tarfile
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VERSION = "0.3.35"  # the release of commit 3691546f1c9e0c1bf93323dff02230bd959cf562
MODULE = "llama_cpp/llama_chat_format.py"
_HELPERS = ("_get_system_message", "_map_roles")


class Unavailable(RuntimeError):
    """llama-cpp-python's source could not be fetched."""


@dataclass
class ChatFormatterResponse:
    """Stand-in for llama-cpp-python's class of the same name: what the formatters return."""

    prompt: str
    stop: str | list[str] | None = None
    stopping_criteria: Any = None
    added_special: bool = False


def cache_dir() -> Path:
    configured = os.environ.get("CHATGRAMMAR_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "chatgrammar-tests"


def _sdist() -> Path:
    folder = cache_dir()
    found = sorted(folder.glob(f"llama_cpp_python-{VERSION}.tar.gz"))
    if found:
        return found[0]
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        f"llama-cpp-python=={VERSION}",
        "--no-deps",
        "--no-binary",
        ":all:",
        "-d",
        str(folder),
    ]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise Unavailable(f"pip download llama-cpp-python=={VERSION} failed: {e}") from None
    found = sorted(folder.glob(f"llama_cpp_python-{VERSION}.tar.gz"))
    if done.returncode != 0 or not found:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise Unavailable(f"pip download llama-cpp-python=={VERSION} failed: {' / '.join(tail)}")
    return found[0]


def source() -> str:
    """The text of llama_cpp/llama_chat_format.py of that release (extracted once, then cached)."""
    cached = cache_dir() / f"llama_chat_format-{VERSION}.py"
    if cached.is_file():
        return cached.read_text(encoding="utf-8")
    sdist = _sdist()
    member = f"llama_cpp_python-{VERSION}/{MODULE}"
    try:
        with tarfile.open(sdist, "r:gz") as tar:
            f = tar.extractfile(member)
            if f is None:
                raise KeyError(member)
            text = f.read().decode("utf-8")
    except (OSError, KeyError, tarfile.TarError) as e:
        raise Unavailable(f"{sdist} holds no readable {member}: {e}") from None
    cached.write_text(text, encoding="utf-8")
    return text


def _registered_name(node: ast.FunctionDef) -> str | None:
    """The name in ``@register_chat_format("name")``, if the function is decorated so."""
    for d in node.decorator_list:
        if (
            isinstance(d, ast.Call)
            and isinstance(d.func, ast.Name)
            and d.func.id == "register_chat_format"
            and len(d.args) == 1
            and isinstance(d.args[0], ast.Constant)
            and isinstance(d.args[0].value, str)
        ):
            return d.args[0].value
    return None


class Reference:
    """The chat_format functions of llama-cpp-python, executed from its source."""

    def __init__(self, text: str, names: list[str]) -> None:
        tree = ast.parse(text)
        kept: list[ast.stmt] = []
        self.function_of: dict[str, str] = {}
        for node in tree.body:
            if not isinstance(node, ast.FunctionDef):
                continue
            registered = _registered_name(node)
            if registered in names:
                self.function_of[registered] = node.name
            elif not (node.name.startswith("_format_") or node.name in _HELPERS):
                continue
            node.decorator_list = []
            kept.append(node)
        missing = sorted(set(names) - set(self.function_of))
        if missing:
            raise Unavailable(f"llama-cpp-python {VERSION} registers no chat_format {missing}")
        module = ast.Module(body=kept, type_ignores=[])
        # Compiled as the module is, with postponed annotations (`annotations` is the __future__ feature).
        code = compile(module, f"<llama-cpp-python {VERSION} {MODULE}>", "exec", flags=annotations.compiler_flag)
        self.namespace: dict[str, Any] = {
            "ChatFormatterResponse": ChatFormatterResponse,
            "logger": logging.getLogger("llama-cpp-python reference"),
            **{name: getattr(typing, name) for name in ("Any", "Dict", "List", "Optional", "Tuple", "Union")},
        }
        exec(code, self.namespace)  # noqa: S102 - the formatting functions only, see the module docstring

    def format(self, name: str, messages: list[dict[str, Any]]) -> ChatFormatterResponse:
        """What ``chat_format=name`` makes of ``messages``."""
        response = self.namespace[self.function_of[name]](messages=messages)
        assert isinstance(response, ChatFormatterResponse)
        return response

    def stop(self, name: str) -> list[str]:
        """The stop strings the format gives (the same for every conversation)."""
        stop = self.format(name, [{"role": "user", "content": "x"}]).stop
        if stop is None:
            return []
        return [stop] if isinstance(stop, str) else list(stop)


_loaded: dict[tuple[str, ...], Reference | Unavailable] = {}


def load(names: list[str]) -> Reference:
    """The reference for these chat_format names; raises Unavailable when offline."""
    key = tuple(sorted(names))
    found = _loaded.get(key)
    if found is None:
        try:
            found = Reference(source(), list(key))
        except Unavailable as e:
            found = e
        _loaded[key] = found
    if isinstance(found, Unavailable):
        raise found
    return found
