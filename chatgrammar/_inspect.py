"""Looking at a text or a conversation from outside: which format is it, and what is wrong with it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ._errors import ParseError, RenderError, UnsafeContentError, UnsupportedConversationError
from ._format import Format
from ._message import MessageLike, read_messages
from ._registry import formats, get_format
from ._results import Diagnostic, Parsed

__all__ = ["SAME_LANGUAGE", "detect", "validate"]

# Formats that write the very same text for many conversations (a user turn, a system
# message, the generation prompt): no detector can tell them apart on such a text, and
# ``detect`` ranks them equal. The tests check that every built-in format's renders are
# detected first, up to its group here, and that each group's members do share texts.
SAME_LANGUAGE: tuple[frozenset[str], ...] = (
    # ChatML: the Hermes 2, Qwen, SmolLM2 and Yi templates write plain ChatML for most conversations.
    frozenset({"chatml", "hermes-2", "qwen2", "qwen2.5", "qwen3", "smollm2", "yi"}),
    # DeepSeek: user and assistant tags after the BOS, system text first.
    frozenset(
        {"deepseek-coder", "deepseek-r1-distill", "deepseek-v2", "deepseek-v2.5", "deepseek-v3", "deepseek-v3.1"}
    ),
    # Role tags: the Zephyr, Tulu, Falcon 3 and Phi families, MistralLite, Pygmalion.
    frozenset({"zephyr", "tulu3", "falcon3", "phi-3-mini", "phi-3.5", "phi-4-mini", "mistrallite", "pygmalion"}),
    frozenset({"gemma", "gemma3"}),
    frozenset({"granite3.1", "granite3.2", "granite3.3"}),
    # Instruction brackets: Llama 2 and the Mistral family.
    frozenset(
        {
            "llama2",
            "mistral",
            "mistral-v0.2",
            "mistral-large-2411",
            "mixtral-8x22b",
            "mistral-nemo",
            "mistral-small-24b",
            "mistral-small-3.2",
        }
    ),
    frozenset({"llama3.1", "llama3.2"}),
    frozenset({"vicuna", "orca-vicuna"}),
)

# A text cut short, or without the BOS a tokenizer adds itself, is still the format's (at half the score each).
_MILD = ("truncated", "missing-bos")


def detect(text: str, candidates: Sequence[str | Format] | None = None) -> list[tuple[str, float]]:
    """The formats that read ``text``, best first, each with a score in (0, 1]; [] when none.

    A format reads the text when it parses it strictly; one that reads it only as cut
    short (a completion stopped by max_tokens), or without its BOS token (which
    tokenizers often add themselves), counts at half its score for each. The score is the
    share of the text the format's own delimiters account for: a format that explains
    more of the text with its structure (and leaves less to content) ranks first.
    ``candidates`` limits the search (default: every registered format).

    >>> detect("<|start_header_id|>user<|end_header_id|>\\n\\nHi<|eot_id|>")[0][0]
    'llama3'
    """
    if not isinstance(text, str):
        raise TypeError(f"detect() takes a str, not {type(text).__name__}")
    if not text.strip():
        return []
    names = [get_format(c).name for c in candidates] if candidates is not None else formats()
    scored: list[tuple[float, int, str]] = []
    for order, name in enumerate(names):
        fmt = get_format(name)
        # The reading with reasoning and tool calls as turns of their own: their text is content.
        parsed = fmt._parse_flat(text, False, True, {})
        assert isinstance(parsed, Parsed)
        if any(d.code not in _MILD for d in parsed.diagnostics):
            continue
        spans = parsed.spans or []
        default = fmt.policy.default_system if "{date}" not in (fmt.policy.default_system or "{date}") else None
        # Content is what the format leaves unexplained (its own default system text is not),
        # and so is a role written into a ROLE slot: it is data, not the format's delimiter.
        fixed = {shape.role for shape in fmt._c.shapes.values() if shape.role is not None}
        generic = len(fixed) < len(fmt._c.shapes)
        content = sum(
            s.content_end - s.content_start + (len(m.role) if generic and m.role not in fixed else 0)
            for m, s in zip(parsed, spans, strict=True)
            if not (m.role == "system" and default is not None and m.content == default)
        )
        # Text read as a delimiter cut short only might be one: it explains nothing (a whole
        # text read as the start of a turn's opening, its role still being written).
        content += sum(d.end - d.pos for d in parsed.diagnostics if d.code == "truncated")
        score = max(len(text) - content, 0) / len(text)
        score /= 2 ** len({d.code for d in parsed.diagnostics})
        if score <= 0:
            continue
        scored.append((score, order, name))
    scored.sort(key=lambda t: (-t[0], t[1]))
    return [(name, round(score, 6)) for score, _, name in scored]


def validate(text_or_messages: str | Iterable[MessageLike], fmt: str | Format, **options: Any) -> list[Diagnostic]:
    r"""Every problem of a prompt text, or of a conversation, for format ``fmt``; [] when none.

    For a text: turns cut short (``truncated``), turns not closed before the next one
    (``unclosed-turn``), turns in an order the format does not take (``role-order``),
    a doubled or missing BOS (``double-bos``, ``missing-bos``), delimiters written with
    other whitespace (``whitespace``), roles the format does not have (``unknown-role``),
    and text no rule reads (``unexpected-text``). For messages: ``invalid-message``,
    ``unknown-role``, ``delimiter-in-content`` (each message, each delimiter) and
    ``role-order``. Each diagnostic has a line and column (for messages: within that
    message's content, with ``index``), a code, a message and a hint.

    >>> [str(d) for d in validate("<s>[INST] Hi [/INST]  Hello </s>", "llama2")]
    ['1:22: whitespace "  " where llama2 writes " "']
    """
    f = get_format(fmt)
    if isinstance(text_or_messages, str):
        return _validate_text(text_or_messages, f, options)
    return _validate_messages(list(text_or_messages), f, options)


def _validate_text(text: str, f: Format, options: dict[str, Any]) -> list[Diagnostic]:
    try:  # a text that reads strictly has no structural problem (an open last turn is a prompt)
        parsed = f.parse(text, spans=True, **options)
    except ParseError:
        parsed = f.parse(text, strict=False, spans=True, **options)
    out = list(parsed.diagnostics)
    roles = f.roles
    if roles is not None and parsed.spans is not None:
        for i, (m, span) in enumerate(zip(parsed, parsed.spans, strict=True)):
            if m.role not in roles:
                out.append(
                    Diagnostic.at(
                        text,
                        "unknown-role",
                        f"{m.role!r} is not a role of {f.name} (its roles: {', '.join(roles)})",
                        "use one of the format's roles, or a format that takes this one",
                        span.start,
                        span.end,
                        i,
                    )
                )
    out.sort(key=lambda d: (d.pos, d.end))
    return out


def _validate_messages(messages: list[Any], f: Format, options: dict[str, Any]) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    try:
        roles, contents, _open = read_messages(messages)
    except RenderError as e:
        return [_message_diag("invalid-message", str(e), "fix the message's shape", "", 0, e.index)]
    known = f.roles
    delimiters = [(d, d in f.tokens) for d in f.delimiters]
    for i, (role, content) in enumerate(zip(roles, contents, strict=True)):
        if known is not None and role not in known and role not in f._header.get("role-alias", {}):
            out.append(
                _message_diag(
                    "unknown-role",
                    f"message {i}: {role!r} is not a role of {f.name} (its roles: {', '.join(known)})",
                    "use one of the format's roles, or a format that takes this one",
                    role,
                    0,
                    i,
                )
            )
        for found in _all_delimiters(content, delimiters):
            delim, offset = found
            out.append(
                _message_diag(
                    "delimiter-in-content",
                    f"message {i} ({role!r}) holds {delim!r}, a delimiter of {f.name}: the model would read a "
                    "different conversation",
                    "remove or escape it; render(..., on_unsafe='allow') writes it anyway",
                    content,
                    offset,
                    i,
                    len(delim),
                )
            )
    try:
        f.render(messages, on_unsafe="allow", **options)
    except UnsupportedConversationError as e:
        out.append(_message_diag("role-order", str(e), "see the format's policy (formats --long)", "", 0, e.index))
    except RenderError as e:
        out.append(_message_diag("invalid-message", str(e), "fix the message", "", 0, e.index))
    if not any(d.code in ("delimiter-in-content", "role-order", "invalid-message") for d in out):
        try:
            f.render(messages, **options)
        except UnsafeContentError as e:  # what only breaks the structure where it stands
            content = contents[e.index] if e.index is not None and e.index < len(contents) else ""
            out.append(
                _message_diag(
                    "delimiter-in-content",
                    str(e).split(": the model")[0],
                    "change the content there",
                    content,
                    e.offset,
                    e.index,
                )
            )
        except RenderError:  # pragma: no cover - reported above
            pass
    out.sort(key=lambda d: (d.index if d.index is not None else -1, d.pos))
    return out


def _all_delimiters(content: str, delimiters: list[tuple[str, bool]]) -> list[tuple[str, int]]:
    """Every token in ``content``, and every marker at a line start."""
    found: list[tuple[str, int]] = []
    for delim, anywhere in delimiters:
        start = 0
        while True:
            k = content.find(delim, start)
            if k == -1:
                break
            if anywhere or k == 0 or content[k - 1] == "\n":
                found.append((delim, k))
            start = k + 1
    return sorted(found, key=lambda t: t[1])


def _message_diag(
    code: str, message: str, hint: str, content: str, offset: int, index: int | None, length: int = 0
) -> Diagnostic:
    return Diagnostic.at(content, code, message, hint, offset, offset + length, index)
