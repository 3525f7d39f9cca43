"""Format: one chat format, compiled from its grammar on first use."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

from ._compiler import ASSISTANT, Compiled, compile_spec
from ._errors import RenderError, UnsafeContentError, UnsupportedConversationError
from ._grammar import load_grammar, read_header
from ._larkparser import LarkParser
from ._message import Message, MessageLike, make_message, read_messages
from ._render import Plan, Planner
from ._scanner import Scanner

__all__ = ["Format"]


class Format:
    """A chat format: renders conversations to text and parses text back.

    Both directions come from one grammar (``grammar`` holds its source), so
    ``parse(render(m)) == normalize(m)`` for every conversation ``m`` the format
    can represent. Formats are built by the registry (``get_format``); compiling
    happens on first use and is safe to share between threads.
    """

    def __init__(self, source: str, *, origin: str = "<grammar>", import_paths: Sequence[str] = ()) -> None:
        self._header = read_header(source, origin)
        self.grammar: str = source
        self.origin = origin
        self._import_paths = list(import_paths)
        self._lock = threading.Lock()
        self._compiled: Compiled | None = None
        self._lark: LarkParser | None = None
        self._plans: dict[Any, Plan] = {}  # the planner's cache, read directly by render()
        # parse() calls this: compiling first, then the scanner's own method.
        self._scan_text: Callable[[str], list[Message] | None] = self._compile_and_scan

    # -- metadata --------------------------------------------------------------

    @property
    def name(self) -> str:
        """The canonical name (a lowercase slug)."""
        return str(self._header["name"])

    @property
    def aliases(self) -> list[str]:
        """Other names users type for this format (chat_format names, model ids...)."""
        return list(self._header.get("aliases", []))

    @property
    def models(self) -> list[str]:
        """Model ids known to use this format."""
        return list(self._header.get("models", []))

    @property
    def reference(self) -> str | None:
        """The file name of the Hugging Face chat template this format reproduces."""
        value = self._header.get("reference")
        return str(value) if value else None

    @property
    def description(self) -> str:
        return str(self._header.get("description", ""))

    @property
    def roles(self) -> list[str] | None:
        """The roles this format has; None when it takes any role."""
        roles = self._header.get("roles")
        return None if roles is None or "*" in roles else list(roles)

    @property
    def stop(self) -> list[str]:
        """Strings that end an assistant turn: stop generating at any of them."""
        return [t.strip() or t for t in self._c.spec.terminal_texts("stop")]

    @property
    def bos(self) -> str | None:
        """The BOS token the format writes, if any."""
        return self._terminal("bos")

    @property
    def eos(self) -> str | None:
        """The EOS token the format writes, if any."""
        return self._terminal("eos")

    @property
    def generation_prompt(self) -> str | None:
        """What ``add_generation_prompt=True`` writes after the last turn; None if the format has none."""
        c = self._c
        if c.gen_rule is None:
            return c.gen_text
        pieces = c.shapes[c.gen_rule].head_pieces
        return "".join(p if isinstance(p, str) else ASSISTANT for p in pieces)

    @property
    def tokens(self) -> list[str]:
        """The special tokens the format writes: refused anywhere in content."""
        return list(self._c.tokens)

    @property
    def markers(self) -> list[str]:
        """Plain-text markers (``### Response:``): refused at the start of a line in content."""
        return list(self._c.markers)

    @property
    def delimiters(self) -> list[str]:
        """The special tokens and line-start markers refused inside content."""
        c = self._c
        return list(dict.fromkeys(c.tokens + c.markers))

    def _terminal(self, key: str) -> str | None:
        name = self._header.get(key)
        return self._c.spec.terminals[name] if name else None

    def __repr__(self) -> str:
        return f"<Format {self.name!r}>"

    # -- compiled state --------------------------------------------------------

    @property
    def _c(self) -> Compiled:
        c = self._compiled
        if c is None:
            with self._lock:
                if self._compiled is None:
                    spec = load_grammar(self.grammar, origin=self.origin, import_paths=self._import_paths)
                    compiled = compile_spec(spec)
                    self._planner = Planner(compiled, self._plans)
                    self._scanner = Scanner(compiled)
                    self._scan_text = self._scanner.scan
                    self._compiled = compiled
                c = self._compiled
        return c

    @property
    def lark(self) -> LarkParser:
        """The format's Lark LALR parser (built on first use)."""
        parser = self._lark
        if parser is None:
            c = self._c
            with self._lock:
                if self._lark is None:
                    self._lark = LarkParser(c)
                parser = self._lark
        return parser

    # -- render ----------------------------------------------------------------

    def render(
        self,
        messages: Iterable[MessageLike],
        *,
        add_generation_prompt: bool = False,
        on_unsafe: Literal["raise", "allow"] = "raise",
    ) -> str:
        r"""The prompt text for ``messages``, exactly as the model's chat template writes it.

        A last message with ``complete=False`` is left open (a prefilled reply);
        ``add_generation_prompt=True`` opens the assistant's turn after the last message.
        Content holding the format's own delimiters raises UnsafeContentError unless
        ``on_unsafe="allow"``.

        >>> from chatgrammar import get_format
        >>> get_format("chatml").render([{"role": "user", "content": "Hi"}], add_generation_prompt=True)
        '<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n'
        """
        msgs: list[Any] = messages if type(messages) is list else list(messages)
        # The common case in few steps: complete messages of a shape seen before. The
        # plan's compiled code reads the contents itself, and declines anything unusual.
        if on_unsafe == "raise":
            try:
                roles = tuple([m["role"] for m in msgs if len(m) == 2])
                models = False
            except (KeyError, TypeError):
                roles, models = _model_roles(msgs), True
            plan = self._plans.get((roles, False, add_generation_prompt))
            if plan is not None and len(roles) == len(msgs):
                try:
                    text = plan.fast_models(msgs) if models else plan.fast(msgs)
                except KeyError:
                    text = None
                if text is not None:
                    return text
        r = self._prepare(msgs, add_generation_prompt)
        if on_unsafe == "allow":
            return r.plan.build(r.roles, r.contents)
        if on_unsafe != "raise":
            raise ValueError(f"on_unsafe must be 'raise' or 'allow', not {on_unsafe!r}")
        return self._checked(r)

    def normalize(self, messages: Iterable[MessageLike], *, add_generation_prompt: bool = False) -> list[Message]:
        r"""The messages that ``parse(render(messages))`` gives back.

        This is where a format's losses show: content the template trims, an
        empty open turn a format cannot mark, the generation prompt as an open
        assistant message.

        >>> from chatgrammar import get_format
        >>> get_format("llama2").normalize([{"role": "user", "content": " Hi\n"}])
        [Message(role='user', content='Hi', complete=True)]
        """
        return self._prepare(messages, add_generation_prompt).expected()

    def _prepare(self, messages: Iterable[MessageLike], gen: bool) -> _Rendering:
        roles, contents, open_last = read_messages(messages)
        if open_last and gen:
            raise RenderError(
                "the last message is open (complete=False) and add_generation_prompt=True asks "
                "for a new assistant turn; use one or the other",
                index=len(roles) - 1,
                format=self.name,
            )
        return self._plan(roles, contents, open_last, gen)

    def _plan(self, roles: list[str], contents: list[str], open_last: bool, gen: bool) -> _Rendering:
        c = self._c
        if open_last and not contents[-1]:
            # An open turn with no content is the generation prompt.
            if roles[-1] != ASSISTANT:
                raise RenderError(
                    f"message {len(roles) - 1} is an open {roles[-1]!r} turn with no content; "
                    "only the assistant's turn can be opened empty (as the generation prompt)",
                    index=len(roles) - 1,
                    format=self.name,
                )
            del roles[-1], contents[-1]
            open_last, gen = False, True
        if gen and not c.has_gen:
            raise UnsupportedConversationError(
                f"{self.name} has no generation prompt", index=len(roles) - 1 if roles else None, format=self.name
            )
        plan = self._planner.plan(roles, open_last, gen)
        given = list(contents)
        for i, fn in plan.transforms:
            contents[i] = fn(contents[i])
        if open_last and not contents[-1]:  # only whitespace, which the template trims away
            return self._plan(roles, contents, True, False)
        n = len(roles)
        if gen:  # what a generation prompt written from a message rule is written for
            roles.append(ASSISTANT)
            contents.append("")
        return _Rendering(plan, roles, contents, n, open_last, gen and c.gen_text != "", given)

    def _checked(self, r: _Rendering) -> str:
        plan, contents = r.plan, r.contents
        guards = self._c.guards
        suspect = any(not guards[id(s)].passes(contents[i]) for i, s in zip(plan.contents, plan.slots, strict=True))
        if r.open_last and plan.open_check is not None and not plan.open_check(contents[r.n - 1]):
            suspect = True
        text = plan.build(r.roles, contents)
        if suspect and self._scanner.scan(text) != r.expected():
            raise self._unsafe(r)
        return text

    def _unsafe(self, r: _Rendering) -> UnsafeContentError:
        rules = self._c.rules
        for i, slot in zip(r.plan.contents, r.plan.slots, strict=True):
            rule = rules[id(slot)]
            found = _find_delimiter(r.contents[i], rule.anywhere, rule.at_start)
            if found:
                delim, offset = found
                offset += r.given[i].find(r.contents[i]) if r.contents[i] else 0  # back to the caller's text
                return UnsafeContentError(
                    f"message {i} ({r.roles[i]!r}) contains {delim!r} at offset {offset}, which is a "
                    f"delimiter of {self.name}: the model would read a different conversation. "
                    "Remove or escape it, or pass on_unsafe='allow' to render it anyway.",
                    index=i,
                    offset=offset,
                    delimiter=delim,
                    format=self.name,
                )
        i = r.plan.contents[-1]
        return UnsafeContentError(
            f"message {i} ({r.roles[i]!r}) ends with text that joins with what {self.name} writes "
            "after it, so the prompt would not read back as the same conversation. Change the end "
            "of the message, or pass on_unsafe='allow' to render it anyway.",
            index=i,
            offset=len(r.given[i]),
            delimiter="",
            format=self.name,
        )

    # -- parse -----------------------------------------------------------------

    def parse(self, text: str) -> list[Message]:
        r"""Read a prompt or transcript back into messages.

        A text that ends inside a turn (a generation prompt, a prefilled reply)
        gives that turn last, with ``complete=False``. Text that is not a
        document of the format raises ParseError with the line, column and what
        was expected.

        >>> from chatgrammar import get_format
        >>> get_format("chatml").parse("<|im_start|>user\nHi<|im_end|>\n")
        [Message(role='user', content='Hi', complete=True)]
        """
        got = self._scan_text(text)
        if got is not None:
            return got
        if not isinstance(text, str):
            raise TypeError(f"parse() takes a str, not {type(text).__name__}")
        return self.lark.parse(text)

    def _compile_and_scan(self, text: str) -> list[Message] | None:
        self._c  # noqa: B018 - compiling replaces self._scan_text with the scanner's method
        return self._scan_text(text)


class _Rendering:
    """A conversation ready to write: its plan, roles and (trimmed) contents."""

    __slots__ = ("contents", "gen_marker", "given", "n", "open_last", "plan", "roles")

    def __init__(
        self,
        plan: Plan,
        roles: list[str],
        contents: list[str],
        n: int,
        open_last: bool,
        gen_marker: bool,
        given: list[str],
    ) -> None:
        self.given = given  # the contents as the caller gave them, before trimming
        self.plan = plan
        self.roles = roles
        self.contents = contents
        self.n = n  # the caller's messages (a generation prompt adds an entry after them)
        self.open_last = open_last
        self.gen_marker = gen_marker  # parsing the text ends with the open assistant turn

    def expected(self) -> list[Message]:
        """What parsing the written text must give back."""
        n = self.n
        out = [make_message(self.roles[i], self.contents[i], True) for i in range(n)]
        if self.open_last:
            out[-1] = make_message(self.roles[n - 1], self.contents[n - 1], False)
        if self.gen_marker:
            out.append(make_message(ASSISTANT, "", False))
        return out


def _find_delimiter(text: str, anywhere: list[str], at_start: list[str]) -> tuple[str, int] | None:
    """The first refused string in ``text``: its delimiter (the string without the
    whitespace around it) and that delimiter's offset."""
    found: list[tuple[int, str]] = []
    for d in at_start:
        if text.startswith(d):
            core = d.strip() or d
            found.append((d.find(core), core))
    for d in anywhere:
        k = text.find(d)
        if k != -1:
            core = d.strip() or d
            found.append((k + d.find(core), core))
    if not found:
        return None
    offset, core = min(found)
    return core, offset


def _model_roles(msgs: list[Any]) -> tuple[str, ...]:
    """The roles of a list of Message objects; () for anything else."""
    try:
        return tuple([m.role for m in msgs if type(m) is Message])
    except TypeError:  # pragma: no cover
        return ()
