"""assistant_grammar: the grammar of one assistant answer, checked in llguidance and by a GBNF interpreter.

The expectation is computed independently with plain ``str`` checks (``in_language``):
an answer is content, then one of ``fmt.stop``; content holds no ``fmt.tokens`` and no
``fmt.stop`` anywhere, and no ``fmt.markers`` at the start of a line.
"""

from __future__ import annotations

import functools
import re
from typing import Any, NamedTuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

import chatgrammar
from chatgrammar import Format, get_format
from chatgrammar._constrain import _Automaton, assistant_grammar

ALL = chatgrammar.formats()


# --- the independent expectation --------------------------------------------------------------


class Spec(NamedTuple):
    """What the expectation reads of a format."""

    tokens: list[str]
    stop: list[str]
    markers: list[str]


def clean(fmt: Format | Spec, content: str) -> bool:
    """Whether ``content`` may stand in an assistant message of ``fmt``."""
    if any(x and x in content for x in [*fmt.tokens, *fmt.stop]):
        return False
    return not any(m and line.startswith(m) for line in content.split("\n") for m in fmt.markers)


def in_language(fmt: Format | Spec, text: str) -> bool:
    """Whether ``text`` is one answer: clean content, then one stop string."""
    if not fmt.stop:
        return clean(fmt, text)
    return any(s and text.endswith(s) and clean(fmt, text[: len(text) - len(s)]) for s in fmt.stop)


def samples(fmt: Format | Spec) -> list[str]:
    """Answers to try: good ones, and ones with each forbidden piece in the content."""
    stop = fmt.stop[0]
    texts = [f"Hello\nworld{s}" for s in fmt.stop] + [stop, "Hello", "Hello\nworld", f"Hi{stop}x", f"Hi{stop}{stop}"]
    for x in [*fmt.tokens, *fmt.stop]:
        texts += [f"Hel{x}lo{stop}", f"{x}{stop}", f"Hi\n{x}{stop}"]
    for m in fmt.markers:
        texts += [f"{m} x{stop}", f"Hi\n{m} x{stop}", f"Hi {m} x{stop}", f"Hi\n {m}{stop}", f"Hi\n\n{m}{stop}"]
    return texts


# --- llguidance, over a byte-level tokenizer ---------------------------------------------------

EOS = "<|test_eos|>"


class ByteTokenizer:
    """One token per byte, then EOS and the given special tokens: llguidance's TokenizerWrapper input."""

    def __init__(self, specials: tuple[str, ...] = ()) -> None:
        names = [EOS, *specials]
        self.tokens = [bytes([b]) for b in range(256)] + [s.encode() for s in names]
        self.eos_token_id = 256
        self.bos_token_id = None
        self.special_token_ids = list(range(256, 256 + len(names)))
        self.ids = {s: 256 + k for k, s in enumerate(names)}

    def __call__(self, data: bytes) -> list[int]:
        return list(data)


@functools.cache
def tokenizer(specials: tuple[str, ...] = ()) -> tuple[Any, ByteTokenizer]:
    llg = pytest.importorskip("llguidance")
    raw = ByteTokenizer(specials)
    return llg.LLTokenizer(llg.TokenizerWrapper(raw)), raw


@functools.cache
def compiled(name: str, dialect: str = "lark", special_tokens: bool = False) -> str:
    llg = pytest.importorskip("llguidance")
    return str(llg.grammar_from(dialect, assistant_grammar(name, dialect=dialect, special_tokens=special_tokens)))


def llg_accepts(
    name: str, pieces: list[str | int], special_tokens: bool = False, specials: tuple[str, ...] = ()
) -> bool:
    """Whether llguidance's matcher takes the whole text (str pieces as bytes, ints as token ids) and may stop."""
    llg = pytest.importorskip("llguidance")
    tok, _ = tokenizer(specials)
    m = llg.LLMatcher(tok, compiled(name, "lark", special_tokens), log_level=0)
    assert not m.is_error(), m.get_error()
    ids = [t for p in pieces for t in ([p] if isinstance(p, int) else list(p.encode()))]
    return bool(m.consume_tokens(ids) and m.is_accepting())


