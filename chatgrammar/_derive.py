"""A format derived from a real chat template, by probing it.

The template is rendered on probe conversations whose contents are sentinels
(``Zqx0Qz``...). Where each sentinel lands tells what the template writes around a
message of each role; which probes it refuses tells the role order; padded sentinels
tell whether it trims. That is fitted to a :class:`~chatgrammar._spec.FlatSpec` (each
message ``pre + content + post`` of its role, a prefix, a suffix, a generation prompt,
a default system message), compiled to a grammar, and then **verified**: the format and
the template render generated conversations (every role order, empty, whitespace,
unicode and long contents, with and without the generation prompt) and must agree byte
for byte, refusals included, and the format must read the template's text back.

A template outside that family (a system message merged into the first user turn, the
last turn written differently, content the template rewrites) is not captured: the
error says which probe diverged and how.
"""

from __future__ import annotations

import datetime
import itertools
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from lark.exceptions import LarkError

from ._errors import ChatGrammarError, ParseError, RenderError, UnsafeContentError
from ._format import Format
from ._jinja import TemplateRaised, compile_template
from ._message import Message
from ._reader import _article
from ._registry import grammar_dir
from ._spec import FlatSpec, Turn, _tokens_in, grammar_source

__all__ = ["Capture", "TemplateCaptureError", "capture", "from_template", "match_template"]

ROLES = ("system", "user", "assistant")
ODD_ROLES = ("zqrole", "tool")
_DAY_A = datetime.datetime(2024, 7, 26, 12, 0, 0)
_DAY_B = datetime.datetime(2025, 1, 3, 8, 30, 0)
_PAD_LEFT = "  \n\t "
_PAD_RIGHT = " \t\n  "


def _sentinel(i: int) -> str:
    return f"Zqx{i}Qz"


class TemplateCaptureError(ChatGrammarError):
    """A chat template chatgrammar could not turn into a format that renders it byte-exactly.

    ``probe`` names the probe that diverged and ``reason`` says how; ``messages``,
    ``expected`` (the template's text) and ``got`` (the derived format's) show it, when it
    was a rendered conversation.
    """

    def __init__(
        self,
        probe: str,
        message: str,
        *,
        messages: list[dict[str, Any]] | None = None,
        expected: str | None = None,
        got: str | None = None,
        headline: str = "the template was not captured",
    ) -> None:
        self.probe = probe
        self.reason = message
        self.messages = messages
        self.expected = expected
        self.got = got
        detail = ""
        if messages is not None:
            shown = [(m["role"], m["content"][:40]) for m in messages]
            detail += f"\n  conversation: {shown}"
        if expected is not None and got is not None:
            at = next(
                (i for i, (a, b) in enumerate(zip(expected, got, strict=False)) if a != b), min(len(expected), len(got))
            )
            detail += (
                f"\n  first difference at offset {at}:"
                f"\n    template: {expected[max(0, at - 30) : at + 40]!r}"
                f"\n    derived:  {got[max(0, at - 30) : at + 40]!r}"
            )
        elif expected is not None:
            detail += f"\n  template: {expected[:120]!r}"
        elif got is not None:
            detail += f"\n  derived: {got[:120]!r}"
        super().__init__(f"{headline}: {probe}: {message}{detail}")


@dataclass
class Capture:
    """What deriving a format found: the spec, the grammar, and how it was checked."""

    spec: FlatSpec
    format: Format
    probes: int = 0  # template renders made to derive the spec
    verified: int = 0  # generated conversations on which the format and the template agreed
    refusals: int = 0  # of those, conversations both refused
    refused_roles: list[str] = field(default_factory=list)  # roles the template writes its own way: refused
    dropped: list[list[str]] = field(default_factory=list)  # role sequences the template loses a message of
    notes: list[str] = field(default_factory=list)


