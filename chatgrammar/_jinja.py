"""Rendering a Hugging Face chat template the way ``apply_chat_template`` does (jinja2, optional).

jinja2 is not a core dependency: ``pip install 'chatgrammar[templates]'``.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from functools import lru_cache
from typing import Any

__all__ = ["TemplateRaised", "compile_template"]


class TemplateRaised(Exception):
    """The template refused a conversation (``raise_exception``) or failed while rendering it."""


def _jinja() -> Any:
    try:
        import jinja2
        import jinja2.ext
        import jinja2.sandbox
    except ImportError:  # pragma: no cover - the extra is installed in the tests
        raise ImportError("reading a Jinja chat template needs jinja2: pip install 'chatgrammar[templates]'") from None
    return jinja2


@lru_cache(maxsize=64)
def _environment(now: datetime.datetime | None) -> Any:
    jinja2 = _jinja()

    class Generation(jinja2.ext.Extension):  # type: ignore[misc,name-defined]
        """``{% generation %}`` renders its body (transformers marks assistant tokens with it)."""

        tags = {"generation"}

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller: Callable[[], str]) -> str:
            return caller()

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(
        x: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None, sort_keys: bool = False
    ) -> str:
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt: str) -> str:
        return (now or datetime.datetime.now()).strftime(fmt)

    env = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[Generation, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def compile_template(
    source: str, *, bos_token: str = "", eos_token: str = "", now: datetime.datetime | None = None, **kwargs: Any
) -> Callable[..., str]:
    """A function ``render(messages, add_generation_prompt=False, **more)`` for this template.

    It renders as Hugging Face does (sandboxed, ``trim_blocks``, ``lstrip_blocks``, ``tojson``
    without HTML escaping, ``raise_exception``, ``strftime_now`` pinned to ``now`` when given);
    anything the template raises comes out as :class:`TemplateRaised`.
    """
    jinja2 = _jinja()
    try:
        template = _environment(now).from_string(source)
    except jinja2.TemplateSyntaxError as e:
        raise TemplateRaised(f"the template is not valid Jinja: {e.message} (line {e.lineno})") from None

    def render(messages: list[dict[str, Any]], add_generation_prompt: bool = False, **more: Any) -> str:
        try:
            text: str = template.render(
                messages=messages,
                add_generation_prompt=add_generation_prompt,
                bos_token=bos_token,
                eos_token=eos_token,
                **{"tools": None, "documents": None, **kwargs, **more},
            )
        except Exception as e:  # a template can fail in any way: each is its refusal
            raise TemplateRaised(str(e) or type(e).__name__) from None
        return text

    return render
