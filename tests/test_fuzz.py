"""Fuzzing the readers: whatever the text, they raise nothing but ParseError.

For every format: renders of generated conversations, mutated (pieces of the
format's delimiters, roles and odd characters inserted, spans deleted, swapped,
repeated, the text cut short), and arbitrary text made of those pieces, are read
by ``parse`` (strict and tolerant), ``parse_completion`` and ``StreamParser``
fed in chunks of random sizes. Strict readers give messages or a ParseError
whose position lies inside the text and whose message quotes a short snippet;
``parse(strict=False)`` never raises; a stream gives events or a ParseError.

The default run draws a few dozen examples per format. The long run,
``pytest -m fuzz tests/test_fuzz.py`` (``CHATGRAMMAR_FUZZ_EXAMPLES``, default
100000, examples per format; ``CHATGRAMMAR_FUZZ_SEED`` to vary the seed), mutates
renders with a seeded ``random.Random`` instead of Hypothesis, which is about a
hundred times cheaper per example, and prints how many examples ran.
"""

from __future__ import annotations

import os
import random
import time
import warnings
from typing import Any

import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st
from hypothesis.errors import NonInteractiveExampleWarning

import chatgrammar as cg
from chatgrammar.testing import contents, conversations, fuzz_pieces, mutate

FORMATS = cg.formats()
MAX_MESSAGE = 1000  # characters an error message may hold, however long the text


def _error_ok(e: cg.ParseError, length: int) -> None:
    assert 0 <= e.pos <= length, (e.pos, length)
    assert len(str(e)) <= MAX_MESSAGE, str(e)[:200]


def check_reading(fmt: cg.Format, text: str, rng: random.Random) -> None:
    """Every reader on ``text``: messages, events, or a ParseError placed inside it."""
    try:
        fmt.parse(text)
    except cg.ParseError as e:
        _error_ok(e, len(text))
    tolerant = fmt.parse(text, strict=False)  # never raises for the text
    assert isinstance(tolerant, cg.Parsed)
    for d in tolerant.diagnostics:
        assert 0 <= d.pos <= len(text) and len(d.message) <= MAX_MESSAGE
    try:
        fmt.parse_completion(text)
    except cg.ParseError as e:
        assert 0 <= e.pos, e.pos  # placed in the prompt and completion read together
        assert len(str(e)) <= MAX_MESSAGE
    stream = cg.StreamParser(fmt)
    fed = 0
    scale = max(1, len(text) // 512)  # a long text (a run of 2048 spaces) in at most ~512 chunks
    try:
        while fed < len(text):
            size = rng.choice((1, 2, 3, 7, 16, 64, 4096)) * scale
            events = stream.feed(text[fed : fed + size])
            fed += size
            assert all(isinstance(e, cg.Event) for e in events)
        assert all(isinstance(e, cg.Event) for e in stream.close())
    except cg.ParseError as e:
        _error_ok(e, len(text))


def _rendered(fmt: cg.Format, conv: Any) -> str:
    try:
        return fmt.render(conv.messages, on_unsafe="allow", **conv.render_args())
    except cg.RenderError:
        reject()


@pytest.mark.parametrize("name", FORMATS)
@settings(max_examples=25, suppress_health_check=[*settings().suppress_health_check, HealthCheck.large_base_example])
@given(data=st.data())
def test_mutated_renders_raise_only_parse_errors(name: str, data: st.DataObject) -> None:
    fmt = cg.get_format(name)
    text = _rendered(fmt, data.draw(conversations(fmt, max_messages=5, content=contents(long=False))))
    rng = data.draw(st.randoms(use_true_random=False))
    check_reading(fmt, mutate(text, rng, fuzz_pieces(fmt)), rng)


@pytest.mark.parametrize("name", FORMATS)
@settings(max_examples=15)
@given(data=st.data())
def test_pieces_of_delimiters_raise_only_parse_errors(name: str, data: st.DataObject) -> None:
    fmt = cg.get_format(name)
    text = "".join(data.draw(st.lists(st.sampled_from(fuzz_pieces(fmt)) | st.text(max_size=3), max_size=24)))
    check_reading(fmt, text, data.draw(st.randoms(use_true_random=False)))


def _seeds(fmt: cg.Format, n: int) -> list[str]:
    """``n`` renders of generated conversations, the texts the long run mutates."""
    strategy = conversations(fmt, max_messages=6)
    out: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonInteractiveExampleWarning)
        while len(out) < n:
            conv = strategy.example()
            try:
                out.append(fmt.render(conv.messages, on_unsafe="allow", **conv.render_args()))
            except cg.RenderError:
                continue
    return out


@pytest.mark.fuzz
@pytest.mark.parametrize("name", FORMATS)
def test_long_fuzz(name: str) -> None:
    examples = int(os.environ.get("CHATGRAMMAR_FUZZ_EXAMPLES", "100000"))
    seed = int(os.environ.get("CHATGRAMMAR_FUZZ_SEED", "0"))
    fmt = cg.get_format(name)
    rng = random.Random(f"{seed}:{name}")
    seeds = _seeds(fmt, 64)
    pieces = fuzz_pieces(fmt)
    start = time.perf_counter()
    for k in range(examples):
        base = seeds[k % len(seeds)] if k % 8 else "".join(rng.choices(pieces, k=rng.randint(0, 24)))
        text = mutate(base, rng, pieces)
        try:
            check_reading(fmt, text, rng)
        except Exception as e:  # anything but ParseError, or a bad one: report the text
            raise AssertionError(f"{name}: {type(e).__name__}: {e} on {text!r}") from e
    print(f"\n{name}: {examples} examples in {time.perf_counter() - start:.0f} s (seed {seed})")