class _Prober:
    def __init__(self, render: Callable[..., str]) -> None:
        self.render = render
        self.count = 0
        self.cache: dict[tuple[Any, ...], str | TemplateRaised] = {}

    def run(
        self, roles: Sequence[str], contents: Sequence[str] | None = None, gen: bool = False
    ) -> str | TemplateRaised:
        contents = [_sentinel(i) for i in range(len(roles))] if contents is None else contents
        key = (tuple(roles), tuple(contents), gen)
        if key not in self.cache:
            self.count += 1
            msgs = [{"role": r, "content": c} for r, c in zip(roles, contents, strict=True)]
            try:
                self.cache[key] = self.render(msgs, add_generation_prompt=gen)
            except TemplateRaised as e:
                self.cache[key] = e
        return self.cache[key]

    def gaps(self, roles: Sequence[str], gen: bool = False, contents: Sequence[str] | None = None) -> list[str]:
        """The texts between the sentinels: one more than the messages.

        ``contents`` each hold their sentinel (padded with whitespace, say): what the
        template kept of the padding is then part of the gaps.
        """
        text = self.run(roles, contents, gen)
        probe = f"render {list(roles)}" + (" with the generation prompt" if gen else "")
        if contents is not None:
            probe += " with padded content"
        if isinstance(text, TemplateRaised):
            raise TemplateCaptureError(probe, f"the template raised {text}")
        out, pos = [], 0
        for i in range(len(roles)):
            mark = _sentinel(i)
            if text.count(mark) != 1:
                what = "does not write" if mark not in text else "writes more than once"
                raise TemplateCaptureError(
                    probe,
                    f"the template {what} the content of message {i} ({roles[i]}), so its text cannot be read back",
                    expected=text,
                )
            at = text.find(mark, pos)
            if at < 0:
                raise TemplateCaptureError(probe, "the template writes the messages out of order", expected=text)
            out.append(text[pos:at])
            pos = at + len(mark)
        out.append(text[pos:])
        return out


def _orders(roles: Sequence[str]) -> dict[str, Callable[[tuple[str, ...]], bool]]:
    def any_(seq: tuple[str, ...]) -> bool:
        return all(r in roles for r in seq)

    def system_first(seq: tuple[str, ...]) -> bool:
        return any_(seq) and "system" not in seq[1:]

    def rest(seq: tuple[str, ...]) -> tuple[str, ...]:
        return seq[1:] if seq[:1] == ("system",) and "system" in roles else seq

    def alternate(seq: tuple[str, ...]) -> bool:
        return all(r == ("user", "assistant")[i % 2] for i, r in enumerate(rest(seq)))

    def user_even(seq: tuple[str, ...]) -> bool:
        return any_(seq) and all((r == "user") == (i % 2 == 0) for i, r in enumerate(seq))

    def system_first_user_even(seq: tuple[str, ...]) -> bool:
        return any_(seq) and all((r == "user") == (i % 2 == 0) for i, r in enumerate(rest(seq)))

    return {
        "any": any_,
        "system-first": system_first,
        "alternate": alternate,
        "system-first-user-even": system_first_user_even,
        "user-even": user_even,
    }


def capture(
    source: str,
    *,
    bos_token: str = "",
    eos_token: str = "",
    name: str = "custom",
    special_tokens: Sequence[str] = (),
    conversations: int = 300,
    seed: int = 0,
    **template_kwargs: Any,
) -> Capture:
    """Derive a format from a template and verify it; see :func:`from_template`."""
    render_a = compile_template(source, bos_token=bos_token, eos_token=eos_token, now=_DAY_A, **template_kwargs)
    render_b = compile_template(source, bos_token=bos_token, eos_token=eos_token, now=_DAY_B, **template_kwargs)
    spec, refused_roles, probes, dropped = derive_spec(
        render_a, render_b, bos_token=bos_token, eos_token=eos_token, name=name
    )
    texts = [spec.bos, spec.default_system or "", *spec.literals()]
    if special_tokens:
        # The tokenizer's special tokens the template writes, and what is shaped like one (a
        # tokenizer_config may list only BOS and EOS): content holding either is refused.
        written = [t for t in dict.fromkeys(special_tokens) if t and any(t in x for x in texts)]
        spec.tokens = list(dict.fromkeys([*written, *_tokens_in(texts)]))
    fmt = Format(grammar_source(spec), origin=f"<template {name}>", import_paths=[str(grammar_dir())])
    try:
        fmt._c  # noqa: B018
        fmt.render([{"role": "user", "content": "x"}])
    except (ChatGrammarError, LarkError) as e:  # Lark: refusing the generated grammar (an empty terminal)
        raise TemplateCaptureError("compiling the derived grammar", f"{type(e).__name__}: {e}") from None
    result = Capture(spec=spec, format=fmt, probes=probes, refused_roles=refused_roles, dropped=dropped)
    if dropped:
        result.notes.append(spec.description)
    if refused_roles:
        result.notes.append(
            f"the template writes the role{'s' if len(refused_roles) > 1 else ''} {', '.join(refused_roles)} "
            "in a way of its own (not as other roles): the derived format writes them as any other role, "
            "which the template does not; do not use them"
        )
    roles = [r for r in ROLES if r in spec.roles or spec.any_role is not None]
    _verify(result, render_a, roles, conversations, seed)
    return result


