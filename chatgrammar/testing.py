"""Hypothesis strategies for testing formats (needs ``hypothesis``: ``pip install chatgrammar[test]``).

``conversations(fmt)`` walks the format's own automaton, so every conversation
it draws is one the format can represent: the role order, whether it ends with a
generation prompt or an open turn, and which roles a ROLE slot takes all come
from the grammar. Contents are deliberately hard: empty, whitespace only,
unicode, leading and trailing newlines, long, and sprinkled with pieces of
every registered format's delimiters.
"""

from __future__ import annotations

import datetime
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ._compiler import ASSISTANT
from ._errors import RenderError, UnsupportedConversationError
from ._format import Format
from ._ir import (
    REASONING,
    STRUCTURAL,
    TOOL_ARGS,
    TOOL_CALL,
    TOOL_CALL_ID,
    TOOL_DEF,
    TOOL_RESULT_ID,
    TOOL_RESULT_NAME,
    Gen,
    Lit,
    Msg,
)
from ._message import Message
from ._payloads import Payloads, index_problems, tojson
from ._registry import formats, get_format
from ._render import READERS
from ._structure import collapse

try:
    from hypothesis import reject
    from hypothesis import strategies as st
except ImportError as e:  # pragma: no cover
    raise ImportError("chatgrammar.testing needs hypothesis: pip install 'chatgrammar[test]'") from e

__all__ = [
    "HARD_CONTENTS",
    "Conversation",
    "check_format",
    "contents",
    "conversations",
    "delimiter_pieces",
    "fuzz_pieces",
    "mutate",
    "safe_contents",
]

WHITESPACE = " \t\n\r\x0b\x0c\x1c\x85\xa0\u1680\u2000\u2028\u2029\u3000"
# Roles a ROLE slot is given besides the usual three.
EXTRA_ROLES = ["tool", "ipython", "function", "observation", "developer", "Bob", "søren", "工具"]


@dataclass
class Conversation:
    """Messages plus what else ``render`` takes: the generation-prompt flag, the options, a date."""

    messages: list[Message] = field(default_factory=list)
    add_generation_prompt: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    date: datetime.date | None = None
    tools: list[Any] | None = None

    def render_args(self) -> dict[str, Any]:
        """The keyword arguments of render and normalize for this conversation."""
        args = {"add_generation_prompt": self.add_generation_prompt, "date": self.date, **self.options}
        if self.tools is not None:
            args["tools"] = self.tools
        return args

    def dicts(self) -> list[dict[str, Any]]:
        """The messages as Hugging Face style dicts (``complete`` only when False)."""
        return [m.to_dict() for m in self.messages]


