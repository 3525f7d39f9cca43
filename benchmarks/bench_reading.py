"""Reading real output: streaming vs batch parse, detect, tolerant vs strict parse, in one run.

    python benchmarks/bench_reading.py [--quick] [--formats chatml,llama3]

Streaming: ``StreamParser`` fed a transcript in chunks of 1, 16, 256 and 4096
characters, against ``parse`` of the whole text, in MB/s (issue 5 target: streaming
at least half of batch parse). Detect: ``detect`` of a ~4 KB transcript across every
registered format. Tolerant: ``parse(strict=False)`` against ``parse`` on the same
valid text, and on the text cut in the middle of its last delimiter. Every result is
checked against ``parse`` before it is timed.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

import chatgrammar as cg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import kilobytes, long_chat, short_chat  # noqa: E402

FORMATS = "chatml,llama3,llama2,gemma3,mistral-v0.2,alpaca,deepseek-v3,phi-3.5"
CHUNKS = (1, 16, 256, 4096)


def best_of(fn: Callable[[], Any], repeat: int) -> float:
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()
    return statistics.median(t / number for t in timer.repeat(repeat=repeat, number=number))


def stream(fmt: cg.Format, text: str, size: int) -> list[cg.Event]:
    p = cg.StreamParser(fmt)
    events: list[cg.Event] = []
    for i in range(0, len(text), size):
        events += p.feed(text[i : i + size])
    return events + p.close()


def assemble(events: list[cg.Event]) -> list[cg.Message]:
    roles: dict[int, str] = {}
    parts: dict[int, list[str]] = {}
    done: dict[int, bool] = {}
    for e in events:
        if isinstance(e, cg.MessageStart):
            roles[e.index], parts[e.index] = e.role, []
        elif isinstance(e, cg.ContentDelta):
            parts[e.index].append(e.text)
        elif isinstance(e, cg.MessageEnd):
            done[e.index] = e.complete
    return [cg.Message(role=roles[i], content="".join(parts[i]), complete=done[i]) for i in sorted(roles)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds (for a smoke run)")
    ap.add_argument("--formats", default=FORMATS, help="comma-separated formats to time")
    args = ap.parse_args()
    repeat = 3 if args.quick else 5
    rng = random.Random(11)
    print(f"chatgrammar {cg.__version__} on Python {platform.python_version()} ({platform.machine()})\n")

    print("streaming: MB/s by chunk size, and its share of batch parse's MB/s (target >= 0.5)")
    print(f"{'format':13} {'chat':5} {'batch':>9} | " + " | ".join(f"{f'{c} ch':>7} {'share':>5}" for c in CHUNKS))
    worst: dict[int, tuple[float, str]] = {}
    for name in args.formats.split(","):
        fmt = cg.get_format(name)
        for label, make in (("short", short_chat), ("long", long_chat)):
            msgs = make(rng)
            try:
                text = fmt.render(msgs)
            except cg.RenderError:
                continue
            expected = fmt.parse(text)
            mb = len(text.encode()) / 1e6
            t_batch = best_of(lambda fmt=fmt, text=text: fmt.parse(text), repeat)
            row = f"{name:13} {label:5} {mb / t_batch:7.1f}MB/s |"
            cells = []
            for size in CHUNKS:
                assert assemble(stream(fmt, text, size)) == expected, f"{name}: stream disagrees"
                t = best_of(lambda fmt=fmt, text=text, size=size: stream(fmt, text, size), max(1, repeat // 2))
                share = t_batch / t
                if share < worst.get(size, (float("inf"), ""))[0]:
                    worst[size] = (share, f"{name} {label}")
                cells.append(f"{mb / t:5.1f}MB/s {share:5.2f}")
            print(row + " " + " | ".join(cells))
    for size, (share, where) in worst.items():
        print(f"stream, {size}-character chunks: lowest share of batch {share:.2f} ({where})")

    print("\ndetect: a ~4 KB transcript, across every registered format")
    for name in args.formats.split(","):
        fmt = cg.get_format(name)
        msgs = [
            {"role": "user", "content": kilobytes(rng, 1000, 1000)},
            {"role": "assistant", "content": kilobytes(rng, 3000, 3000)},
        ]
        try:
            text = fmt.render(msgs)
        except cg.RenderError:
            continue
        found = cg.detect(text)
        top = {n for n, s in found if s == found[0][1]}
        assert name in top or top <= next((g for g in cg.SAME_LANGUAGE if name in g), {name}), (name, found[:3])
        t = best_of(lambda text=text: cg.detect(text), max(1, repeat // 2))
        print(f"{name:13} {len(text):6} chars  {t * 1e3:7.2f} ms  top: {found[0][0]}")

    print("\ntolerant vs strict parse (µs per text; ratio = tolerant / strict)")
    for name in args.formats.split(","):
        fmt = cg.get_format(name)
        msgs = short_chat(rng)
        try:
            text = fmt.render(msgs)
        except cg.RenderError:
            continue
        assert fmt.parse(text, strict=False) == fmt.parse(text)
        t_strict = best_of(lambda fmt=fmt, text=text: fmt.parse(text), repeat)
        t_tol = best_of(lambda fmt=fmt, text=text: fmt.parse(text, strict=False), repeat)
        cut = text[: max(1, len(text) - max(2, len(fmt.stop[0]) // 2 if fmt.stop else 2))]
        t_cut = best_of(lambda fmt=fmt, cut=cut: fmt.parse(cut, strict=False), repeat)
        print(
            f"{name:13} strict {t_strict * 1e6:7.1f}µs  tolerant {t_tol * 1e6:7.1f}µs ({t_tol / t_strict:4.1f}x)"
            f"  truncated text {t_cut * 1e6:8.1f}µs ({t_cut / t_strict:5.1f}x)"
        )


if __name__ == "__main__":
    main()
