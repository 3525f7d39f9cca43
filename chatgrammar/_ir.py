"""The compiler's intermediate form of a format: a regular expression over
literals, slots and messages.

Nodes compare by identity: every occurrence of a rule in the grammar becomes its
own subtree, so that each literal and slot occurrence is one position of the
automata built from it (see ``_automaton``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

DROPPED = "__dropped"  # the suffix of a message rule the template writes nothing for
READ_ONLY = "__read"  # the suffix of a message rule only read (what a model writes), never rendered

# Structural roles: the parts of a message that a format writes as turns of their own kind.
# Rules named after them are messages of the compiled automaton; ``_structure`` turns them
# into the Hugging Face fields of the message they belong to, and back.
REASONING = "reasoning"  # an assistant's thinking (reasoning_content), written before its answer
TOOL_CALL = "tool_call"  # the name of one tool call of the assistant message before it
TOOL_ARGS = "tool_args"  # that call's arguments, as JSON text
TOOL_DEF = "tool_def"  # one tool definition (render's tools=...), as JSON text
TOOL_CALL_ID = "tool_call_id"  # the id of the tool call it stands with (before or after its arguments)
TOOL_RESULT_ID = "tool_result_id"  # the tool_call_id of the tool result it stands with (before or after it)
TOOL_RESULT_NAME = "tool_result_name"  # the name of the tool call that result answers (its name), beside it
STRUCTURAL = (REASONING, TOOL_CALL, TOOL_ARGS, TOOL_DEF, TOOL_CALL_ID, TOOL_RESULT_ID, TOOL_RESULT_NAME)
# Content transforms whose content the template never writes: ``_drop{X}`` (dropped, a declared
# loss) and ``_empty{X}`` (the template writes that shape only for a message with no content:
# content there is refused).
UNWRITTEN = frozenset(("drop", "empty"))

__all__ = [
    "DROPPED",
    "READ_ONLY",
    "REASONING",
    "STRUCTURAL",
    "TOOL_ARGS",
    "TOOL_CALL",
    "TOOL_CALL_ID",
    "TOOL_DEF",
    "TOOL_RESULT_ID",
    "TOOL_RESULT_NAME",
    "UNWRITTEN",
    "read_only_removed",
    "Alt",
    "Cond",
    "Gen",
    "Lit",
    "Msg",
    "Node",
    "Opt",
    "Seq",
    "Slot",
    "Star",
    "resolve",
    "silent_removed",
    "walk",
]


class Node:
    """Base of the IR nodes."""

    __slots__ = ()


@dataclass(eq=False)
class Lit(Node):
    """A literal of the format: text written in the grammar, emitted verbatim."""

    text: str
    terminal: str | None = None  # the grammar's terminal name, when it has one


@dataclass(eq=False)
class Slot(Node):
    """A place filled in at render time: a message's content or role, or a variable (a date).

    ``field`` is "content", "role" or "var".
    """

    terminal: str
    field: str
    transform: str | None = None  # declared with _strip{...}, _lstrip_nl{...}, _title{...}
    # Filled in by the compiler: the regex of the text this slot occurrence accepts.
    pattern: str = ""


@dataclass(eq=False)
class Seq(Node):
    items: tuple[Node, ...]


@dataclass(eq=False)
class Alt(Node):
    items: tuple[Node, ...]


@dataclass(eq=False)
class Opt(Node):
    item: Node


@dataclass(eq=False)
class Star(Node):
    item: Node


@dataclass(eq=False)
class Msg(Node):
    """One message: ``role`` is fixed by the rule's name, or None when a ROLE slot gives it.

    A rule named ``role__dropped`` has an empty body: the template drops such a
    message, writing nothing (a declared loss: normalize shows it).
    """

    role: str | None
    rule: str
    body: Node
    key: int = field(default=-1)  # the compiler's id for the rule's message shape

    @property
    def dropped(self) -> bool:
        return self.rule.endswith(DROPPED)

    @property
    def read_only(self) -> bool:
        return self.rule.endswith(READ_ONLY)


@dataclass(eq=False)
class Cond(Node):
    """Written only when the render option ``option`` has ``value`` (``_if{"option=value", ...}``)."""

    option: str
    value: object
    body: Node


@dataclass(eq=False)
class Gen(Node):
    """The generation prompt (the rule named ``generation``); its body may be empty."""

    body: Node


def walk(node: Node) -> Iterator[Node]:
    """Every node of the subtree, parents before children, left to right."""
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        if isinstance(n, (Seq, Alt)):
            stack.extend(reversed(n.items))
        elif isinstance(n, (Opt, Star)):
            stack.append(n.item)
        elif isinstance(n, (Msg, Gen, Cond)):
            stack.append(n.body)


def silent_removed(node: Node) -> Node:
    """The same structure without what writes no text: dropped messages, an empty prompt.

    The parsers read this form: what writes nothing cannot be read back.
    """
    if isinstance(node, Msg) and node.dropped:
        return Seq(())
    if isinstance(node, Gen) and not any(isinstance(n, (Lit, Slot)) for n in walk(node.body)):
        return Seq(())
    if isinstance(node, Seq):
        return Seq(tuple(silent_removed(i) for i in node.items))
    if isinstance(node, Alt):
        return Alt(tuple(silent_removed(i) for i in node.items))
    if isinstance(node, Opt):
        return Opt(silent_removed(node.item))
    if isinstance(node, Star):
        return Star(silent_removed(node.item))
    return node


def read_only_removed(node: Node) -> Node | None:
    """The structure the renderer writes: without the parts only read (``role__read`` rules).

    None when nothing is left to write (a sequence holding a read-only message).
    """
    if isinstance(node, Msg):
        return None if node.read_only else node
    if isinstance(node, Seq):
        items = [read_only_removed(i) for i in node.items]
        return None if any(i is None for i in items) else Seq(tuple(i for i in items if i is not None))
    if isinstance(node, Alt):
        alts = [a for a in (read_only_removed(i) for i in node.items) if a is not None]
        return Alt(tuple(alts)) if len(alts) > 1 else alts[0] if alts else None
    if isinstance(node, Opt):
        inner = read_only_removed(node.item)
        return Opt(inner) if inner is not None else Seq(())
    if isinstance(node, Star):
        inner = read_only_removed(node.item)
        return Star(inner) if inner is not None else Seq(())
    return node


def resolve(node: Node, options: dict[str, object]) -> Node:
    """A copy of ``node`` for these option values: each Cond becomes its body or nothing."""
    if isinstance(node, Cond):
        return resolve(node.body, options) if options[node.option] == node.value else Seq(())
    if isinstance(node, Seq):
        return Seq(tuple(resolve(i, options) for i in node.items))
    if isinstance(node, Alt):
        return Alt(tuple(resolve(i, options) for i in node.items))
    if isinstance(node, Opt):
        return Opt(resolve(node.item, options))
    if isinstance(node, Star):
        return Star(resolve(node.item, options))
    if isinstance(node, Msg):
        return Msg(node.role, node.rule, resolve(node.body, options), node.key)
    if isinstance(node, Gen):
        return Gen(resolve(node.body, options))
    if isinstance(node, Lit):
        return Lit(node.text, node.terminal)
    if isinstance(node, Slot):
        return Slot(node.terminal, node.field, node.transform)
    raise AssertionError(node)
