"""One Format used from 8 threads at once gives the same results as serial use.

Each format is loaded afresh, so that its lazy building (the compiled grammar, the
scanner's and reader's tables, the Lark parser, the option variants) races too.
Every thread renders, parses strictly and tolerantly, reads completions and
streams the same texts, valid and mutated; its results must equal those of a
serial run on another fresh Format. The interpreter switches threads as often
as it can meanwhile.
"""

from __future__ import annotations

import random
import sys
import threading
from typing import Any

import pytest

import chatgrammar as cg
from chatgrammar._registry import grammar_dir
from chatgrammar.testing import fuzz_pieces, mutate

THREADS = 8


def _fresh(name: str) -> cg.Format:
    path = grammar_dir() / f"{name}.lark"
    return cg.Format(path.read_text(encoding="utf-8"), origin=str(path), import_paths=[str(grammar_dir())])


def _conversations(fmt: cg.Format) -> list[tuple[list[dict[str, Any]], bool]]:
    out = []
    for msgs, gen in [
        ([{"role": "user", "content": "Hi there"}], True),
        ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "héllo\n☃"}], True),
        (
            [
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "b"},
                {"role": "user", "content": "  c  "},
            ],
            False,
        ),
        ([{"role": "user", "content": "x" * 3000}, {"role": "assistant", "content": "<b>y</b>\n"}], False),
    ]:
        try:
            fmt.render(msgs, add_generation_prompt=gen)
        except cg.ChatGrammarError:
            continue
        out.append((msgs, gen))
    return out


def _outcome(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except cg.ChatGrammarError as e:
        return (type(e).__name__, str(e))


def _tolerant(fmt: cg.Format, text: str) -> Any:
    r = fmt.parse(text, strict=False, spans=True)
    return list(r), r.spans, r.diagnostics


def _work(fmt: cg.Format, convs: list[tuple[list[dict[str, Any]], bool]], texts: list[str]) -> list[Any]:
    results: list[Any] = []
    for msgs, gen in convs:
        results.append(_outcome(fmt.render, msgs, add_generation_prompt=gen))
        results.append(_outcome(fmt.render_spans, msgs, add_generation_prompt=gen))
    for text in texts:
        results.append(_outcome(fmt.parse, text))
        results.append(_outcome(_tolerant, fmt, text))
        results.append(_outcome(fmt.parse_completion, text))
        results.append(_outcome(_stream, fmt, text))
    return results


def _stream(fmt: cg.Format, text: str) -> list[cg.Event]:
    p = cg.StreamParser(fmt)
    events: list[cg.Event] = []
    for i in range(0, len(text), 5):
        events += p.feed(text[i : i + 5])
    return events + p.close()


@pytest.mark.parametrize("name", cg.formats())
def test_one_format_from_eight_threads_reads_as_serial_use(name: str) -> None:
    serial_fmt = _fresh(name)
    convs = _conversations(serial_fmt)
    rng = random.Random(name)
    rendered = [serial_fmt.render(m, add_generation_prompt=g) for m, g in convs]
    texts = rendered + [mutate(t, rng, fuzz_pieces(serial_fmt)) for t in rendered for _ in range(3)]
    expected = _work(serial_fmt, convs, texts)

    shared = _fresh(name)  # built lazily by the threads themselves
    barrier = threading.Barrier(THREADS)
    got: list[list[Any] | BaseException] = [[] for _ in range(THREADS)]

    def run(k: int) -> None:
        try:
            barrier.wait()
            got[k] = _work(shared, convs, texts)
        except BaseException as e:  # reported below, with the thread it happened in
            got[k] = e

    threads = [threading.Thread(target=run, args=(k,)) for k in range(THREADS)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can: races show
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    for k, result in enumerate(got):
        if isinstance(result, BaseException):
            raise AssertionError(f"thread {k} raised {type(result).__name__}: {result}") from result
        assert result == expected, f"thread {k} read differently"
