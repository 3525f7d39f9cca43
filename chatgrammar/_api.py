"""The module-level functions: thin wrappers that look the format up by name."""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Sequence
from typing import Any, Literal, overload

from ._format import Format
from ._message import Message, MessageLike
from ._registry import get_format
from ._results import Completion, Parsed, Span

__all__ = ["convert", "parse", "parse_completion", "render", "render_spans"]


def render(
    messages: Iterable[MessageLike],
    fmt: str | Format,
    *,
    add_generation_prompt: bool = False,
    on_unsafe: Literal["raise", "allow"] = "raise",
    date: datetime.date | None = None,
    tools: Sequence[Any] | None = None,
    **options: Any,
) -> str:
    r"""Render ``messages`` as the prompt text of format ``fmt`` (a name, alias or model id).

    See ``Format.render``: ``date`` is the date a template prints (default today),
    ``tools`` the tool definitions (JSON schemas), ``options`` the template's switches
    (``enable_thinking=False``...). Messages may carry ``reasoning_content`` and
    ``tool_calls``, as for Hugging Face's ``apply_chat_template``.

    >>> render([{"role": "user", "content": "Hi"}], "llama2")
    '<s>[INST] Hi [/INST]'
    """
    return get_format(fmt).render(
        messages, add_generation_prompt=add_generation_prompt, on_unsafe=on_unsafe, date=date, tools=tools, **options
    )


def render_spans(
    messages: Iterable[MessageLike],
    fmt: str | Format,
    *,
    add_generation_prompt: bool = False,
    on_unsafe: Literal["raise", "allow"] = "raise",
    date: datetime.date | None = None,
    tools: Sequence[Any] | None = None,
    **options: Any,
) -> tuple[str, list[Span | None]]:
    r"""Render, and give the ``Span`` of each message (see ``Format.render_spans``).

    >>> text, spans = render_spans([{"role": "user", "content": "Hi"}], "llama2")
    >>> text[spans[0].content_start:spans[0].content_end]
    'Hi'
    """
    return get_format(fmt).render_spans(
        messages, add_generation_prompt=add_generation_prompt, on_unsafe=on_unsafe, date=date, tools=tools, **options
    )


@overload
def parse(
    text: str, fmt: str | Format, *, strict: Literal[True] = ..., spans: Literal[False] = ..., **options: Any
) -> list[Message]: ...


@overload
def parse(text: str, fmt: str | Format, *, strict: bool = ..., spans: bool = ..., **options: Any) -> Parsed: ...


def parse(text: str, fmt: str | Format, *, strict: bool = True, spans: bool = False, **options: Any) -> list[Message]:
    r"""Read a prompt or transcript of format ``fmt`` back into messages.

    Without ``options`` any of the template's switches is accepted; with them, only that variant.
    ``strict=False`` reads truncated or damaged text and reports what it could not read in
    ``.diagnostics``; ``spans=True`` gives each message's position in ``.spans`` (see ``Format.parse``).

    >>> parse("<s>[INST] Hi [/INST] Hello! </s>", "llama2")
    [Message(role='user', content='Hi', complete=True), Message(role='assistant', content='Hello!', complete=True)]
    """
    return get_format(fmt).parse(text, strict=strict, spans=spans, **options)


def parse_completion(
    completion: str,
    fmt: str | Format,
    *,
    prompt: str | Iterable[MessageLike] | None = None,
    stopped: bool = False,
    **options: Any,
) -> Completion:
    r"""Read what a model wrote after a prompt (see ``Format.parse_completion``; ``stopped=True``:
    the model stopped, and the server left the stop string out).

    >>> parse_completion(" Sure! </s>", "llama2", prompt=[{"role": "user", "content": "Hi"}]).message
    Message(role='assistant', content='Sure!', complete=True)
    """
    return get_format(fmt).parse_completion(completion, prompt=prompt, stopped=stopped, **options)


def convert(
    text: str,
    source: str | Format,
    target: str | Format,
    *,
    on_unsafe: Literal["raise", "allow"] = "raise",
    date: datetime.date | None = None,
    **options: Any,
) -> str:
    r"""Rewrite a prompt or transcript of format ``source`` in format ``target``.

    The text is read strictly (``parse``), then rendered (``render``) with the tool definitions
    it lists; an open last turn (a generation prompt, a prefilled answer) stays open. What the
    target cannot write is refused, never dropped: a system message where it has no system
    role raises ``UnsupportedConversationError``; content holding its delimiters raises
    ``UnsafeContentError``. ``date`` and ``options`` go to the target's render.

    >>> convert("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", "chatml", "llama2")
    '<s>[INST] Hi [/INST]'
    """
    # A Parsed carries the tool definitions the text lists: render takes them from it.
    parsed = get_format(source).parse(text, strict=True, spans=False)
    return get_format(target).render(parsed, on_unsafe=on_unsafe, date=date, **options)