def delimiter_pieces() -> list[str]:
    """Every registered format's delimiters, with their halves: content that tests edges."""
    pieces: list[str] = []
    for name in formats():
        for d in get_format(name).delimiters:
            pieces += [d, d[: len(d) // 2], d[len(d) // 2 :]]
    pieces += ["\n", "\n\n", " ", "{", "}", "{%", "%}", "{{", "}}", "%", "\\", '"', "'", "<", ">", "|"]
    return list(dict.fromkeys(p for p in pieces if p))


def fuzz_pieces(fmt: str | Format) -> list[str]:
    """What ``mutate`` splices into a text of ``fmt``: its delimiters and their pieces, its roles,
    and characters that begin or end structure elsewhere."""
    f = get_format(fmt)
    pieces: list[str] = []
    for d in f.delimiters + f.stop + [x for x in (f.bos, f.eos, f.generation_prompt) if x]:
        pieces += [d, "\n" + d, d[:-1], d[1:], d[: len(d) // 2], d[len(d) // 2 :]]
    pieces += list(f.roles or ["system", "user", "assistant"]) + ["tool", "function"]
    pieces += ["\n", "\n\n", " ", "\t", "<", ">", "|", "[", "]", "{", "}", '"', ":", "\\", "\x00", "☃", "\r\n"]
    return list(dict.fromkeys(p for p in pieces if p))


def mutate(text: str, rng: random.Random, pieces: Sequence[str], steps: int | None = None) -> str:
    """``text`` after a few random edits: pieces and characters inserted, spans deleted, swapped,
    repeated or replaced by a piece, the text cut short, a space or newline made a long run.
    ``steps`` edits (1 to 4 by default)."""
    for _ in range(rng.randint(1, 4) if steps is None else steps):
        n = len(text)
        i = rng.randint(0, n)
        j = min(n, i + rng.choice((1, 2, 4, 16, 64)))
        op = rng.randrange(9)
        if op == 0:
            text = text[:i] + rng.choice(pieces) + text[i:]
        elif op == 1:
            c = chr(rng.choice((rng.randint(0x20, 0x7E), rng.randint(0, 0x20), rng.randint(0xA0, 0x2FFF))))
            text = text[:i] + c + text[i:]
        elif op == 2:
            text = text[:i] + text[j:]
        elif op == 3:
            k = min(n, j + (j - i))
            text = text[:i] + text[j:k] + text[i:j] + text[k:]
        elif op == 4:
            text = text[:j] + text[i:j] * rng.choice((1, 2, 8)) + text[j:]
        elif op == 5:
            text = text[:i]
        elif op == 6:
            text = text[:i] + rng.choice(pieces) + text[j:]
        elif op == 7:  # the same character twice, or a character dropped from a delimiter
            text = text[:i] + text[i : i + 1] + text[i:] if rng.random() < 0.5 else text[:i] + text[i + 1 :]
        else:  # a long run of whitespace where there is some (patterns that split runs backtrack)
            k = text.find(rng.choice(" \n"), i)
            if k != -1:
                text = text[:k] + text[k] * rng.choice((16, 256, 2048)) + text[k:]
    return text


# Fixed contents every renderer must write as its reference does, in any message.
HARD_CONTENTS: tuple[str, ...] = (
    "",
    " ",
    "\n",
    "  \t\n ",
    "\nleading and trailing newlines\n",
    "héllo wörld ☃ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 中文 العربية",
    "{{ messages }} {% if x %}{% endif %} {# c #} 100% {0} %s %(name)s {system_message}",
    "x" * 10_000,
    ("A long line with braces {} and 50% off.\n" * 250)[:10_000],
)


def safe_contents(fmt: str | Format) -> st.SearchStrategy[str]:
    """Hard contents without the format's own delimiters (which it refuses): for comparing renders."""
    own = set(get_format(fmt).delimiters)
    return contents([p for p in delimiter_pieces() if not any(d in p or p in d for d in own)])


def contents(pieces: list[str] | None = None, long: bool = True) -> st.SearchStrategy[str]:
    """Hard message contents."""
    pieces = delimiter_pieces() if pieces is None else pieces
    base = [
        st.text(max_size=40),
        st.text(alphabet=WHITESPACE, max_size=6),
        st.lists(st.one_of(st.text(max_size=6), st.sampled_from(pieces)), max_size=8).map("".join),
        st.tuples(
            st.text(alphabet="\n \t", max_size=3), st.text(max_size=20), st.text(alphabet="\n \t", max_size=3)
        ).map("".join),
        st.sampled_from(["", " ", "\n", "héllo wörld ☃ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 中文 العربية", "a\r\nb", "\x00\x1b[0m"]),
        # Template and format-string syntax must come through as text.
        st.sampled_from(["{{ messages }}", "{% if x %}", "{#", "100% {0} %s %(name)s {}", "}}{{", "'\"\\"]),
    ]
    if long:
        base.append(st.text(min_size=1, max_size=16).map(lambda s: (s * (10_000 // len(s) + 1))[:10_000]))
    return st.one_of(*base)


@st.composite
def conversations(
    draw: st.DrawFn,
    fmt: str | Format,
    *,
    max_messages: int = 6,
    content: st.SearchStrategy[str] | None = None,
    allow_open: bool = True,
    allow_generation: bool = True,
) -> Conversation:
    """A conversation the format can represent, drawn by walking its automaton."""
    f = get_format(fmt)
    c = f._c
    dfa = c.dfa
    content = contents() if content is None else content
    planner = f._planner
    aliased = set(c.spec.header.get("role-alias", {}))
    # The roles a ROLE slot writes at a state: those with no rule of their own there, that no
    # other rule writes in its place (the renderer asks the same).
    generic_roles = {
        s: [r for r in ["system", "user", ASSISTANT, *EXTRA_ROLES] if r not in own and r not in aliased]
        for s, own in planner.own_roles.items()
    }
    distance = _distance_to_accept(f)
    state, msgs = 0, list[Message]()
    drawn: dict[str, Any] = {}  # the tool definitions drawn, by the text they are written as
    can_open = True
    while True:
        steps = [t for t in dfa.transitions[state] if not isinstance(t.atom, Gen) and distance[t.target] is not None]
        budget_left = len(msgs) < max_messages
        if dfa.accepting[state] and (not steps or not budget_left or draw(st.booleans())):
            break
        if not budget_left:  # head for the nearest accepting state
            steps = [min(steps, key=lambda t: distance[t.target])]  # type: ignore[arg-type,return-value]
        t = draw(st.sampled_from(steps))
        if isinstance(t.atom, Msg) and t.atom.dropped:  # a message the template writes nothing for
            role = t.atom.role or "system"
            msgs.append(Message(role=role, content=draw(_structural_content(role, content, c.payloads))))
            can_open = False
        elif isinstance(t.atom, Msg):
            shape = c.shapes[t.atom.rule]
            role = shape.role or draw(st.sampled_from([r for r in generic_roles[state] if not planner.refused(r)]))
            if role == TOOL_RESULT_NAME:  # the name of the call it answers: the last one
                text = next(m.content for m in reversed(msgs) if m.role == TOOL_CALL)
            elif role == TOOL_DEF:  # one definition, or the whole list (json-list)
                most = 3 if c.payloads.defs == "json-list" else 1
                listed = draw(st.lists(_TOOL.filter(lambda t: _writable(c.payloads, t)), min_size=1, max_size=most))
                text = c.payloads.tool_texts(listed)[0]
                drawn[text] = listed[0]
            elif c.payloads.beside_calls and shape.content.transform == "drop" and msgs and msgs[-1].role == REASONING:
                text = ""  # the content beside calls is written as the reasoning: not both
            else:
                # A shape the template writes only for a message with no content (_empty) gets none.
                given = st.just("") if shape.content.transform == "empty" else content
                text = draw(_structural_content(role, given, c.payloads))
            msgs.append(Message(role=role, content=text))
            can_open = shape.content.transform not in READERS and role not in STRUCTURAL
        state = t.target
    if c.payloads.call_ids == "index":
        msgs = _indexed(draw, msgs)
    if c.spec.header.get("system-at") == "last-user":
        # The automaton is in the order of the text; the caller puts the system message first.
        systems = [m for m in msgs if m.role == "system"]
        msgs = systems + [m for m in msgs if m.role != "system"]
    tools: list[Any] | None = None
    if c.structural:  # the turns of reasoning, calls and tool definitions, folded as render takes them
        folded = collapse(msgs, c.payloads)
        msgs = folded.messages
        # The definitions as drawn (a definition written as TypeScript reads back as its text).
        tools = [drawn.get(t, t) if isinstance(t, str) else t for t in folded.tools] if folded.tools else None
    gen = allow_generation and _gen_reachable(f, state) and draw(st.booleans())
    options = {name: draw(st.sampled_from(values)) for name, values in f.option_values.items()}
    if tools:
        try:  # tools written before the last user message, when an earlier one equals it, are refused
            f.render(msgs, on_unsafe="allow", tools=tools, **options)
        except UnsupportedConversationError:
            tools = None
    if allow_open and can_open and not gen and msgs and msgs[-1].content.strip() and draw(st.integers(0, 3)) == 0:
        last = msgs[-1]
        opened = [*msgs[:-1], last.model_copy(update={"complete": False})]
        try:  # a turn written bare, where it would read as another, cannot be left open; nor one
            # that holds nothing once its flags are taken out (SmolLM3's /think)
            f.render(opened, on_unsafe="allow", tools=tools, **options)
        except RenderError:
            pass
        else:
            msgs = opened
    date = draw(st.one_of(st.none(), st.dates(datetime.date(1990, 1, 1), datetime.date(2099, 12, 31))))
    return Conversation(msgs, gen, options, date, tools)


_NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.\-]{0,24}", fullmatch=True)
_JSON_LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**6), 10**6), st.floats(allow_nan=False, allow_infinity=False), st.text()
)
_JSON = st.recursive(
    _JSON_LEAVES,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8,
)
_TOOL = st.builds(
    lambda name, desc, props: {
        "type": "function",
        "function": {
            "name": name,
            "description": desc,
            "parameters": {"type": "object", "properties": {k: {"type": "string"} for k in props}},
        },
    },
    _NAMES,
    st.text(max_size=30),
    st.lists(_NAMES, max_size=3),
)


def _structural_content(role: str, content: st.SearchStrategy[str], payloads: Payloads) -> st.SearchStrategy[str]:
    """What a structural turn holds, as the format writes it: a name, JSON arguments, a tool's JSON."""
    if role == TOOL_CALL:
        return st.one_of(_NAMES, content.filter(bool))
    if role == TOOL_ARGS:
        args = st.dictionaries(st.text(max_size=8), _JSON, max_size=4).map(tojson)
        return st.one_of(args, content) if payloads.args != "json" else args
    if role == TOOL_DEF:
        return _TOOL.filter(lambda t: _writable(payloads, t)).map(lambda t: payloads.tool_text(t, 0))
    if role in (TOOL_CALL_ID, TOOL_RESULT_ID):
        n = payloads.id_length
        return st.text(
            alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=n or 1, max_size=n or 12
        )
    return content


def _writable(payloads: Payloads, tool: Any) -> bool:
    """Whether the template writes this definition so that it reads back (see ``tool-defs: fields``)."""
    try:
        payloads.tool_text(tool, 0)
    except RenderError:
        return False
    return True


def _indexed(draw: st.DrawFn, msgs: list[Message]) -> list[Message]:
    """The ids of a format that writes running indexes (``call-ids: index``), as it writes them:
    each call's its index; each result's that of some call, or none (empty), but never one the
    template would skip."""
    calls = sum(1 for m in msgs if m.role == TOOL_CALL_ID)
    roles: list[str] = []
    contents: list[str] = []
    for m in msgs:
        text = m.content
        if m.role == TOOL_CALL_ID:
            text = str(sum(1 for r in roles if r == TOOL_CALL_ID))
        elif m.role == TOOL_RESULT_ID:
            fine = [
                t for t in [*(str(k) for k in range(calls)), ""] if not index_problems([*roles, m.role], [*contents, t])
            ]
            if not fine:
                reject()
            text = draw(st.sampled_from(fine))
        roles.append(m.role)
        contents.append(text)
    return [m if m.content == t else m.model_copy(update={"content": t}) for m, t in zip(msgs, contents, strict=True)]


def _distance_to_accept(f: Format) -> list[int | None]:
    dfa = f._c.dfa
    dist: list[int | None] = [0 if a else None for a in dfa.accepting]
    changed = True
    while changed:
        changed = False
        for s, trs in enumerate(dfa.transitions):
            for t in trs:
                d = dist[t.target]
                if d is not None and (dist[s] is None or d + 1 < dist[s]):  # type: ignore[operator]
                    dist[s] = d + 1
                    changed = True
    return dist


def _gen_reachable(f: Format, state: int) -> bool:
    """Whether literals then the generation prompt can follow ``state`` and end the text."""
    dfa = f._c.dfa
    seen, stack = {state}, [state]
    while stack:
        s = stack.pop()
        for t in dfa.transitions[s]:
            if isinstance(t.atom, Gen) and dfa.accepting[t.target]:
                return True
            if isinstance(t.atom, Lit) and t.target not in seen:
                seen.add(t.target)
                stack.append(t.target)
    return False


def check_format(fmt: str | Format, *, max_examples: int = 100) -> None:
    """Run the round-trip laws on a format, as the built-ins are tested: raises AssertionError.

    On Hypothesis-generated conversations (every role order the format takes; empty,
    whitespace, unicode and long contents; open turns; the generation prompt):
    ``parse(render(m)) == normalize(m)`` and ``render(parse(text)) == text``. Content the
    format refuses as unsafe is skipped (it has no round trip). Use it in a user's tests:

    >>> import chatgrammar as cg
    >>> check_format(cg.Format.from_spec({"name": "mine", "roles": {
    ...     "user": {"pre": "<u>", "post": "</u>"}, "assistant": {"pre": "<a>", "post": "</a>"}}}),
    ...     max_examples=20)
    """
    from hypothesis import HealthCheck, given, reject, settings

    from ._errors import UnsafeContentError

    f = get_format(fmt)

    @settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(conversations(f))
    def laws(conv: Conversation) -> None:
        try:
            text = f.render(conv.messages, **conv.render_args())
        except UnsafeContentError:
            reject()
        expected = f.normalize(conv.messages, **conv.render_args())
        back = f.parse(text)
        assert back == expected, f"{f.name}: parse(render(m)) != normalize(m)\n  text: {text!r}\n  got: {back}"
        again = f.render(back, **f.options_in(text))
        assert again == text, f"{f.name}: render(parse(text)) != text\n  text: {text!r}\n  again: {again!r}"

    laws()
