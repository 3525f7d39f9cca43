"""Reading tool calls out of model output: a completion with 3 tool calls, batch and streamed, in one run.

    python benchmarks/bench_tools.py [--quick] [--formats qwen2.5,qwen3]

For each format that writes tool calls, the completion a model writes after the prompt
(an answer, then three calls with nested JSON arguments, then the stop token) is read by:

* ``parse_completion`` of the whole completion (batch);
* ``StreamParser`` fed the prompt, then the completion in 1- and 16-character chunks, the
  way a server streams tokens (the prompt's feed is not timed);
* the regex-and-json.loads extraction the vLLM/SGLang Hermes tool parsers do in batch mode
  (``<tool_call>(.*?)</tool_call>`` then ``json.loads``), as the floor of a hand-written
  parser that checks nothing else. It is only meaningful for the Hermes formats.

Every reading is checked (the same three calls, the same arguments) before it is timed.
Reported: microseconds per completion, and the streamed time as a multiple of batch.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import timeit
from collections.abc import Callable
from typing import Any

import chatgrammar as cg

TOOL = {
    "type": "function",
    "function": {
        "name": "search_flights",
        "description": "Find flights.",
        "parameters": {
            "type": "object",
            "properties": {"from": {"type": "string"}, "to": {"type": "string"}, "filters": {"type": "object"}},
        },
    },
}
CALLS = [
    {"from": "CDG", "to": "NRT", "filters": {"max_stops": 1, "cabin": "economy", "airlines": ["AF", "JL"]}},
    {"from": "ZRH", "to": "JFK", "filters": {"max_stops": 0, "cabin": "business", "dates": ["2026-12-01"]}},
    {"from": "東京", "to": "São Paulo", "filters": {"flexible": True, "notes": 'window seat, "quiet" area'}},
]
HERMES = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)


def best_of(fn: Callable[[], Any], repeat: int) -> float:
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()
    return statistics.median(t / number for t in timer.repeat(repeat=repeat, number=number))


def case(name: str) -> tuple[str, str]:
    """The prompt, and the completion a model writes after it, both as the format writes them."""
    fmt = cg.get_format(name)
    user = [{"role": "user", "content": "Find me three flights."}]
    prompt = fmt.render(user, tools=[TOOL], add_generation_prompt=True)
    calls = [{"type": "function", "function": {"name": "search_flights", "arguments": a}} for a in CALLS]
    answer = {"role": "assistant", "content": "Searching three routes.", "tool_calls": calls}
    full = fmt.render([*user, answer], tools=[TOOL])
    assert full.startswith(prompt), name
    return prompt, full[len(prompt) :]


def stream(name: str, prompt: str, completion: str, size: int) -> list[cg.Event]:
    p = cg.StreamParser(name)
    p.feed(prompt)
    events: list[cg.Event] = []
    for i in range(0, len(completion), size):
        events += p.feed(completion[i : i + size])
    return events + p.close()


def streamed_calls(events: list[cg.Event]) -> list[tuple[str, Any]]:
    names = {e.index: e.name for e in events if isinstance(e, cg.ToolCallStart)}
    args: dict[int, list[str]] = {}
    for e in events:
        if isinstance(e, cg.ToolCallDelta):
            args.setdefault(e.index, []).append(e.arguments_text)
    return [(names[i], json.loads("".join(args[i]))) for i in sorted(names)]


def regex_calls(completion: str) -> list[tuple[str, Any]]:
    out = []
    for body in HERMES.findall(completion):
        call = json.loads(body)
        out.append((call["name"], call["arguments"]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--formats", default=None, help="comma-separated (default: every format that writes tool calls)")
    a = ap.parse_args()
    repeat = 3 if a.quick else 7
    names = (
        a.formats.split(",")
        if a.formats
        else [n for n in cg.formats() if "tool_call" in {s.role for s in cg.get_format(n)._c.shapes.values()}]
    )
    print(f"Python {platform.python_version()} on {platform.machine()}; chatgrammar {cg.__version__}")
    print(
        f"{'format':<10} {'chars':>6} {'batch µs':>9} {'1-char µs':>10} {'x batch':>8} {'16-char µs':>11} "
        f"{'x batch':>8} {'regex µs':>9}"
    )
    expected = [("search_flights", c) for c in CALLS]
    for name in names:
        fmt = cg.get_format(name)
        prompt, completion = case(name)
        got = fmt.parse_completion(completion, prompt=prompt)
        assert got.message is not None and not got.diagnostics
        assert [(c["function"]["name"], c["function"]["arguments"]) for c in got.message.tool_calls or []] == expected
        batch = best_of(lambda: fmt.parse_completion(completion, prompt=prompt), repeat)
        row = [f"{name:<10}", f"{len(completion):>6}", f"{batch * 1e6:>9.0f}"]
        for size in (1, 16):
            assert streamed_calls(stream(name, prompt, completion, size)) == expected
            t = best_of(lambda size=size: stream(name, prompt, completion, size), repeat)
            # The prompt's feed is part of each run; time it alone and take it out.
            t -= best_of(lambda: cg.StreamParser(name).feed(prompt), repeat)
            row += [f"{t * 1e6:>{10 if size == 1 else 11}.0f}", f"{t / batch:>8.1f}"]
        if "<tool_call>" in completion:
            assert regex_calls(completion) == expected
            row.append(f"{best_of(lambda: regex_calls(completion), repeat) * 1e6:>9.1f}")
        else:
            row.append(f"{'-':>9}")
        print(" ".join(row))


if __name__ == "__main__":
    main()