def derive_spec(
    render_a: Callable[..., str],
    render_b: Callable[..., str],
    *,
    bos_token: str = "",
    eos_token: str = "",
    name: str = "custom",
) -> tuple[FlatSpec, list[str], int, list[list[str]]]:
    """The FlatSpec a renderer follows, found by probing it (``render_b`` renders on another day).

    Returns the spec, the other roles it writes in a way of its own, the number of renders made,
    and role sequences of which the template leaves a message out (the format refuses them).
    """
    p = _Prober(render_a)

    # -- the role order -------------------------------------------------------------------------
    seqs = [()] + [s for n in (1, 2, 3) for s in itertools.product(ROLES, repeat=n)]
    rendered = {s: p.run(s) for s in seqs}
    raised = {s: isinstance(rendered[s], TemplateRaised) for s in seqs}
    # A conversation of which the template leaves a message out (Phi-3 Mini writes no system
    # message; Command R only the first) is refused by the derived format rather than lost.
    dropped = [
        list(s) for s in seqs if not raised[s] and not all(_sentinel(i) in str(rendered[s]) for i in range(len(s)))
    ]
    accepted = {s: not raised[s] and list(s) not in dropped for s in seqs}
    if not any(accepted[s] for s in seqs if s):
        first = p.run(("user",))
        raise TemplateCaptureError("render ['user']", f"the template raised {first}")
    needs_message = not accepted[()]
    # A role the template never accepts anywhere is not one of its roles.
    roles = [r for r in ROLES if any(accepted[s] for s in seqs if r in s)]
    order = order_error = None
    for candidate, accepts in _orders(roles).items():
        if all(accepted[s] == (accepts(s) and (bool(s) or not needs_message)) for s in seqs):
            order = candidate
            break
    if order is None:
        ok = [list(s) for s in seqs if accepted[s]][:4]
        refused = [list(s) for s in seqs if s and not accepted[s]][:4]
        raise TemplateCaptureError(
            "role orders",
            f"the conversations the template refuses follow none of the orders chatgrammar derives "
            f"(any; system first; user/assistant alternating; user at even places): it renders {ok}... "
            f"and refuses {refused}...",
        )
    refusals = [rendered[s] for s in seqs if s and raised[s]]
    if refusals:
        order_error = str(refusals[0])

    # -- the date -------------------------------------------------------------------------------
    probe_b = _Prober(render_b)
    for s in seqs[:13]:
        if any(_same(p.run(s, gen=g)) != _same(probe_b.run(s, gen=g)) for g in (False, True)):
            raise TemplateCaptureError(
                f"render {list(s)} on two dates",
                "the template writes today's date (strftime_now); a derived format cannot; write a grammar "
                "with a date slot (docs/grammars.md: 'date')",
                expected=str(p.run(s)),
                got=str(probe_b.run(s)),
            )

    ok_seqs = [s for s in seqs if s and accepted[s]]

    # -- the text after each role's content, when it is the last -----------------------------------
    last: dict[str, str] = {}
    for s in ok_seqs:
        tail = p.gaps(s)[-1]
        if last.setdefault(s[-1], tail) != tail:
            raise TemplateCaptureError(
                f"render {list(s)}",
                f"after the last message ({s[-1]}) the template writes {tail!r} here but {last[s[-1]]!r} elsewhere: "
                "what ends a message depends on the messages before it",
            )
    spec = _fit(p, ok_seqs, last, roles)
    spec.name = name
    spec.order = order
    spec.needs_message = needs_message
    spec.order_error = order_error if order != "any" or needs_message else None
    spec.bos = bos_token if bos_token and (spec.initial.startswith(bos_token)) else ""
    if spec.bos:
        spec.initial = spec.initial[len(bos_token) :]
    spec.eos = eos_token if eos_token and any(eos_token in t.post for t in spec.roles.values()) else ""

    # -- empty conversation and the generation prompt ---------------------------------------------
    _fit_generation(p, spec, ok_seqs)
    if not needs_message:
        empty, empty_gen = p.run(()), p.run((), gen=True)
        assert isinstance(empty, str)
        if isinstance(empty_gen, TemplateRaised):
            spec.empty_generation = spec.generation_when_empty_writes_nothing = False
            empty_gen = "\x00refused"
        head = spec.bos + spec.initial
        default = _default_block(spec)
        gen = spec.generation or ""
        if empty == "":
            spec.empty_renders_nothing = True
            spec.empty_generation = empty_gen == gen
            if empty_gen not in ("", gen, "\x00refused"):
                raise TemplateCaptureError("render [] with the generation prompt", f"the template writes {empty_gen!r}")
        else:
            if default and empty == head + default + spec.final:
                spec.default_system_if = "not-first-or-empty"
            elif empty != head + spec.final:
                raise TemplateCaptureError(
                    "render []",
                    f"for an empty conversation the template writes {empty!r}, "
                    f"not {head + spec.final!r} (its start and end)",
                )
            body = default if spec.default_system_if != "not-first" else ""
            ends = [head + body + gen + ("" if spec.final_without_generation else spec.final), empty, "\x00refused"]
            if empty_gen not in ends:
                raise TemplateCaptureError(
                    "render [] with the generation prompt", f"the template writes {empty_gen!r}, not {ends[0]!r}"
                )
            spec.empty_generation = empty_gen == ends[0] and bool(gen or not spec.final_without_generation)

    # -- trimming ---------------------------------------------------------------------------------
    for role in roles:
        seq = min((s for s in ok_seqs if role in s), key=len)
        i = seq.index(role)
        plain = p.gaps(seq)
        contents = [_sentinel(k) for k in range(len(seq))]
        contents[i] = _PAD_LEFT + contents[i] + _PAD_RIGHT
        padded = p.gaps(seq, contents=contents)
        before, after = padded[i], padded[i + 1]
        left = before == plain[i] + _PAD_LEFT
        right = after == _PAD_RIGHT + plain[i + 1]
        left_trim = before == plain[i]
        right_trim = after == plain[i + 1]
        if not (left or left_trim) or not (right or right_trim):
            raise TemplateCaptureError(
                f"render {list(seq)} with message {i} padded with whitespace",
                "the template changes the whitespace around the content in a way other than trimming it",
                expected=str(p.run(seq, contents)),
            )
        trim = {(True, True): "strip", (True, False): "lstrip", (False, True): "rstrip"}.get(
            (left_trim, right_trim), ""
        )
        spec.roles[role].trim = trim

    # -- empty contents -----------------------------------------------------------------------------
    for role in roles:
        seq = min((s for s in ok_seqs if role in s), key=len)
        i = seq.index(role)
        plain = p.gaps(seq)
        contents = [_sentinel(k) for k in range(len(seq))]
        contents[i] = ""
        text = p.run(seq, contents)
        want = "".join(g + c for g, c in zip(plain, [*contents, ""], strict=True))
        if text != want:
            raise TemplateCaptureError(
                f"render {list(seq)} with message {i} empty",
                f"the template writes {_article(role)} {role} message with no content differently from its "
                "opening and closing",
                expected=str(text),
                got=want,
            )

    # -- other roles ------------------------------------------------------------------------------
    refused_roles: list[str] = []
    if order == "any":
        _fit_other_roles(p, spec)
        if spec.any_role is not None:
            for odd in ODD_ROLES[1:]:
                if not _follows(p, spec, odd):
                    refused_roles.append(odd)

    spec.description = "derived from a chat template, by probing it"
    if dropped:
        spec.description = (
            "derived from a chat template that leaves messages out of some conversations (of "
            f"{dropped[0]}, say); this format refuses those conversations instead"
        )
    return spec, refused_roles, p.count + probe_b.count, dropped


