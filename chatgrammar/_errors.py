"""The exceptions chatgrammar raises.

All of them derive from :class:`ChatGrammarError`, itself a :class:`ValueError`::

    ChatGrammarError(ValueError)
    ├── ParseError                       text that is not a valid document of the format
    ├── RenderError                      messages that cannot be rendered (.index: which one)
    │   ├── UnsafeContentError           content holding one of the format's own delimiters
    │   └── UnsupportedConversationError a role sequence the format cannot represent
    ├── UnknownFormatError               a format name, alias or model id nobody registered
    └── GrammarError                     a grammar file that is not a valid chatgrammar format
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = [
    "ChatGrammarError",
    "GrammarError",
    "ParseError",
    "RenderError",
    "UnknownFormatError",
    "UnsafeContentError",
    "UnsupportedConversationError",
]

_CONTEXT = 40  # characters of the offending line shown on each side of the caret


class ChatGrammarError(ValueError):
    """Base class of every error chatgrammar raises."""


def line_column(text: str, pos: int) -> tuple[int, int]:
    """1-based line and column of ``pos`` in ``text`` (column counts characters)."""
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return line, column


def snippet(text: str, pos: int) -> str:
    """One clipped line of ``text`` around ``pos`` with a caret under ``pos``."""
    start = max(text.rfind("\n", 0, pos) + 1, pos - _CONTEXT)
    end = text.find("\n", pos)
    end = len(text) if end == -1 else end
    end = min(end, pos + _CONTEXT)
    before = text[start:pos]
    after = text[pos:end]
    # Escaped control characters take up to 10 columns each: keep the line short all the same.
    shown_before = _visible(before)[-2 * _CONTEXT :]
    return f"  {shown_before}{_visible(after)[: 2 * _CONTEXT]}\n  {' ' * len(shown_before)}^"


_LONGEST_MESSAGE = 400  # characters of a message before its long quotations are shortened
_LONGEST_QUOTE = 60  # characters a shortened quotation keeps
_QUOTED = re.compile(r'"(?:[^"\\\n]|\\.)*+"|\'(?:[^\'\\\n]|\\.)*+\'')


def shortened(message: str) -> str:
    """``message`` with its long quotations of the text (a content, a tool name) cut short, so that an
    error never repeats a whole input: every quotation over 60 characters keeps its first 60 and
    ``…``, then a message still over 400 characters keeps its beginning and its end."""
    if len(message) <= _LONGEST_MESSAGE:
        return message

    def cut(m: re.Match[str]) -> str:
        q = m.group()
        return q if len(q) <= _LONGEST_QUOTE + 2 else q[: _LONGEST_QUOTE + 1] + "…" + q[0]

    message = _QUOTED.sub(cut, message)
    if len(message) > _LONGEST_MESSAGE:
        half = _LONGEST_MESSAGE // 2 - 2
        message = message[:half] + " … " + message[-half:]
    return message


def _visible(s: str) -> str:
    # Control characters would break the caret's alignment; show them escaped.
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in s)


class ParseError(ChatGrammarError):
    """Text that is not a document of the format.

    ``pos`` is the 0-based offset of the problem (``len(text)`` at the end of the
    text), ``line`` and ``column`` are 1-based, ``expected`` lists what the format
    allows there, as it is written in the text (``'"<|im_end|>"'``, ``"content"``).
    """

    def __init__(
        self,
        message: str,
        *,
        text: str,
        pos: int,
        expected: Sequence[str] = (),
        format: str | None = None,
    ) -> None:
        self.pos = pos
        self.line, self.column = line_column(text, pos)
        self.expected = list(expected)
        self.format = format
        self.reason = message = shortened(message)
        self.snippet = snippet(text, pos)
        where = "at end of text" if pos >= len(text) else f"line {self.line}, column {self.column}"
        super().__init__(f"{message} ({where})\n{self.snippet}")


class RenderError(ChatGrammarError):
    """Messages that cannot be rendered in the format; ``index`` is the message at fault."""

    def __init__(self, message: str, *, index: int | None = None, format: str | None = None) -> None:
        self.index = index
        self.format = format
        super().__init__(shortened(message))


class UnsafeContentError(RenderError):
    """A message holds a delimiter of the format, which would change the conversation.

    ``offset`` is the delimiter's position inside the message's content (or role),
    ``delimiter`` the delimiter itself. ``index`` is None when the text is a tool
    definition (render's ``tools``), not a message.
    """

    def __init__(
        self,
        message: str,
        *,
        index: int | None,
        offset: int,
        delimiter: str,
        format: str | None = None,
    ) -> None:
        self.offset = offset
        self.delimiter = delimiter
        super().__init__(message, index=index, format=format)


class UnsupportedConversationError(RenderError):
    """A conversation the format cannot represent (a role or role order it does not have)."""


class UnknownFormatError(ChatGrammarError, LookupError):
    """No registered format has this name, alias or model id."""

    def __init__(self, name: str, suggestions: Sequence[str] = ()) -> None:
        self.name = name
        self.suggestions = list(suggestions)
        hint = ""
        if self.suggestions:
            hint = " Did you mean " + " or ".join(repr(s) for s in self.suggestions) + "?"
        super().__init__(f"unknown chat format {name!r}.{hint} chatgrammar.formats() lists the registered formats.")


class GrammarError(ChatGrammarError):
    """A grammar that is not a valid chatgrammar format.

    ``line`` and ``column`` (1-based) point into the grammar's source when known; ``message``
    is the explanation without the place.
    """

    def __init__(
        self, message: str, *, source: str | None = None, line: int | None = None, column: int | None = None
    ) -> None:
        self.message = message
        self.source = source
        self.line = line
        self.column = column
        super().__init__(_place(source, line, column) + message)


def _place(source: str | None, line: int | None, column: int | None) -> str:
    """``source:line:column: `` (as much of it as is known), before a grammar's error or warning."""
    if not source:
        return ""
    return f"{source}:{line}:{column}: " if line and column else f"{source}:{line}: " if line else f"{source}: "


class GrammarWarning(UserWarning):
    """A grammar that compiles but is likely not what its author meant (a literal shaped like a
    special token that content may still hold). ``line`` and ``column`` point into its source."""

    def __init__(self, message: str, *, source: str | None = None, line: int | None = None, column: int | None = None):
        self.message = message
        self.line = line
        self.column = column
        super().__init__(_place(source, line, column) + message)
