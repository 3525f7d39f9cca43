"""Dataset-scale speed: render, parse and convert through Dataset.map(batched=True), against a plain loop.

    python benchmarks/bench_datasets.py [--n 1000000 | --quick] [--write docs/datasets.md]

Builds N synthetic conversations (default 1,000,000; --quick: 20,000): half with a system
message, then one to three user/assistant exchanges of 4-40 words each. They are saved as a
``datasets.Dataset`` in a temporary directory and loaded back memory-mapped, as
``load_dataset`` gives a dataset. Then, in conversations per second:

* loop: ``fmt.render`` / ``fmt.parse`` / both over the rows as Python lists (read from Arrow
  beforehand, untimed): chatgrammar's own cost;
* map floor: a ``Dataset.map(batched=True)`` that reads the same column and writes its
  values' lengths: what datasets costs by itself (Arrow rows to Python and back);
* map: the batch functions of ``chatgrammar.datasets`` through ``Dataset.map(batched=True)``
  (``apply``), with num_proc=1 and 2: reading Arrow, the loop, and writing the new columns,
  never read from datasets' cache.

It also measures how much two processes gain on this machine: a pure Python loop run in two
processes at once, against one (2.0 on two free cores).

Render writes chatml, parse reads it back, convert rewrites it as llama3. Every mapped
column is checked against the loop's results on a sample of rows, and has no error.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import random
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa

import chatgrammar as cg
from chatgrammar.datasets import apply, convert_batch, parse_batch, render_batch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import words  # noqa: E402

SOURCE, TARGET = "chatml", "llama3"
CHUNK = 100_000  # rows generated, and read back for the loop, at a time
SAMPLE = 1_000  # rows of each mapped column checked against the loop


def conversation(rng: random.Random) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": words(rng, rng.randint(4, 12))}] if rng.random() < 0.5 else []
    for _ in range(rng.randint(1, 3)):
        msgs.append({"role": "user", "content": words(rng, rng.randint(4, 40))})
        msgs.append({"role": "assistant", "content": words(rng, rng.randint(4, 40))})
    return msgs


def build(n: int, folder: str) -> datasets.Dataset:
    """N conversations in a column ``messages``, saved to ``folder`` and loaded back memory-mapped."""
    rng = random.Random(9)
    chunks = []
    for start in range(0, n, CHUNK):
        chunks.append(pa.table({"messages": [conversation(rng) for _ in range(min(CHUNK, n - start))]}))
    datasets.Dataset(pa.concat_tables(chunks)).save_to_disk(os.path.join(folder, "chats"))
    return datasets.load_from_disk(os.path.join(folder, "chats"))


def loop(ds: datasets.Dataset, column: str, work: Callable[[Any], Any]) -> tuple[float, list[Any]]:
    """Seconds spent in ``work`` over every value of ``column`` (read from Arrow untimed), and the results."""
    spent = 0.0
    results: list[Any] = []
    for batch in ds.select_columns([column]).iter(batch_size=CHUNK):
        values = batch[column]
        start = time.perf_counter()
        results += [work(v) for v in values]
        spent += time.perf_counter() - start
    return spent, results


def floor(ds: datasets.Dataset, column: str) -> float:
    """Seconds for a map that reads ``column`` and writes the length of each value."""
    start = time.perf_counter()
    ds.map(lambda b: {"n": [len(v) for v in b[column]]}, batched=True, load_from_cache_file=False)
    return time.perf_counter() - start


def spin(_: int) -> float:
    start = time.perf_counter()
    total = 0
    for i in range(10_000_000):
        total += i
    return time.perf_counter() - start


def parallel_gain() -> float:
    """Work done per second by two processes at once, over one's: 2.0 with two free cores."""
    with multiprocessing.Pool(2) as pool:
        one = min(pool.apply(spin, (0,)) for _ in range(2))
        start = time.perf_counter()
        pool.map(spin, [0, 1], chunksize=1)
        both = time.perf_counter() - start
    return 2 * one / both


def mapped(ds: datasets.Dataset, fn: cg.datasets.BatchFunction, num_proc: int) -> tuple[float, datasets.Dataset]:
    start = time.perf_counter()
    out = apply(ds, fn, num_proc=num_proc if num_proc > 1 else None, load_from_cache_file=False)
    return time.perf_counter() - start, out