def _same(x: str | TemplateRaised) -> tuple[bool, str]:
    return (isinstance(x, TemplateRaised), str(x))


def _fit(p: _Prober, ok_seqs: list[tuple[str, ...]], last: dict[str, str], roles: list[str]) -> FlatSpec:
    """pre/post of every role, the prefix and the suffix, from the gaps of the probes."""
    common = _common_suffix(list(last.values()))
    failure = ""
    for k in range(len(common) + 1):
        final = common[len(common) - k :] if k else ""
        post = {r: t[: len(t) - k] for r, t in last.items()}
        pre: dict[str, str] = {}
        ok = True
        for s in ok_seqs:
            g = p.gaps(s)
            for i in range(1, len(s)):
                mid, before = g[i], s[i - 1]
                if not mid.startswith(post[before]):
                    ok, failure = False, f"between {before} and {s[i]} the template writes {mid!r}"
                    break
                if pre.setdefault(s[i], mid[len(post[before]) :]) != mid[len(post[before]) :]:
                    ok, failure = False, f"before {_article(s[i])} {s[i]} message the template writes different texts"
                    break
            if not ok:
                break
        if not ok:
            continue
        # The prefix: what a first message has before its pre.
        firsts = {s[0]: p.gaps(s)[0] for s in ok_seqs}
        heads = {r: g[: len(g) - len(pre[r])] for r, g in firsts.items() if r in pre and g.endswith(pre[r])}
        if not heads and firsts:
            heads = {r: "" for r in firsts}
        initial = min(heads.values(), key=len) if heads else ""
        default_system: str | None = None
        spec = FlatSpec(name="custom", initial=initial, final=final)
        for r in roles:
            first = firsts.get(r)
            if r not in pre:
                if first is None or not first.startswith(initial):
                    ok, failure = (
                        False,
                        f"{_article(r)} {r} message is written only first, and its opening is not found",
                    )
                    break
                pre[r] = first[len(initial) :]
            spec.roles[r] = Turn(pre[r], post.get(r, ""))
        if not ok:
            continue
        for r, head in heads.items():
            if head == initial:
                continue
            block = head[len(initial) :] if head.startswith(initial) else None
            sys_turn = spec.roles.get("system")
            if (
                r != "system"
                and block is not None
                and sys_turn
                and block.startswith(sys_turn.pre)
                and block.endswith(sys_turn.post)
            ):
                text = block[len(sys_turn.pre) : len(block) - len(sys_turn.post)]
                if default_system in (None, text):
                    default_system = text
                    continue
            ok, failure = False, f"before a first {r} message the template writes {firsts[r]!r}"
            break
        if not ok:
            continue
        spec.default_system = default_system
        return spec
    raise TemplateCaptureError(
        "splitting the texts between messages", f"no per-role opening and closing fits: {failure}"
    )


