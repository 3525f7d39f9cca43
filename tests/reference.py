"""The real chat templates, rendered independently of chatgrammar.

Wraps ``../shared/templates/render_reference.py`` (Hugging Face's renderer, or
jinja2 set up identically) and adds what ``apply_chat_template`` does around it
for an open final message (``continue_final_message``), using transformers' own
algorithm: the content gets a tag appended, the template renders it, and the
text is cut at the tag (and right-stripped when the template trimmed the tag's
trailing space).

An assistant message with tool calls and empty content is given to the template with
content None, as OpenAI writes it, where the grammar says its template takes it so
(``// calls-content: none``: DeepSeek V3 writes an answer's calls only when its content
``is none``); chatgrammar's Message holds "" there. Hugging Face gives the template the
messages as they are, None included, so the None is kept through render_reference's
jinja2 path, which drops None values.
"""

from __future__ import annotations

import json
import sys
from functools import cache
from pathlib import Path
from typing import Any

from conftest import EXTRA_TEMPLATES, TEMPLATES

from chatgrammar import Format, Message

sys.path.insert(0, str(TEMPLATES))
import render_reference

TAG = "CONTINUE_FINAL_MESSAGE_TAG "


class TemplateRaised(Exception):
    """The reference template raised (or could not render) this conversation."""


@cache
def shared_index() -> list[dict[str, Any]]:
    """The entries of ../shared/templates/index.json."""
    entries: list[dict[str, Any]] = json.loads((TEMPLATES / "index.json").read_text(encoding="utf-8"))
    return entries


@cache
def index() -> list[dict[str, Any]]:
    """Every reference template: ../shared/templates, then the ones kept in tests/templates
    (real templates of further families, each with its public source)."""
    extra: list[dict[str, Any]] = json.loads((EXTRA_TEMPLATES / "index.json").read_text(encoding="utf-8"))
    return shared_index() + extra


def entry_for(fmt: Format) -> dict[str, Any]:
    matches = [e for e in index() if e["template_file"] == fmt.reference]
    assert len(matches) == 1, f"{fmt.name}: reference {fmt.reference!r} is not exactly one index.json entry"
    return matches[0]


@cache
def _source(template_file: str) -> str:
    for folder in (TEMPLATES, EXTRA_TEMPLATES):
        path = folder / template_file
        if path.is_file():
            return path.read_text(encoding="utf-8")
    raise FileNotFoundError(template_file)


FIXED_DATE = render_reference.FIXED_NOW.date()


def render(
    fmt: Format,
    messages: list[Message],
    add_generation_prompt: bool = False,
    options: dict[str, Any] | None = None,
    tools: list[Any] | None = None,
) -> str:
    """What the format's real template renders, apply_chat_template style, on FIXED_DATE.

    ``options`` are passed to the template as its variables (enable_thinking...); reasoning_content is
    passed as the key the template reads (the grammar's ``reasoning-field``: gpt-oss reads ``thinking``).
    Where the template reads the tools from a system message's key (the grammar's ``tools-key``: Phi-4-mini),
    they are given as its users give them: ``json.dumps(tools)`` there, in the first message.
    """
    e = entry_for(fmt)
    kwargs = dict(
        bos_token=e["bos_token"],
        eos_token=e["eos_token"],
        now=render_reference.FIXED_NOW,
        **e.get("render_kwargs", {}),
        **(options or {}),
    )
    key = fmt._header.get("tools-key")
    if tools is not None and not key:
        kwargs["tools"] = tools
    none = fmt._header.get("calls-content") == "none"
    # The thinking, under the key the template reads it from (the grammar's reasoning-field).
    field = fmt._header.get("reasoning-field", "reasoning_content")
    dicts = [{field if k == "reasoning_content" else k: v for k, v in _as_given(m, none).items()} for m in messages]
    if tools and key and dicts and dicts[0]["role"] == "system":
        dicts[0][key] = json.dumps(tools)
    src = _source(e["template_file"])
    if messages and not messages[-1].complete:
        if not messages[-1].content:  # an open turn with nothing in it is the generation prompt
            return _render(src, dicts[:-1], add_generation_prompt=True, **kwargs)
        dicts[-1]["content"] += TAG
        out = _render(src, dicts, add_generation_prompt=False, **kwargs)
        if TAG.strip() not in out:
            raise TemplateRaised("continue_final_message: the template dropped the final message")
        loc = out.rindex(TAG.strip())
        return out[:loc] if out[loc : loc + len(TAG)] == TAG else out[:loc].rstrip()
    return _render(src, dicts, add_generation_prompt=add_generation_prompt, **kwargs)


def _as_given(m: Message, none: bool) -> dict[str, Any]:
    """A message as Hugging Face takes it (with ``none``: content None for an answer that only calls tools)."""
    d = {k: v for k, v in m.to_dict().items() if k != "complete"}
    if none and m.role == "assistant" and m.tool_calls and not m.content:
        d["content"] = None
    return d


_drop_none = render_reference._prepare


def _keeping_none_content(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """render_reference's preparation, with a content None kept (see the module docstring)."""
    prepared = _drop_none(messages)
    return [
        {**p, "content": None} if m.get("content", "") is None else p for m, p in zip(messages, prepared, strict=True)
    ]


render_reference._prepare = _keeping_none_content


def _render(src: str, messages: list[dict[str, Any]], **kwargs: Any) -> str:
    try:
        return render_reference.render(src, messages, **kwargs)
    except Exception as e:  # the template's own raise_exception, or Jinja failing on the input
        raise TemplateRaised(f"{type(e).__name__}: {e}") from e


def first_difference(a: str, b: str) -> str:
    i = next((k for k, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    return f"first difference at offset {i}: {a[i : i + 30]!r} vs {b[i : i + 30]!r}"


__all__ = ["Path", "TemplateRaised", "entry_for", "first_difference", "index", "render"]