def check(out: datasets.Dataset, column: str, expected: list[Any], rng: random.Random) -> None:
    assert out.unique("error") == [None], "a row failed"
    rows = sorted(rng.sample(range(len(out)), min(SAMPLE, len(out))))
    got = out.select(rows)[column]
    assert got == [expected[i] for i in rows], f"{column}: the mapped column differs from the loop"


def table(results: dict[str, dict[str, float]], n: int) -> str:
    heads = ["loop", "map floor", "map, num_proc=1", "map, num_proc=2"]
    lines = ["| conversations/s | " + " | ".join(heads) + " |", "|---|" + "---:|" * len(heads)]
    for task, row in results.items():
        lines.append(f"| {task} | " + " | ".join(f"{n / row[h]:,.0f}" for h in heads) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="conversations (default 1,000,000)")
    ap.add_argument("--quick", action="store_true", help="20,000 conversations")
    ap.add_argument("--write", metavar="MD", help="replace the figures between the bench markers of this file")
    args = ap.parse_args()
    n = 20_000 if args.quick else args.n
    datasets.disable_progress_bars()
    rng = random.Random(1)
    source, target = cg.get_format(SOURCE), cg.get_format(TARGET)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        ds = build(n, folder)
        print(f"{n:,} conversations built in {time.perf_counter() - start:.0f} s", file=sys.stderr)

        task = f"render ({SOURCE})"
        spent, texts = loop(ds, "messages", source.render)
        results[task] = {"loop": spent, "map floor": floor(ds, "messages")}
        for procs in (1, 2):
            results[task][f"map, num_proc={procs}"], rendered = mapped(ds, render_batch(SOURCE), procs)
            check(rendered, "text", texts, rng)
        print(task, {k: f"{v:.1f} s" for k, v in results[task].items()}, file=sys.stderr)
        rendered = rendered.select_columns(["text"])

        task = f"parse ({SOURCE})"
        spent, read = loop(rendered, "text", lambda t: [m.to_dict() for m in source.parse(t)])
        results[task] = {"loop": spent, "map floor": floor(rendered, "text")}
        for procs in (1, 2):
            results[task][f"map, num_proc={procs}"], parsed = mapped(rendered, parse_batch(SOURCE), procs)
            check(parsed, "messages", read, rng)
        print(task, {k: f"{v:.1f} s" for k, v in results[task].items()}, file=sys.stderr)
        del read, parsed

        task = f"convert ({SOURCE} → {TARGET})"
        spent, converted = loop(rendered, "text", lambda t: target.render(source.parse(t)))
        results[task] = {"loop": spent, "map floor": results[f"parse ({SOURCE})"]["map floor"]}
        for procs in (1, 2):
            results[task][f"map, num_proc={procs}"], out = mapped(rendered, convert_batch(SOURCE, TARGET), procs)
            check(out, "converted", converted, rng)
        print(task, {k: f"{v:.1f} s" for k, v in results[task].items()}, file=sys.stderr)

    gain = parallel_gain()
    figures = table(results, n)
    command = "python benchmarks/bench_datasets.py" + (
        " --quick" if args.quick else f" --n {n:_}" if n != 1_000_000 else ""
    )
    if args.write:
        command += f" --write {args.write}"
    versions = (
        f"{n:,} conversations (half with a system message, 1-3 exchanges of 4-40 words); "
        f"chatgrammar {cg.__version__}, datasets {datasets.__version__}, pyarrow {pa.__version__}, "
        f"Python {platform.python_version()}, {os.cpu_count()} cores ({platform.machine()}), "
        f"where two processes do {gain:.1f}x the work of one"
    )
    print(figures)
    print(f"\n{versions}\n`{command}`")
    if args.write:
        path = Path(args.write)
        doc = path.read_text(encoding="utf-8")
        section = f"<!-- bench:start -->\n{figures}\n\n{versions}, measured with `{command}`.\n<!-- bench:end -->"
        new, count = re.subn(r"<!-- bench:start -->.*?<!-- bench:end -->", lambda _: section, doc, flags=re.S)
        if count != 1:
            raise SystemExit(f"{path}: expected one <!-- bench:start --> ... <!-- bench:end --> section, found {count}")
        path.write_text(new, encoding="utf-8")
        print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