def _default_block(spec: FlatSpec) -> str:
    if spec.default_system is None:
        return ""
    turn = spec.roles["system"]
    return turn.pre + spec.default_system + turn.post


def _fit_generation(p: _Prober, spec: FlatSpec, ok_seqs: list[tuple[str, ...]]) -> None:
    found: dict[str, str] = {}
    for s in ok_seqs:
        plain, gen = p.gaps(s)[-1], p.gaps(s, gen=True)[-1]
        post = spec.roles[s[-1]].post
        if spec.final and gen.startswith(post) and not gen.endswith(spec.final):
            spec.final_without_generation = True  # Phi-3.5: the EOS only when no answer is asked for
        final = "" if spec.final_without_generation else spec.final
        if not gen.startswith(post) or not gen.endswith(final):
            raise TemplateCaptureError(
                f"render {list(s)} with the generation prompt",
                f"the text after the last message is {gen!r}, without {plain!r}'s parts around it",
            )
        g = gen[len(post) : len(gen) - len(final)]
        if found.setdefault(s[-1], g) != g:
            raise TemplateCaptureError(
                f"render {list(s)} with the generation prompt", "the generation prompt depends on the messages before"
            )
    values = set(found.values())
    if len(values) > 1:
        raise TemplateCaptureError(
            "render with the generation prompt",
            "the generation prompt depends on the last message's role: "
            + ", ".join(f"after {r}: {g!r}" for r, g in found.items()),
        )
    spec.generation = values.pop() if values else ""