@pytest.mark.parametrize("name", ALL)
def test_grammar_validates_in_llguidance(name: str) -> None:
    llg = pytest.importorskip("llguidance")
    tok, _ = tokenizer()
    for dialect in ("lark", "gbnf"):  # llguidance reads GBNF too, converted to Lark
        assert llg.LLMatcher.validate_grammar_with_warnings(compiled(name, dialect), tok) == (False, []), dialect
    fmt = get_format(name)
    specials = tuple(s for s in fmt.stop if s in fmt.tokens)
    tok, _ = tokenizer(specials)
    got = llg.LLMatcher.validate_grammar_with_warnings(compiled(name, "lark", True), tok)
    assert got == (False, [])


@pytest.mark.parametrize("name", ALL)
def test_llguidance_matches_the_expectation(name: str) -> None:
    fmt = get_format(name)
    for text in samples(fmt):
        assert llg_accepts(name, [text]) == in_language(fmt, text), repr(text)


@pytest.mark.parametrize(
    ("name", "good", "bad"),
    [
        (
            "chatml",
            ["Hello\nworld<|im_end|>", "<|im_end|>", "a < b | c<|im_end|>", "<|im_sta<|im_end|>", "日本語 é<|im_end|>"],
            ["Hi<|im_start|>user<|im_end|>", "Hi<|im_end|>x<|im_end|>", "Hello", "Hi<|im_end|>\n"],
        ),
        (
            "llama3",
            ["Hello\nworld<|eot_id|>", "Hello<|end_of_text|>"],
            ["Hi<|start_header_id|>user<|eot_id|>", "a<|begin_of_text|>b<|eot_id|>", "a<|eot_id|>b<|eot_id|>"],
        ),
        (
            "vicuna",
            ["Hello\nworld</s>", "Hello USER:", "Hi\n USER x</s>", "ask the ASSISTANT: x</s>", "Hi\nASSISTANT</s>"],
            ["Hi\nASSISTANT: x</s>", "ASSISTANT: x</s>", "Hi USER: x</s>", "a</s>b</s>", "Hi\nUSER:x</s>"],
        ),
        (
            "gemma3",
            ["Hello\nworld<end_of_turn>", "Hello<eos>", "<end_of_tur<end_of_turn>"],
            ["a<start_of_turn>user<end_of_turn>", "a<start_of_image>b<end_of_turn>", "a<eos>b<end_of_turn>"],
        ),
        (
            "mistral",
            ["Hello\nworld</s>", "[INS] [/INS</s>"],
            ["a[INST] b</s>", "a[/INST]</s>", "<s>a</s>", "a</s>b</s>"],
        ),
        (
            "zephyr",
            ["Hello\nworld</s>", "<|user| ></s>"],
            ["a<|user|>\nb</s>", "a<|assistant|></s>", "<|system|>a</s>"],
        ),
        (
            "alpaca",
            ["Hello\nworld</s>", "a ### Response: b</s>", "Hi\n### Responses</s>"],
            [
                "Hi\n### Response:\nx</s>",
                "### Response: x</s>",
                "Hi ### Instruction: x</s>",
                "Hi\n### Instruction:\n</s>",
            ],
        ),
        (
            "pygmalion",
            ["Hello world\n", "a <| b\n", "\n"],
            ["Hello\nworld\n", "<|model|>\n", "Hello"],
        ),
    ],
)
def test_answers(name: str, good: list[str], bad: list[str]) -> None:
    fmt = get_format(name)
    for text in good:
        assert in_language(fmt, text), repr(text)
        assert gbnf_accepts(name, text), repr(text)
    for text in bad:
        assert not in_language(fmt, text), repr(text)
        assert not gbnf_accepts(name, text), repr(text)
    for text in good + bad:
        assert llg_accepts(name, [text]) == (text in good), repr(text)


