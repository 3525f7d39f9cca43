"""The module-level functions: thin wrappers that look the format up by name."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from ._format import Format
from ._message import Message, MessageLike
from ._registry import get_format

__all__ = ["parse", "render"]


def render(
    messages: Iterable[MessageLike],
    fmt: str | Format,
    *,
    add_generation_prompt: bool = False,
    on_unsafe: Literal["raise", "allow"] = "raise",
) -> str:
    r"""Render ``messages`` as the prompt text of format ``fmt`` (a name, alias or model id).

    >>> render([{"role": "user", "content": "Hi"}], "llama2")
    '<s>[INST] Hi [/INST]'
    """
    return get_format(fmt).render(messages, add_generation_prompt=add_generation_prompt, on_unsafe=on_unsafe)


def parse(text: str, fmt: str | Format) -> list[Message]:
    r"""Read a prompt or transcript of format ``fmt`` back into messages.

    >>> parse("<s>[INST] Hi [/INST] Hello! </s>", "llama2")
    [Message(role='user', content='Hi', complete=True), Message(role='assistant', content='Hello!', complete=True)]
    """
    return get_format(fmt).parse(text)
