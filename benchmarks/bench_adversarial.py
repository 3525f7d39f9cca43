"""Adversarial input: does reading stay linear in the size of the text, for every format?

    python benchmarks/bench_adversarial.py [--quick] [--formats chatml,llama2] [--modes parse,tolerant,stream]

For each format, four texts are built at two sizes (1 MB and 10 MB; 100 KB and
1 MB with ``--quick``):

* ``partial``: a user message whose content is the beginnings of the format's
  delimiters (each without its last character), over and over, never closed;
* ``lt``: a user message of ``<`` and nothing else, never closed;
* ``one``: one user message that long, rendered by the format;
* ``tiny``: a million (at 10 MB) one-character user and assistant messages;
* ``spaces``: a short conversation whose every space and newline is made a long
  run, then ``@@``.

Each is read by ``parse`` (strict), ``parse(strict=False)`` and ``StreamParser``
fed 64 KB chunks. The table shows the time at the larger size as a multiple of
the time at the smaller one: 10x is linear. Each format runs in its own process;
its peak memory above what it held before building the texts (the eight texts
and the parsers' tables included) is shown as a multiple of the larger text's
size. Every run
must end in messages or a ``ParseError`` (anything else is reported, and makes
the script exit 1), and an error message longer than 1000 characters is
reported too. ``tiny`` builds 2 objects per message that CPython's collector
walks on each full collection; the ``json.loads`` row shows what that costs
any Python reader of the same number of objects.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import chatgrammar as cg

MODES = ("parse", "tolerant", "stream")
INPUTS = ("partial", "lt", "one", "tiny", "spaces")
MAX_ERROR = 1000  # characters an error message may hold
CHUNK = 65536


def _writable(fmt: cg.Format, content: str) -> list[dict[str, str]]:
    """The shortest conversation the format renders, its user message holding ``content``."""
    for msgs in (
        [{"role": "user", "content": content}],
        [{"role": "system", "content": "s"}, {"role": "user", "content": content}],
        [{"role": "user", "content": content}, {"role": "assistant", "content": "a"}],
    ):
        try:
            fmt.render(msgs)
            return msgs
        except cg.ChatGrammarError:
            continue
    raise SystemExit(f"{fmt.name}: no short conversation renders")


def texts(fmt: cg.Format, size: int) -> dict[str, str]:
    # Inside a user message, never closed: the reader keeps looking for the end of its content.
    head = fmt.render(_writable(fmt, "\x00")).split("\x00")[0]
    parts = [d[:-1] for d in fmt.delimiters if len(d) > 1] or ["<"]
    unit = "".join(parts)
    out = {"partial": head + (unit * (size // len(unit) + 1))[:size], "lt": head + "<" * size}
    # Ordinary text with a tag-like "<" and newlines, none of them a delimiter.
    line = "the model reads <b>a</b> prompt, then: 1 < 2\n"
    out["one"] = fmt.render(_writable(fmt, (line * (size // len(line) + 1))[:size].strip()))
    pair = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    first = [m for m in _writable(fmt, "a") if m["role"] == "system"]
    per_pair = len(fmt.render(first + pair * 2)) - len(fmt.render(first + pair))
    out["tiny"] = fmt.render(first + pair * max(1, size // per_pair))
    # The delimiters' own whitespace made long runs, and the text broken after them: the
    # tolerant reader tries delimiters written with other whitespace.
    short = fmt.render(_writable(fmt, "hi"))
    gaps = max(1, sum(c in " \n" for c in short))
    out["spaces"] = "".join(c * (size // gaps) if c in " \n" else c for c in short) + "@@"
    return out


def _stream(fmt: cg.Format, text: str) -> int:
    p = cg.StreamParser(fmt)
    events = 0
    for i in range(0, len(text), CHUNK):
        events += len(p.feed(text[i : i + CHUNK]))
    return events + len(p.close())


def read(fmt: cg.Format, mode: str) -> Callable[[str], str]:
    def run(text: str) -> str:
        try:
            if mode == "parse":
                return f"{len(fmt.parse(text))} messages"
            if mode == "tolerant":
                r = fmt.parse(text, strict=False)
                return f"{len(r)} messages, {len(r.diagnostics)} diagnostics"
            return f"{_stream(fmt, text)} events"
        except cg.ParseError as e:
            if len(str(e)) > MAX_ERROR:
                return f"!! ParseError of {len(str(e))} characters"
            if not 0 <= e.pos <= len(text):
                return f"!! ParseError at {e.pos}, outside the text"
            return "ParseError"

    return run


def timed(fn: Callable[[str], str], text: str) -> tuple[float, str]:
    gc.collect()
    start = time.perf_counter()
    try:
        what = fn(text)
    except Exception as e:  # reported, not raised: the table shows every failure
        what = f"!! {type(e).__name__}: {str(e)[:120]}"
    return time.perf_counter() - start, what


def one_format(name: str, sizes: tuple[int, int], modes: list[str]) -> dict[str, Any]:
    fmt = cg.get_format(name)
    baseline = _rss()
    small, large = texts(fmt, sizes[0]), texts(fmt, sizes[1])
    for mode in modes:  # build the parsers before timing
        read(fmt, mode)(small["one"][:200])
    rows = []
    for kind in INPUTS:
        for mode in modes:
            fn = read(fmt, mode)
            t1, _ = timed(fn, small[kind])
            t2, what = timed(fn, large[kind])
            rows.append({"input": kind, "mode": mode, "small": t1, "large": t2, "result": what})
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - baseline  # Linux: KB
    return {"format": name, "rows": rows, "peak": peak, "largest": max(len(t) for t in large.values())}


def _rss() -> int:
    """This process's resident memory now, in bytes (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def json_floor(sizes: tuple[int, int]) -> tuple[float, float]:
    """json.loads of as many messages as ``tiny`` holds, at both sizes: the cost of the objects alone."""
    out = []
    for size in sizes:
        text = json.dumps([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}] * (size // 40))
        gc.collect()
        start = time.perf_counter()
        json.loads(text)
        out.append(time.perf_counter() - start)
    return out[0], out[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="100 KB and 1 MB instead of 1 MB and 10 MB")
    ap.add_argument("--formats", default=",".join(cg.formats()), help="comma-separated formats")
    ap.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # run one format in this process, print JSON
    args = ap.parse_args()
    sizes = (100_000, 1_000_000) if args.quick else (1_000_000, 10_000_000)
    modes = [m for m in args.modes.split(",") if m]
    if args.one:
        print(json.dumps(one_format(args.one, sizes, modes)))
        return 0
    print(f"# Python {sys.version.split()[0]}; sizes {sizes[0]:,} and {sizes[1]:,} characters")
    print("# time at the larger size as a multiple of the smaller one (10x is linear); seconds at the larger size")
    print(f"| format | input | {' | '.join(modes)} | peak memory / text |")
    print(f"|---|---|{'---|' * len(modes)}---|")
    failures = []
    worst = 0.0
    for name in args.formats.split(","):
        cmd = [sys.executable, __file__, "--one", name, "--modes", ",".join(modes)] + (
            ["--quick"] if args.quick else []
        )
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode:
            failures.append(f"{name}: the run failed: {done.stderr.strip().splitlines()[-1:]}")
            print(f"| {name} | (failed) |{' |' * len(modes)} |", flush=True)
            continue
        got = json.loads(done.stdout)
        memory = got["peak"] / got["largest"]
        for kind in INPUTS:
            cells = []
            for r in (r for r in got["rows"] if r["input"] == kind):
                ratio = r["large"] / max(r["small"], 1e-6)
                if r["large"] > 0.05:  # below that, the ratio is noise
                    worst = max(worst, ratio)
                cells.append(f"{ratio:.1f}x ({r['large']:.2f} s)")
                if r["result"].startswith("!!"):
                    failures.append(f"{name} {kind} {r['mode']}: {r['result']}")
            print(f"| {name} | {kind} | {' | '.join(cells)} | {memory:.0f}x |", flush=True)
    small, large = json_floor(sizes)
    print(f"\njson.loads of as many messages as `tiny`: {large / small:.1f}x ({large:.2f} s)")
    print(f"highest ratio (runs over 0.05 s): {worst:.1f}x")
    for f in failures:
        print("FAILED", f)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