def _fit_other_roles(p: _Prober, spec: FlatSpec) -> None:
    """A role the template writes as it is (``'<|im_start|>' + role``): one rule for every role."""
    odd = ODD_ROLES[0]
    seq = ("user", odd)
    text = p.run(seq)
    if isinstance(text, TemplateRaised) or isinstance(p.run((odd,)), TemplateRaised):
        return
    try:
        g = p.gaps(seq)
    except TemplateCaptureError:
        return  # the template writes other roles in some other way: the derived format refuses them
    post_user = spec.roles["user"].post
    if not g[1].startswith(post_user) or g[1][len(post_user) :].count(odd) != 1:
        return
    pattern = g[1][len(post_user) :].replace(odd, "{role}")
    end = g[2][: len(g[2]) - len(spec.final)] if spec.final and g[2].endswith(spec.final) else g[2]
    any_role = Turn(pattern, end, spec.roles["user"].trim)
    spec.any_role = any_role
    for role in list(spec.roles):
        turn = spec.roles[role]
        if turn.pre == pattern.replace("{role}", role) and turn.post == end and turn.trim == any_role.trim:
            if not (role == "system" and spec.default_system is not None):
                del spec.roles[role]


def _follows(p: _Prober, spec: FlatSpec, role: str) -> bool:
    """Whether the template writes this role as its pattern for any role says."""
    assert spec.any_role is not None
    try:
        g = p.gaps(("user", role))
    except TemplateCaptureError:
        return False
    user = spec.roles.get("user", spec.any_role)
    post = user.post
    return g[1] == post + spec.any_role.pre.replace("{role}", role)


def _common_suffix(texts: list[str]) -> str:
    if not texts:
        return ""
    first = min(texts, key=len)
    k = 0
    while k < len(first) and all(t[len(t) - k - 1] == first[len(first) - k - 1] for t in texts):
        k += 1
    return first[len(first) - k :] if k else ""


_CONTENTS = [
    "Hi",
    "",
    " ",
    "\n",
    "  padded both sides  ",
    "two\nlines\n",
    "\n\nleading newlines",
    "ünïcødé — 你好 🙂",
    "tab\there",
    "a < b > c & d",
    "{{ not jinja }} {% raw %}",
    "x" * 3000,
    "trailing spaces   ",
    "'quotes' \"double\"",
]


def _conversations(
    spec: FlatSpec, roles: list[str], n: int, seed: int, *, mixed: bool
) -> Iterator[tuple[int, list[dict[str, Any]], bool]]:
    """Seeded conversations: role orders the spec takes (every fourth one any order), contents
    from _CONTENTS (``mixed``: sometimes two of them joined), the generation prompt or not."""
    rng = random.Random(seed)
    for k in range(n):
        length = rng.choice([0, 1, 1, 2, 2, 3, 3, 4, 5, 6, 8])
        seq = [rng.choice(roles) for _ in range(length)] if k % 4 == 3 else _walk(spec, roles, length, rng)
        msgs = [
            {
                "role": r,
                "content": rng.choice(_CONTENTS) + (rng.choice(_CONTENTS) if mixed and rng.random() < 0.3 else ""),
            }
            for r in seq
        ]
        yield k, msgs, rng.random() < 0.5


