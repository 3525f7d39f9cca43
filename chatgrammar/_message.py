"""The message model, and reading messages given as models or plain dicts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

from ._errors import RenderError

__all__ = ["Message", "MessageLike", "read_messages"]


class Message(BaseModel):
    """One message of a conversation.

    ``complete`` is ``False`` for a turn the text leaves open: the generation
    prompt at the end of a prompt (content ``""``) or a prefilled assistant reply.

    The other fields are Hugging Face's, and None when absent (``repr`` leaves them out):
    ``reasoning_content`` (an assistant's thinking), ``tool_calls`` (an assistant's calls,
    ``[{"type": "function", "id": ..., "function": {"name": ..., "arguments": {...}}}]``),
    and for a ``tool`` message, ``tool_call_id`` and ``name``.

    >>> Message(role="user", content="Hi")
    Message(role='user', content='Hi', complete=True)
    >>> Message(role="assistant", content="", reasoning_content="Greet back.")
    Message(role='assistant', content='', complete=True, reasoning_content='Greet back.')
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    role: str
    content: str
    complete: bool = True
    reasoning_content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    name: str | None = None

    def __repr_args__(self) -> Any:
        for key, value in super().__repr_args__():
            if value is not None or key in _CORE:
                yield key, value

    def to_dict(self) -> dict[str, Any]:
        """The message as a Hugging Face style dict: fields that are None left out, ``complete`` only when False."""
        d: dict[str, Any] = {"role": self.role, "content": self.content}
        if not self.complete:
            d["complete"] = False
        for key in _EXTRAS:
            value = getattr(self, key)
            if value is not None:
                d[key] = value
        return d


MessageLike = Message | Mapping[str, Any]
_CORE = ("role", "content", "complete")
_EXTRAS = ("reasoning_content", "tool_calls", "tool_call_id", "name")
NONE_EXTRAS: dict[str, None] = dict.fromkeys(_EXTRAS)


def _slot_setters() -> tuple[Any, ...] | None:
    """Message.__new__ and the setters of BaseModel's four slots, if pydantic still has them."""
    try:
        setters = tuple(
            BaseModel.__dict__[name].__set__
            for name in ("__dict__", "__pydantic_fields_set__", "__pydantic_extra__", "__pydantic_private__")
        )
    except (KeyError, AttributeError):  # pragma: no cover - a pydantic without these slots
        return None
    return (Message.__new__, *setters)


# (new, set __dict__, set fields_set, set extra, set private): how the parser builds messages.
BUILD = _slot_setters()


def make_message(role: str, content: str, complete: bool = True) -> Message:
    """Build a Message from values already known to be valid (the parser's output).

    Equivalent to ``Message(role=..., content=..., complete=...)`` without
    re-validating strings the parser produced itself, which costs as much as the
    parse on short chats.
    """
    if BUILD is None:  # pragma: no cover
        return Message(role=role, content=content, complete=complete)
    new, set_dict, set_fields, set_extra, set_private = BUILD
    m = new(Message)
    set_dict(m, {"role": role, "content": content, "complete": complete, **NONE_EXTRAS})
    # What Message(role=..., content=...) records as set: "complete" only when given.
    set_fields(m, {"role", "content"} if complete else {"role", "content", "complete"})
    set_extra(m, None)
    set_private(m, None)
    return m  # type: ignore[no-any-return]  # Message.__new__ seen through a tuple


_FIELDS = frozenset(Message.model_fields)


def _same_as_validated(role: str, content: str, complete: bool) -> bool:
    made = make_message(role, content, complete)
    real = Message(role=role, content=content) if complete else Message(role=role, content=content, complete=False)
    return (
        made == real
        and made.model_dump() == real.model_dump()
        and made.model_dump(exclude_unset=True) == real.model_dump(exclude_unset=True)
        and made.model_copy(update={"content": "y"}) == real.model_copy(update={"content": "y"})
    )


# Check once that the shortcut builds the very same object; if not, build the slow way.
if BUILD is not None and not (_same_as_validated("user", "x", True) and _same_as_validated("user", "x", False)):
    BUILD = None  # pragma: no cover


def read_messages(messages: Iterable[MessageLike]) -> tuple[list[str], list[str], bool]:
    """Roles, contents, and whether the last message is open.

    Accepts Message objects and Hugging Face / OpenAI style dicts. Raises
    RenderError (with the message index) for anything else, for unknown keys,
    for non-string roles or contents, and for an open message that is not last.
    """
    roles: list[str] = []
    contents: list[str] = []
    open_index = -1
    for i, m in enumerate(messages):
        if type(m) is dict and len(m) == 2:
            try:
                role = m["role"]
                content = m["content"]
            except KeyError:
                role, content, complete = _read_dict(m, i)
            else:
                complete = True
        elif isinstance(m, Message):
            role, content, complete = m.role, m.content, m.complete
        elif isinstance(m, Mapping):
            role, content, complete = _read_dict(m, i)
        else:
            raise RenderError(
                f"message {i} is a {type(m).__name__}; expected a chatgrammar.Message "
                "or a dict with 'role' and 'content'",
                index=i,
            )
        if type(role) is not str or type(content) is not str:
            _bad_types(role, content, i)
        if not complete:
            open_index = i
        roles.append(role)
        contents.append(content)
    if open_index != -1 and open_index != len(roles) - 1:
        raise RenderError(
            f"message {open_index} is open (complete=False) but is not the last message; "
            "only the final turn of a conversation can be left open",
            index=open_index,
        )
    return roles, contents, open_index != -1


def _read_dict(m: Mapping[str, Any], i: int) -> tuple[Any, Any, bool]:
    extra = set(m) - _FIELDS
    if extra:
        names = ", ".join(sorted(repr(k) for k in extra))
        raise RenderError(
            f"message {i} has keys this format does not know: {names}; "
            "a message holds 'role', 'content' and optionally 'complete'",
            index=i,
        )
    for key in ("role", "content"):
        if key not in m:
            raise RenderError(f"message {i} has no {key!r}", index=i)
    complete = m.get("complete", True)
    if type(complete) is not bool:
        raise RenderError(f"message {i}: 'complete' must be a bool, not {type(complete).__name__}", index=i)
    return m["role"], m["content"], complete


def _bad_types(role: Any, content: Any, i: int) -> None:
    if type(role) is not str:
        raise RenderError(f"message {i}: 'role' must be a string, not {type(role).__name__}", index=i)
    raise RenderError(
        f"message {i}: 'content' must be a string, not {type(content).__name__}",
        index=i,
    )