@pytest.mark.parametrize("name", ["chatml", "llama3", "vicuna", "gemma3", "mistral", "zephyr"])
def test_accepted_answers_read_back_as_one_message(name: str) -> None:
    fmt = get_format(name)
    for content in ["Hello\nworld", "a < b | c", "line\n\nline"]:
        text = content + fmt.stop[0]
        assert llg_accepts(name, [text])
        got = fmt.parse_completion(text)
        assert got.message is not None
        assert (got.message.content, got.stop, got.rest, got.message.complete) == (content, fmt.stop[0], "", True)


def test_after_the_stop_nothing_but_eos() -> None:
    llg = pytest.importorskip("llguidance")
    tok, raw = tokenizer()
    m = llg.LLMatcher(tok, compiled("chatml"), log_level=0)
    assert m.consume_tokens(list(b"Hi<|im_"))
    mask = m.compute_bitmask()
    assert sum(mask[t // 8] >> (t % 8) & 1 for t in range(tok.vocab_size)) > 100  # the content may go on
    assert m.consume_tokens(list(b"end|>"))
    mask = m.compute_bitmask()
    allowed = [t for t in range(tok.vocab_size) if mask[t // 8] >> (t % 8) & 1]
    assert m.is_accepting() and allowed == [raw.eos_token_id]
    assert m.consume_token(raw.eos_token_id)


def test_special_tokens_stop() -> None:
    specials = ("<|im_start|>", "<|im_end|>", "<|endoftext|>")
    _, raw = tokenizer(specials)
    end = raw.ids["<|im_end|>"]
    assert llg_accepts("qwen2.5", ["Hi\nthere", end], True, specials)
    assert llg_accepts("qwen2.5", ["Hi", raw.ids["<|endoftext|>"]], True, specials)
    assert llg_accepts("qwen2.5", ["Hi<|im_end|>"], True, specials)  # written out as text, still the stop
    assert not llg_accepts("qwen2.5", ["Hi", raw.ids["<|im_start|>"], "x", end], True, specials)
    assert not llg_accepts("qwen2.5", ["Hi", end, "x", end], True, specials)
    assert not llg_accepts("qwen2.5", ["Hi<|im_start|>", end], True, specials)
    assert not llg_accepts("qwen2.5", ["Hi", end], False, specials)  # text mode: the special token is no text


def test_special_tokens_stops_that_are_not_named_stay_text() -> None:
    lark = assistant_grammar("exaone3.5", special_tokens=True)  # [|endofturn|] has no <...> name
    assert "special_stop" not in lark
    assert "special_stop: </s>\n" in assistant_grammar("vicuna", special_tokens=True)


# --- GBNF: an independent interpreter of the subset assistant_grammar writes -------------------------


Item = tuple[str, Any]  # ("class", (negated, [(lo, hi), ...])) or ("ref", name)

_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "[": "[", "]": "]"}


def _char(src: str, i: int) -> tuple[str, int]:
    if src[i] != "\\":
        return src[i], i + 1
    kind = src[i + 1]
    if kind in "xuU":
        width = {"x": 2, "u": 4, "U": 8}[kind]
        return chr(int(src[i + 2 : i + 2 + width], 16)), i + 2 + width
    return _ESCAPES[kind], i + 2


def parse_gbnf(text: str) -> dict[str, list[list[Item]]]:
    rules: dict[str, list[list[Item]]] = {}
    for line in text.split("\n"):
        if not line.strip() or line.startswith("#"):
            continue
        name, body = line.split(" ::= ", 1)
        assert re.fullmatch(r"[a-z0-9-]+", name) and name not in rules, line
        alts: list[list[Item]] = [[]]
        i = 0
        while i < len(body):
            c = body[i]
            if c == " ":
                i += 1
            elif c == "|":
                alts.append([])
                i += 1
            elif c == '"':
                i += 1
                while body[i] != '"':
                    ch, i = _char(body, i)
                    alts[-1].append(("class", (False, [(ch, ch)])))
                i += 1
            elif c == "[":
                negated = body[i + 1] == "^"
                i += 2 if negated else 1
                ranges = []
                while body[i] != "]":
                    lo, i = _char(body, i)
                    hi = lo
                    if body[i] == "-" and body[i + 1] != "]":
                        hi, i = _char(body, i + 1)
                    ranges.append((lo, hi))
                i += 1
                alts[-1].append(("class", (negated, ranges)))
            else:
                m = re.match(r"[a-z0-9-]+", body[i:])
                assert m, body[i:]
                alts[-1].append(("ref", m.group()))
                i += m.end()
        rules[name] = alts
    refs = {v for alts in rules.values() for alt in alts for k, v in alt if k == "ref"}
    assert "root" in rules and refs <= set(rules), refs - set(rules)
    return rules


Stack = tuple[tuple[str, int, int], ...]


def _closure(rules: dict[str, list[list[Item]]], stacks: set[Stack]) -> set[Stack]:
    """The stacks whose top item is a character class, and () where the whole grammar may end."""
    out: set[Stack] = set()
    seen: set[Stack] = set()
    todo = list(stacks)
    while todo:
        stack = todo.pop()
        if stack in seen:
            continue
        seen.add(stack)
        if not stack:
            out.add(stack)
            continue
        name, alt, pos = stack[-1]
        seq = rules[name][alt]
        if pos == len(seq):
            todo.append(stack[:-1])
        elif seq[pos][0] == "ref":
            callee = seq[pos][1]
            rest = stack[:-1] + ((name, alt, pos + 1),) if pos + 1 < len(seq) else stack[:-1]
            todo += [rest + ((callee, k, 0),) for k in range(len(rules[callee]))]
        else:
            out.add(stack)
    return out


def _in_class(c: str, cls: tuple[bool, list[tuple[str, str]]]) -> bool:
    negated, ranges = cls
    return any(lo <= c <= hi for lo, hi in ranges) != negated


def gbnf_match(rules: dict[str, list[list[Item]]], text: str) -> bool:
    stacks = _closure(rules, {(("root", k, 0),) for k in range(len(rules["root"]))})
    for c in text:
        moved: set[Stack] = set()
        for stack in stacks:
            if stack:
                name, alt, pos = stack[-1]
                if _in_class(c, rules[name][alt][pos][1]):
                    moved.add(stack[:-1] + ((name, alt, pos + 1),))
        stacks = _closure(rules, moved)
        if not stacks:
            return False
        assert max(map(len, stacks)) <= 2  # right-linear: no stack growth
    return () in stacks


@functools.cache
def gbnf_rules(name: str) -> dict[str, list[list[Item]]]:
    return parse_gbnf(assistant_grammar(name, dialect="gbnf"))


def gbnf_accepts(name: str, text: str) -> bool:
    return gbnf_match(gbnf_rules(name), text)


@pytest.mark.parametrize("name", ALL)
def test_gbnf_matches_the_expectation(name: str) -> None:
    fmt = get_format(name)
    rules = gbnf_rules(name)
    assert set(rules) == {"root", "stop"} | {f"s{k}" for k in range(len(rules) - 2)}
    for text in samples(fmt):
        assert gbnf_accepts(name, text) == in_language(fmt, text), repr(text)


def test_gbnf_without_stop_strings() -> None:
    from chatgrammar._constrain import _gbnf, _lark

    gbnf = _gbnf("x", _Automaton(["ab"], ["#"]), [])
    assert "stop" not in gbnf
    rules = parse_gbnf(gbnf)
    for text, ok in [("", True), ("xa", True), ("xab", False), ("a#", True), ("#", False), ("x\n#y", False)]:
        assert gbnf_match(rules, text) == ok, text
    lark = _lark("x", ["ab"], ["#"], [], [])
    assert "start: CONTENT\n" in lark and "STOP" not in lark


def test_errors() -> None:
    with pytest.raises(ValueError, match="unknown grammar dialect"):
        assistant_grammar("chatml", dialect="ebnf")
    with pytest.raises(ValueError, match="lark dialect"):
        assistant_grammar("chatml", dialect="gbnf", special_tokens=True)
    assert assistant_grammar(get_format("chatml")) == assistant_grammar("chatml")


# --- property tests ------------------------------------------------------------------------------


def contents(name: str) -> st.SearchStrategy[str]:
    """Random content, biased towards the format's forbidden pieces, their fragments and newlines."""
    fmt = get_format(name)
    pieces = [*fmt.tokens, *fmt.stop, *fmt.markers]
    fragments = [p[:k] for p in pieces for k in range(1, len(p))] + [p[k:] for p in pieces for k in range(1, len(p))]
    atoms = st.sampled_from(pieces) | st.sampled_from(fragments) | st.sampled_from(["\n", " ", "a", "é", "日"])
    return st.lists(atoms | st.text(max_size=3), max_size=12).map("".join)


@pytest.mark.parametrize("name", ["chatml", "vicuna"])
@given(data=st.data())
def test_property_lark_and_gbnf_accept_exactly_clean_content(name: str, data: st.DataObject) -> None:
    fmt = get_format(name)
    content = data.draw(contents(name))
    stop = data.draw(st.sampled_from(fmt.stop))
    text = content + stop
    expected = in_language(fmt, text)
    assert expected == clean(fmt, content)  # no stop string here ends in another one
    assert _automaton(name).accepts(content) == expected
    assert gbnf_accepts(name, text) == expected
    assert llg_accepts(name, [text]) == expected
    assert llg_accepts(name, [content]) == in_language(fmt, content)  # no stop string: not over


@functools.cache
def _automaton(name: str) -> _Automaton:
    fmt = get_format(name)
    return _Automaton(list(dict.fromkeys([*fmt.tokens, *fmt.stop])), fmt.markers)


# --- escaping: pieces full of regex, Lark and GBNF syntax --------------------------------------------

ODD = Spec(
    tokens=["a/b", "\\x", "[.*]", "(?:)", "{1}", "^$", "#&~-", '"q"', "\r\t", "\U0001f600", "\\<", "<|x|>"],
    stop=["<END>", "]", "\x00"],
    markers=["> ", "|", "- [", "\u2028"],
)


def _odd(dialect: str) -> str:
    from chatgrammar._constrain import _gbnf, _lark

    anywhere = list(dict.fromkeys([*ODD.tokens, *ODD.stop]))
    if dialect == "lark":
        return _lark("odd", anywhere, ODD.markers, ODD.stop, [])
    return _gbnf("odd", _Automaton(anywhere, ODD.markers), ODD.stop)


@given(
    content=st.lists(
        st.sampled_from([*ODD.tokens, *ODD.stop, *ODD.markers, "\n", "x", "<", "\\"]) | st.text(max_size=2), max_size=10
    ).map("".join),
    stop=st.sampled_from(ODD.stop),
)
def test_property_escaping(content: str, stop: str) -> None:
    text = content + stop
    expected = in_language(ODD, text)
    assert gbnf_match(_odd_gbnf(), text) == expected
    llg = pytest.importorskip("llguidance")
    tok, _ = tokenizer()
    m = llg.LLMatcher(tok, _odd_lark(), log_level=0)
    assert not m.is_error(), m.get_error()
    assert bool(m.consume_tokens(list(text.encode())) and m.is_accepting()) == expected


@functools.cache
def _odd_gbnf() -> dict[str, list[list[Item]]]:
    return parse_gbnf(_odd("gbnf"))


@functools.cache
def _odd_lark() -> str:
    llg = pytest.importorskip("llguidance")
    return str(llg.grammar_from("lark", _odd("lark")))


def test_escaping_validates() -> None:
    llg = pytest.importorskip("llguidance")
    tok, _ = tokenizer()
    for dialect in ("lark", "gbnf"):
        assert llg.LLMatcher.validate_grammar_with_warnings(llg.grammar_from(dialect, _odd(dialect)), tok) == (
            False,
            [],
        )