def _verify(result: Capture, render: Callable[..., str], roles: list[str], n: int, seed: int) -> None:
    fmt = result.format
    all_roles = [*roles, *([r for r in ODD_ROLES if r not in result.refused_roles] if result.spec.any_role else [])]
    for k, msgs, gen in _conversations(result.spec, all_roles, n, seed, mixed=True):
        try:
            expected: str | None = render(msgs, add_generation_prompt=gen)
        except TemplateRaised:
            expected = None
        try:
            got: str | None = fmt.render(msgs, add_generation_prompt=gen)
        except UnsafeContentError:
            continue
        except RenderError:
            got = None
        probe = f"conversation {k} (seed {seed})" + (" with the generation prompt" if gen else "")
        if expected is None and got is not None:
            raise TemplateCaptureError(
                probe, "the template refuses it and the derived format writes it", messages=msgs, got=got
            )
        if expected is not None and got is None and result.dropped and _drops(render, msgs, gen):
            result.refusals += 1  # the template leaves a message out: refused instead (declared)
            continue
        if expected is not None and got is None:
            raise TemplateCaptureError(
                probe, "the template writes it and the derived format refuses it", messages=msgs, expected=expected
            )
        if expected != got:
            raise TemplateCaptureError(probe, "the texts differ", messages=msgs, expected=expected, got=got)
        result.verified += 1
        if expected is None:
            result.refusals += 1
            continue
        assert expected is not None
        try:
            back = fmt.parse(expected)
        except ParseError as e:
            raise TemplateCaptureError(
                probe, f"the derived format cannot read the template's text: {e}", messages=msgs
            ) from None
        want = fmt.normalize(msgs, add_generation_prompt=gen)
        if back != want:
            raise TemplateCaptureError(
                probe,
                f"the derived format reads the template's text back as {_short(back)}, not {_short(want)}",
                messages=msgs,
            )


def _drops(render: Callable[..., str], msgs: list[dict[str, Any]], gen: bool) -> bool:
    """Whether the template leaves out one of these messages (rendered with sentinel contents)."""
    probe = _Prober(render)
    text = probe.run([m["role"] for m in msgs], gen=gen)
    return not isinstance(text, TemplateRaised) and not all(_sentinel(i) in text for i in range(len(msgs)))


def _verify_pair(
    want: Callable[..., str],
    have: Callable[..., str],
    roles: list[str],
    spec: FlatSpec,
    n: int,
    seed: int,
    what: str,
    *,
    refusals_declared: bool = False,
    headline: str = "the template was not captured",
) -> int:
    """Render generated conversations with both; they must agree (texts, or both refusing).

    ``refusals_declared``: ``want`` (a built-in format) may refuse what ``have`` writes (its
    declared refusals: a conversation it could not read back). Returns how many it refused so.
    """
    skipped = 0
    for k, msgs, gen in _conversations(spec, roles, n, seed, mixed=False):
        texts: list[str | None] = []
        for render in (want, have):
            try:
                texts.append(render(msgs, add_generation_prompt=gen))
            except TemplateRaised:
                texts.append(None)
        if texts[0] is None and texts[1] is not None and refusals_declared:
            skipped += 1
            continue
        if texts[0] != texts[1]:
            raise TemplateCaptureError(
                f"{what}: conversation {k} (seed {seed})" + (" with the generation prompt" if gen else ""),
                "the texts differ" if None not in texts else "one refuses it and the other writes it",
                messages=msgs,
                expected=texts[0] if texts[0] is not None else "(refused)",
                got=texts[1] if texts[1] is not None else "(refused)",
                headline=headline,
            )
    return skipped


def _short(msgs: list[Message]) -> str:
    return str([(m.role, m.content[:30]) for m in msgs])


