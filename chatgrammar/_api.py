"""The module-level functions: thin wrappers that look the format up by name."""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from typing import Any, Literal

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
    date: datetime.date | None = None,
    **options: Any,
) -> str:
    r"""Render ``messages`` as the prompt text of format ``fmt`` (a name, alias or model id).

    See ``Format.render``: ``date`` is the date a template prints (default today),
    ``options`` the template's switches (``enable_thinking=False``...).

    >>> render([{"role": "user", "content": "Hi"}], "llama2")
    '<s>[INST] Hi [/INST]'
    """
    return get_format(fmt).render(
        messages, add_generation_prompt=add_generation_prompt, on_unsafe=on_unsafe, date=date, **options
    )


def parse(text: str, fmt: str | Format, **options: Any) -> list[Message]:
    r"""Read a prompt or transcript of format ``fmt`` back into messages.

    Without ``options`` any of the template's switches is accepted; with them, only that variant.

    >>> parse("<s>[INST] Hi [/INST] Hello! </s>", "llama2")
    [Message(role='user', content='Hi', complete=True), Message(role='assistant', content='Hello!', complete=True)]
    """
    return get_format(fmt).parse(text, **options)
