"""Exporting a format: a Hugging Face chat template (Jinja) and the grammar's source.

``to_jinja`` finds what the format writes around each role's content by rendering it
(the same probing ``from_template`` does on a template), writes that as a chat template,
and checks the template against the format on generated conversations before returning
it: what it returns renders byte-identically under Hugging Face's Jinja settings, or it
raises and says which probe diverged.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

from ._derive import ROLES, TemplateCaptureError, _verify_pair, derive_spec
from ._errors import RenderError
from ._format import Format
from ._jinja import TemplateRaised
from ._spec import FlatSpec, Turn

__all__ = ["jinja_source", "to_jinja"]


def _lit(text: str) -> str:
    """A Jinja expression writing exactly ``text``."""
    return "{{ '" + _esc(text) + "' }}" if text else ""


def _content(turn: Turn) -> str:
    expr = {"": "message['content']", "strip": "message['content'] | trim"}.get(
        turn.trim, f"message['content'].{turn.trim}()"
    )
    return "{{ " + expr + " }}"


def _turn(turn: Turn, role_expr: str | None = None) -> str:
    pre = turn.pre
    if role_expr is not None and "{role}" in pre:
        before, after = pre.split("{role}")
        head = _lit(before) + "{{ " + role_expr + " }}" + _lit(after)
    else:
        head = _lit(pre)
    return head + _content(turn) + _lit(turn.post)


def jinja_source(spec: FlatSpec, *, unknown_role_error: str = "") -> str:
    """A chat template writing what a :class:`FlatSpec` describes (the one ``grammar_source`` compiles)."""
    order_error = spec.order_error or "Conversation roles are not in an order this format writes"
    role_error = unknown_role_error or "This format has no such role"
    out: list[str] = []
    w = out.append
    w("{#- Exported by chatgrammar: render with Hugging Face's settings (trim_blocks, lstrip_blocks). -#}\n")
    w("{%- set ns = namespace(bos_open=true) -%}\n")
    checks: list[str] = []
    if spec.needs_message:
        checks.append(
            "{%- if messages | length == 0 %}{{ raise_exception('" + _esc(order_error) + "') }}{% endif -%}\n"
        )
    if spec.order == "alternate":
        checks.append(
            "{%- set offset = 1 if messages and messages[0]['role'] == 'system' else 0 -%}\n"
            "{%- for message in messages[offset:] -%}\n"
            "{%- if message['role'] != ['user', 'assistant'][loop.index0 % 2] %}"
            "{{ raise_exception('" + _esc(order_error) + "') }}{% endif -%}\n"
            "{%- endfor -%}\n"
        )
    elif spec.order in ("user-even", "system-first-user-even"):
        offset = "0" if spec.order == "user-even" else "1 if messages and messages[0]['role'] == 'system' else 0"
        checks.append(
            "{%- set offset = " + offset + " -%}\n"
            "{%- for message in messages[offset:] -%}\n"
            "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
            "{{ raise_exception('" + _esc(order_error) + "') }}{% endif -%}\n"
            "{%- endfor -%}\n"
        )
    elif spec.order == "system-first":
        checks.append(
            "{%- for message in messages[1:] -%}\n"
            "{%- if message['role'] == 'system' %}{{ raise_exception('" + _esc(order_error) + "') }}{% endif -%}\n"
            "{%- endfor -%}\n"
        )
    if spec.any_role is None:
        known = ", ".join(f"'{r}'" for r in spec.roles)
        checks.append(
            "{%- for message in messages -%}\n"
            "{%- if message['role'] not in [" + known + "] %}{{ raise_exception('" + _esc(role_error) + "') }}"
            "{% endif -%}\n{%- endfor -%}\n"
        )
    out.extend(checks)
    head = _lit(spec.bos) + _lit(spec.initial)
    if spec.default_system is not None:
        sys_turn = spec.roles.get("system") or spec.any_role
        assert sys_turn is not None
        block = _lit(sys_turn.pre.replace("{role}", "system") + spec.default_system + sys_turn.post)
        cond = "not messages or messages[0]['role'] != 'system'"
        if spec.default_system_if == "not-first":
            cond = "messages and messages[0]['role'] != 'system'"
        head += "{% if " + cond + " %}" + block + "{% endif %}"
    body: list[str] = ["{%- for message in messages -%}\n"]
    if spec.bos_reopen and spec.bos:
        body.append(
            "{%- if message['role'] == 'system' and not ns.bos_open %}"
            + _lit(spec.bos)
            + "{% set ns.bos_open = true %}{% endif -%}\n"
        )
    first = True
    for role, turn in spec.roles.items():
        post = turn.post + (spec.eos if role == "assistant" and spec.eos_after_assistant else "")
        body.append(
            ("{%- if " if first else "{%- elif ")
            + f"message['role'] == '{role}' -%}}\n"
            + _turn(Turn(turn.pre, post, turn.trim))
            + "\n"
        )
        first = False
    if spec.any_role is not None:
        text = _turn(spec.any_role, "message['role']")
        body.append(("{%- if true -%}\n" if first else "{%- else -%}\n") + text + "\n")
    body.append("{%- endif -%}\n")
    if spec.bos_reopen:
        body.append("{%- if message['role'] == 'assistant' %}{% set ns.bos_open = false %}{% endif -%}\n")
    body.append("{%- endfor -%}\n")
    gen = spec.generation or ""
    if spec.final_without_generation:
        end = "{%- if add_generation_prompt %}" + _lit(gen) + "{% else %}" + _lit(spec.final) + "{% endif -%}\n"
    else:
        end = "{%- if add_generation_prompt %}" + _lit(gen) + "{% endif %}" + _lit(spec.final) + "\n"
    if spec.empty_renders_nothing:
        alone = ("{%- elif add_generation_prompt %}" + _lit(gen)) if spec.empty_generation else ""
        if not spec.empty_generation and not spec.generation_when_empty_writes_nothing:
            alone = "{%- elif add_generation_prompt %}{{ raise_exception('No generation prompt without a message') }}"
        w("{%- if messages -%}\n" + head + "\n" + "".join(body) + end + alone + "{%- endif -%}\n")
    elif not spec.empty_generation:
        if not spec.generation_when_empty_writes_nothing:
            w(
                "{%- if not messages and add_generation_prompt %}"
                "{{ raise_exception('No generation prompt without a message') }}{% endif -%}\n"
            )
        w(head + "\n" + "".join(body))
        w("{%- if messages and add_generation_prompt %}" + _lit(gen) + "{% endif %}" + _lit(spec.final) + "\n")
    else:
        w(head + "\n" + "".join(body) + end)
    return "".join(out).rstrip("\n")


def _esc(text: str) -> str:
    """``text`` inside a single-quoted Jinja string (Jinja decodes Python's escapes)."""
    return text.encode("unicode_escape").decode("ascii").replace("'", "\\'")


def _format_renderer(fmt: Format, date: datetime.date | None) -> Callable[..., str]:
    def render(messages: list[dict[str, Any]], add_generation_prompt: bool = False) -> str:
        try:
            return fmt.render(messages, add_generation_prompt=add_generation_prompt, date=date)
        except RenderError as e:
            raise TemplateRaised(str(e)) from None

    return render


def to_jinja(fmt: Format, *, conversations: int = 300, seed: int = 0) -> str:
    """A Hugging Face chat template rendering exactly what ``fmt.render`` writes (see the module)."""
    render_a = _format_renderer(fmt, datetime.date(2024, 7, 26))
    render_b = _format_renderer(fmt, datetime.date(2025, 1, 3))
    try:
        spec, refused, _, dropped = derive_spec(
            render_a, render_b, bos_token=fmt.bos or "", eos_token=fmt.eos or "", name=fmt.name
        )
    except TemplateCaptureError as e:
        raise TemplateCaptureError(
            f"exporting {fmt.name} to Jinja ({e.probe})",
            "its grammar is not one chatgrammar writes as a template yet (each message written as "
            "opening + content + closing of its role); use its model's own chat template",
            headline="the format was not exported",
        ) from None
    if dropped:
        raise TemplateCaptureError(
            f"exporting {fmt.name} to Jinja (render {dropped[0]})",
            "the format leaves a message's content out (a declared loss), which an exported template "
            "would refuse instead; use its model's own chat template",
            headline="the format was not exported",
        )
    source = jinja_source(spec)
    try:
        from ._jinja import compile_template

        jinja_render = compile_template(source, bos_token="", eos_token="")
    except ImportError:  # pragma: no cover - verification needs jinja2
        return source
    roles = [r for r in ROLES if r in spec.roles or spec.any_role is not None]
    extra = [r for r in ("tool", "zqrole") if spec.any_role is not None and r not in refused]
    _verify_pair(
        render_a,
        jinja_render,
        [*roles, *extra],
        spec,
        conversations,
        seed,
        f"exporting {fmt.name} to Jinja",
        headline="the format was not exported",
    )
    return source