def _walk(spec: FlatSpec, roles: list[str], length: int, rng: random.Random) -> list[str]:
    if spec.order == "alternate":
        seq = ["system"] if "system" in roles and rng.random() < 0.5 else []
        seq += [("user", "assistant")[i % 2] for i in range(length)]
        return seq
    if spec.order == "system-first":
        head = ["system"] if "system" in roles and rng.random() < 0.5 else []
        return head + [rng.choice([r for r in roles if r != "system"]) for _ in range(length)]
    if spec.order in ("user-even", "system-first-user-even"):
        head = ["system"] if spec.order != "user-even" and "system" in roles and rng.random() < 0.5 else []
        others = [r for r in roles if r != "user"]
        return head + ["user" if i % 2 == 0 else rng.choice(others) for i in range(length)]
    return [rng.choice(roles) for _ in range(length)]


def from_template(
    source: str,
    *,
    bos_token: str = "",
    eos_token: str = "",
    name: str = "custom",
    special_tokens: Sequence[str] = (),
    conversations: int = 300,
    seed: int = 0,
    **template_kwargs: Any,
) -> Format:
    """A format derived from a Hugging Face Jinja chat template, verified against it.

    The template is probed (rendered on sentinel contents and role sequences) to find
    what it writes around each role's content, its role order, trimming, prefix,
    default system message and generation prompt; the grammar built from that is
    compiled, then checked on ``conversations`` generated conversations: the format
    must render what the template renders (or refuse what it refuses), and read the
    template's text back. ``special_tokens`` (a tokenizer's) are refused in content;
    without them, texts shaped like tokens (``<|...|>``, ``<...>``, ``[INST]``) are.

    >>> tpl = ("{% for m in messages %}<|{{ m.role }}|>\\n{{ m.content | trim }}</s>\\n{% endfor %}"
    ...        "{% if add_generation_prompt %}<|assistant|>\\n{% endif %}")
    >>> fmt = from_template(tpl, eos_token="</s>", name="mini")
    >>> fmt.render([{"role": "user", "content": " Hi "}], add_generation_prompt=True)
    '<|user|>\\nHi</s>\\n<|assistant|>\\n'
    >>> fmt.parse("<|user|>\\nHi</s>\\n<|assistant|>\\nHello</s>\\n")[-1].content
    'Hello'

    Raises :class:`TemplateCaptureError` naming the probe that diverged when the
    template is outside what can be derived (its ``.grammar`` is then yours to write).
    Needs jinja2 (``pip install 'chatgrammar[templates]'``).
    """
    return capture(
        source,
        bos_token=bos_token,
        eos_token=eos_token,
        name=name,
        special_tokens=special_tokens,
        conversations=conversations,
        seed=seed,
        **template_kwargs,
    ).format


def match_template(
    source: str, *, bos_token: str | None = None, eos_token: str | None = None, conversations: int = 120, seed: int = 0
) -> str | None:
    """The built-in format a chat template is equivalent to, or None.

    Equivalent means: on generated conversations (every role order, empty, whitespace,
    unicode and long contents, with and without the generation prompt), the template and
    the format write the same text or both refuse. Without ``bos_token``/``eos_token``,
    each format is tried with its own.
    """
    from ._export import _format_renderer
    from ._registry import formats, get_format

    probe = [{"role": "user", "content": "Hi"}]
    found: list[tuple[int, str]] = []  # (conversations only the template writes, name)
    for name in formats():
        fmt = get_format(name)
        render = compile_template(
            source,
            bos_token=fmt.bos or "" if bos_token is None else bos_token,
            eos_token=fmt.eos or "" if eos_token is None else eos_token,
            now=None,  # today, as the format writes without a date
        )
        mine = _format_renderer(fmt, None)
        try:
            if render(probe, add_generation_prompt=True) != mine(probe, add_generation_prompt=True):
                continue
            refused = _verify_pair(
                mine, render, list(ROLES), FlatSpec(name=name), conversations, seed, name, refusals_declared=True
            )
        except (TemplateRaised, TemplateCaptureError):
            continue
        found.append((refused, name))
    # The closest: the format that refuses the fewest conversations the template writes.
    return min(found)[1] if found else None
