"""Render and parse speed of chatgrammar against the alternatives, in one run.

    python benchmarks/bench.py [--quick] [--formats chatml,llama3]

Render: chatgrammar vs the real template rendered by jinja2 with Hugging Face's
settings (compiled once) vs a hand-written ``str.join``. Parse: chatgrammar vs a
well-written regex split (content as unrolled ``[^<]*`` runs, see
../shared/MEASUREMENTS.md), in MB/s. Chats: "short" = system + 3 turns of 4-40
words, "long" = 16 messages of 1-4 KB. Every baseline's output is checked
against chatgrammar's before it is timed. Ratios are what matter; absolute
times vary from run to run.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import re
import statistics
import sys
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

import chatgrammar as cg

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ROOT.parent / "shared" / "templates"
EXTRA_TEMPLATES = ROOT / "tests" / "templates"
sys.path.insert(0, str(TEMPLATES))

WORDS = [
    "the",
    "model",
    "reads",
    "a",
    "prompt",
    "and",
    "writes",
    "tokens",
    "while",
    "users",
    "wait",
    "for",
    "an",
    "answer",
    "about",
    "data",
    "code",
    "tests",
    "grammar",
    "parser",
    "render",
    "stream",
    "format",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
]

Msgs = list[dict[str, str]]


def words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def kilobytes(rng: random.Random, lo: int, hi: int) -> str:
    target = rng.randint(lo, hi)
    parts: list[str] = []
    size = 0
    while size < target:
        p = words(rng, rng.randint(8, 30))
        if rng.random() < 0.2:
            p += "\n\n"
        parts.append(p)
        size += len(p) + 1
    return " ".join(parts)[:target].strip()


def short_chat(rng: random.Random) -> Msgs:
    return [
        {"role": "system", "content": words(rng, rng.randint(4, 12))},
        {"role": "user", "content": words(rng, rng.randint(4, 40))},
        {"role": "assistant", "content": words(rng, rng.randint(4, 40))},
        {"role": "user", "content": words(rng, rng.randint(4, 40))},
    ]


def long_chat(rng: random.Random) -> Msgs:
    msgs = [{"role": "system", "content": kilobytes(rng, 1000, 4000)}]
    for i in range(15):
        msgs.append({"role": "user" if i % 2 == 0 else "assistant", "content": kilobytes(rng, 1000, 4000)})
    return msgs


# -- hand-written baselines (what a careful user would write for one format) ---------------------


def join_chatml(msgs: Msgs) -> str:
    return "".join([f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in msgs]) + "<|im_start|>assistant\n"


def join_llama3(msgs: Msgs) -> str:
    body = "".join(
        [f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n{m['content'].strip()}<|eot_id|>" for m in msgs]
    )
    return "<|begin_of_text|>" + body + "<|start_header_id|>assistant<|end_header_id|>\n\n"


def join_llama2(msgs: Msgs) -> str:
    out = []
    sys_text = msgs[0]["content"] if msgs[0]["role"] == "system" else None
    rest = msgs[1:] if sys_text is not None else msgs
    for i, m in enumerate(rest):
        if m["role"] == "user":
            c = m["content"]
            if i == 0 and sys_text is not None:
                c = f"<<SYS>>\n{sys_text}\n<</SYS>>\n\n{c}"
            out.append(f"<s>[INST] {c.strip()} [/INST]")
        else:
            out.append(f" {m['content'].strip()} </s>")
    return "".join(out)


JOINS: dict[str, Callable[[Msgs], str]] = {"chatml": join_chatml, "llama3": join_llama3, "llama2": join_llama2}

# -- regex parse baselines: content as unrolled runs, roles captured, no validation beyond the match --

REGEXES: dict[str, re.Pattern[str]] = {
    "chatml": re.compile(r"<\|im_start\|>([^\n]*)\n([^<]*(?:<(?!\|im_end\|>)[^<]*)*)<\|im_end\|>\n"),
    "llama3": re.compile(
        r"<\|start_header_id\|>([^<]*)<\|end_header_id\|>\n\n([^<]*(?:<(?!\|eot_id\|>)[^<]*)*)<\|eot_id\|>"
    ),
}


def regex_split(rx: re.Pattern[str]) -> Callable[[str], list[dict[str, str]]]:
    def parse(text: str) -> list[dict[str, str]]:
        return [{"role": m.group(1), "content": m.group(2)} for m in rx.finditer(text)]

    return parse


def best_of(fn: Callable[[], Any], repeat: int) -> float:
    """Median seconds per call over ``repeat`` rounds of an auto-sized loop."""
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()
    return statistics.median(t / number for t in timer.repeat(repeat=repeat, number=number))


def paired(ours: Callable[[], Any], theirs: Callable[[], Any], repeat: int) -> tuple[float, float, float]:
    """Seconds per call of each, and the median of their ratio over rounds timed back to back.

    The machine's speed drifts (other tenants, frequency scaling); timing the two
    alternately and taking the ratio per round cancels most of that drift.
    """
    t_ours, t_theirs = timeit.Timer(ours), timeit.Timer(theirs)
    n_ours, n_theirs = t_ours.autorange()[0], t_theirs.autorange()[0]
    a: list[float] = []
    b: list[float] = []
    for _ in range(repeat):
        a.append(t_ours.timeit(n_ours) / n_ours)
        b.append(t_theirs.timeit(n_theirs) / n_theirs)
    return statistics.median(a), statistics.median(b), statistics.median(x / y for x, y in zip(a, b, strict=True))


def jinja_renderer(fmt: cg.Format) -> Callable[[Msgs, bool], str] | None:
    if not TEMPLATES.is_dir() or not fmt.reference:
        return None
    import render_reference

    for folder in (TEMPLATES, EXTRA_TEMPLATES):
        entries = json.loads((folder / "index.json").read_text())
        entry = next((e for e in entries if e["template_file"] == fmt.reference), None)
        if entry is not None:
            break
    else:
        return None
    template = render_reference._compile((folder / fmt.reference).read_text())
    kwargs = dict(entry.get("render_kwargs", {}))

    def render(msgs: Msgs, gen: bool) -> str:
        return template.render(
            messages=msgs,
            add_generation_prompt=gen,
            bos_token=entry["bos_token"],
            eos_token=entry["eos_token"],
            **kwargs,
        )

    return render


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds (for a smoke run)")
    ap.add_argument("--formats", default=",".join(cg.formats()), help="comma-separated formats to time")
    args = ap.parse_args()
    repeat = 3 if args.quick else 7
    rng = random.Random(7)
    chats = {"short": [short_chat(rng) for _ in range(20)], "long": [long_chat(rng) for _ in range(4)]}

    print(f"chatgrammar {cg.__version__} on Python {platform.python_version()} ({platform.machine()})")
    print("times are per chat; ratio = chatgrammar / baseline (render) or chatgrammar MB/s / baseline MB/s (parse)\n")
    print(
        f"{'format':8} {'chat':5} | {'render':>8} {'join':>8} {'x join':>6} {'jinja2':>8} {'jinja/cg':>8} |"
        f" {'parse':>9} {'regex':>9} {'cg/regex':>8} {'lark':>9}"
    )
    worst_render, worst_parse = 0.0, float("inf")
    slowest: dict[str, tuple[float, str]] = {}  # chat size -> (µs per render, format)
    least_jinja: dict[str, tuple[float, str]] = {}  # chat size -> (speed-up over jinja2, format)
    for name in args.formats.split(","):
        fmt = cg.get_format(name)
        jinja = jinja_renderer(fmt)
        join = JOINS.get(name)
        rx = REGEXES.get(name)
        for size, convs in chats.items():
            convs = [c for c in convs if _renders(fmt, c)]
            if not convs:
                continue
            texts = [fmt.render(c, add_generation_prompt=True) for c in convs]
            nbytes = sum(len(t.encode()) for t in texts) / len(texts)

            def ours() -> Any:
                return [fmt.render(c, add_generation_prompt=True) for c in convs]

            t_cg = best_of(ours, repeat) / len(convs)
            if t_cg > slowest.get(size, (0.0, ""))[0]:
                slowest[size] = (t_cg, name)
            row = f"{name:8} {size:5} | {t_cg * 1e6:7.2f}µ"
            if join is not None:
                assert [join(c) for c in convs] == texts, f"{name}: the hand-written join disagrees"
                _, t_join, ratio = paired(ours, lambda: [join(c) for c in convs], repeat)
                worst_render = max(worst_render, ratio)
                row += f" {t_join / len(convs) * 1e6:7.2f}µ {ratio:6.2f}"
            else:
                row += f" {'-':>8} {'-':>6}"
            if jinja is not None:
                assert [jinja(c, True) for c in convs] == texts, f"{name}: jinja2 disagrees"
                _, t_j, ratio = paired(ours, lambda: [jinja(c, True) for c in convs], repeat)
                if 1 / ratio < least_jinja.get(size, (float("inf"), ""))[0]:
                    least_jinja[size] = (1 / ratio, name)
                row += f" {t_j / len(convs) * 1e6:7.2f}µ {1 / ratio:8.1f}"
            else:
                row += f" {'-':>8} {'-':>8}"

            def parse() -> Any:
                return [fmt.parse(t) for t in texts]

            t_parse = best_of(parse, repeat) / len(texts)
            row += f" | {nbytes / t_parse / 1e6:6.0f}MB/s"
            if rx is not None:
                split = regex_split(rx)
                got = [[(m.role, m.content) for m in fmt.parse(t) if m.complete] for t in texts]
                assert got == [[(d["role"], d["content"]) for d in split(t)] for t in texts], f"{name}: regex disagrees"
                _, t_rx, ratio = paired(parse, lambda: [split(t) for t in texts], repeat)
                worst_parse = min(worst_parse, 1 / ratio)
                row += f" {nbytes / (t_rx / len(texts)) / 1e6:6.0f}MB/s {1 / ratio:8.2f}"
            else:
                row += f" {'-':>9} {'-':>8}"
            t_lark = best_of(lambda: [fmt.lark.parse(t) for t in texts], max(1, repeat // 3)) / len(texts)
            row += f" {nbytes / t_lark / 1e6:6.0f}MB/s"
            print(row)
    print()
    for size, (t, name) in slowest.items():
        print(f"render, {size} chats: slowest format {name} at {t * 1e6:.2f}µs per chat")
    for size, (x, name) in least_jinja.items():
        print(f"render, {size} chats: smallest speed-up over its jinja2 template {x:.1f}x ({name})")
    if worst_render:
        print(f"render: slowest ratio to the hand-written join {worst_render:.2f} (target <= 2)")
    if worst_parse != float("inf"):
        print(f"parse: lowest share of the regex split's MB/s {worst_parse:.2f} (target >= 0.33)")


def _renders(fmt: cg.Format, msgs: Msgs) -> bool:
    try:
        fmt.render(msgs, add_generation_prompt=True)
    except cg.RenderError:
        return False
    return True


if __name__ == "__main__":
    main()
