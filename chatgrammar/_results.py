"""What the readers return besides messages: spans, diagnostics, stream events."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ._errors import line_column, shortened
from ._message import Message

__all__ = [
    "Completion",
    "ContentDelta",
    "Diagnostic",
    "Event",
    "MessageEnd",
    "MessageStart",
    "Parsed",
    "ReasoningDelta",
    "Span",
    "ToolCallDelta",
    "ToolCallEnd",
    "ToolCallStart",
]


@dataclass(frozen=True, slots=True)
class Span:
    """Where one message stands in a text: its whole turn and its content.

    ``start``/``end`` bound the turn as the format's message rule writes it (role
    header, content, end token); ``content_start``/``content_end`` the content as
    written (trimmed, or encoded, the way the template wrote it). Slice the text with
    ``text[span.start:span.end]`` and ``text[span.content_start:span.content_end]``.

    >>> Span(0, 10, 3, 5).content
    (3, 5)
    """

    start: int
    end: int
    content_start: int
    content_end: int

    @property
    def turn(self) -> tuple[int, int]:
        """``(start, end)`` of the whole turn."""
        return (self.start, self.end)

    @property
    def content(self) -> tuple[int, int]:
        """``(content_start, content_end)``."""
        return (self.content_start, self.content_end)


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One problem found in a text or a conversation.

    ``code`` is a stable identifier (see ``docs/reading.md`` for the catalogue),
    ``pos``/``end`` the 0-based span of the problem in the text, ``line`` and
    ``column`` 1-based (for a list of messages: the position in its rendering),
    ``index`` the message concerned when there is one. ``str(d)`` reads like a
    linter's line: ``3:1: role-order a 'user' turn cannot follow ...``.
    """

    code: str
    message: str
    hint: str
    pos: int
    end: int
    line: int
    column: int
    index: int | None = None

    def __post_init__(self) -> None:
        # An error never repeats a whole input (a tool name of 10,000 characters...).
        object.__setattr__(self, "message", shortened(self.message))
        object.__setattr__(self, "hint", shortened(self.hint))

    @classmethod
    def at(
        cls, text: str, code: str, message: str, hint: str, pos: int, end: int | None = None, index: int | None = None
    ) -> Diagnostic:
        line, column = line_column(text, pos)
        return cls(code, message, hint, pos, pos if end is None else end, line, column, index)

    def __str__(self) -> str:
        return f"{self.line}:{self.column}: {self.code} {self.message}"


class Parsed(list[Message]):
    """The messages of a text, with what ``parse`` found besides them.

    A ``list`` of Message (it compares equal to a plain list), with:

    * ``spans``: one ``Span`` per message when asked for (``spans=True``), else None;
    * ``diagnostics``: what a tolerant parse (``strict=False``) could not read as
      the format, or found truncated, and tool-call arguments that are not JSON (kept
      as text); empty for a text that parses strictly and holds no such arguments;
    * ``tools``: the tool definitions the text lists (render's ``tools=``), or None.
    """

    spans: list[Span] | None
    diagnostics: list[Diagnostic]
    tools: list[Any] | None

    def __init__(
        self,
        messages: Iterable[Message] = (),
        spans: list[Span] | None = None,
        diagnostics: list[Diagnostic] | None = None,
        tools: list[Any] | None = None,
    ) -> None:
        super().__init__(messages)
        self.spans = spans
        self.diagnostics = [] if diagnostics is None else diagnostics
        self.tools = tools

    @property
    def ok(self) -> bool:
        """No diagnostics: the text is a (possibly open-ended) document of the format."""
        return not self.diagnostics


@dataclass(frozen=True, slots=True)
class Completion:
    """What a model produced after a prompt (see ``parse_completion``).

    ``messages`` are the turns it wrote (normally one assistant message);
    ``stop`` the stop string that ended it (None: the text ended without one, and the
    last message is ``complete=False``); ``rest`` the text after the stop string,
    which is not part of any message; ``diagnostics`` what could not be read.
    """

    messages: list[Message]
    stop: str | None
    rest: str
    diagnostics: list[Diagnostic]

    @property
    def message(self) -> Message | None:
        """The last message produced (the answer), if any."""
        return self.messages[-1] if self.messages else None


@dataclass(frozen=True, slots=True)
class MessageStart:
    """A turn begins: message ``index`` (as ``parse`` numbers it) of ``role``."""

    index: int
    role: str


@dataclass(frozen=True, slots=True)
class ContentDelta:
    """More content of message ``index``; the deltas of a message join to its content."""

    index: int
    text: str


def _short_repr(self: Any) -> str:
    """The event's fields, leaving out the optional ones that are None (as Message does)."""
    shown = (
        f"{k}={getattr(self, k)!r}" for k in self.__slots__ if k not in self._optional or getattr(self, k) is not None
    )
    return f"{type(self).__name__}({', '.join(shown)})"


@dataclass(frozen=True, slots=True, repr=False)
class MessageEnd:
    """Message ``index`` is over; ``complete`` is False for a turn the text leaves open.

    ``tool_call_id`` is a tool result's id, and ``name`` the name of the tool call it answers, where
    the format writes them (None otherwise).
    """

    index: int
    complete: bool = True
    tool_call_id: str | None = None
    name: str | None = None

    _optional = ("tool_call_id", "name")
    __repr__ = _short_repr


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    """More thinking of message ``index`` (an answer); the deltas join to its ``reasoning_content``."""

    index: int
    text: str


@dataclass(frozen=True, slots=True, repr=False)
class ToolCallStart:
    """Tool call ``index`` (counted within its message) of message ``message`` begins: its name is known.

    ``id`` is the call's id when the format writes it before the arguments (``ToolCallEnd``
    has it wherever it is written).
    """

    index: int
    name: str
    message: int
    id: str | None = None

    _optional = ("id",)
    __repr__ = _short_repr


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """More of the arguments of tool call ``index``: JSON text as the model writes it (join the deltas)."""

    index: int
    arguments_text: str
    message: int


@dataclass(frozen=True, slots=True, repr=False)
class ToolCallEnd:
    """Tool call ``index`` of message ``message`` is over (its arguments are whole); ``id`` is its
    id, where the format writes one."""

    index: int
    message: int
    id: str | None = None

    _optional = ("id",)
    __repr__ = _short_repr


Event = MessageStart | ContentDelta | MessageEnd | ReasoningDelta | ToolCallStart | ToolCallDelta | ToolCallEnd
