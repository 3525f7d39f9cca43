"""Reading tool calls out of model output: a completion with 3 tool calls, batch and streamed, in one run.

    python benchmarks/bench_tools.py [--quick] [--formats qwen2.5,qwen3]

For each format that writes tool calls, the completion a model writes after the prompt
(an answer where the template writes one beside calls, then three calls with nested JSON
arguments, up to the first stop token, where a model stops: fewer calls where the template
writes one per answer, or a stop token after the second) is read by:

* ``parse_completion`` of the whole completion (batch; this includes reading the prompt,
  which it does to know where the completion starts);
* ``StreamParser`` fed the prompt, then the completion without its stop token (servers do
  not pass it on) in 1- and 16-character chunks, the way a server streams tokens, then
  ``close(stopped=True)`` (the prompt's feed is timed apart and taken out);
* a floor: what a hand-written parser that checks nothing else does (the vLLM/SGLang tool
  parsers in batch mode): a regex for each call's name (and id) between the literals the
  grammar writes before them, then ``json`` decoding of the arguments that follow. Shown
  where that reads the calls right.

What each format is given is derived from it: tool definitions where it writes them, call
ids of the length it requires, arguments as JSON text where it takes only text. Every
reading is checked (the same answer, calls, names, arguments and ids) before it is timed.

Then, linearity: the completion with its answer and its arguments 10 times longer, streamed
in 1-character chunks, against the original: the times' ratio over the lengths' ratio is ~1
for a linear stream, and grows with the length for one that re-reads its growing turn on
each chunk.

Reported: microseconds per completion, each time as a multiple of batch, and the highest
multiples across formats.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import timeit
from collections.abc import Callable
from typing import Any

import chatgrammar as cg
from chatgrammar._reader import unescape

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
ANSWER = "Searching three routes."
LONGER = 10  # how much longer the content of the linearity run is
DECODER = json.JSONDecoder()

Call = tuple[str, Any, "str | None"]  # name, arguments, id


def best_of(fn: Callable[[], Any], repeat: int) -> float:
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()
    return statistics.median(t / number for t in timer.repeat(repeat=repeat, number=number))


def value(arguments: Any) -> Any:
    """Arguments as their value (read back as JSON text where the template takes text)."""
    return json.loads(arguments) if isinstance(arguments, str) else arguments


def roles(fmt: cg.Format) -> set[str | None]:
    """The roles of the format's message rules, structural roles included."""
    return {s.role for s in fmt._c.shapes.values()}


class Case:
    """A prompt and the completion a model writes after it, as the format writes them, and the
    answer ``parse_completion`` must read (``normalize`` shows what the template keeps of it).
    What the format is given depends on what it writes. ``longer``: the answer's content and
    each call's arguments that many times as long (the arguments hold copies of themselves)."""

    def __init__(self, name: str, longer: int = 1) -> None:
        fmt = self.fmt = cg.get_format(name)
        tools = [TOOL] if "tool_def" in roles(fmt) else None
        user = [{"role": "user", "content": "Find me three flights."}]
        self.prompt = fmt.render(user, tools=tools, add_generation_prompt=True)
        width = fmt._c.payloads.id_length or 9
        ids = [f"call{k:0{width - 4}d}" for k in range(len(CALLS))]
        as_text = fmt._c.payloads.args == "text"  # a template that takes JSON text only (DeepSeek V3)
        calls = [self._call(a, i, longer, as_text) for a, i in zip(CALLS, ids, strict=True)]
        # An answer before the calls, where the template writes one beside them (DeepSeek's do not).
        answer = {"role": "assistant", "content": ANSWER * longer, "tool_calls": calls[:1]}
        if not self._writes(user, answer, tools):
            answer["content"] = ""
        # The completion ends at the first stop token, where a model stops; as many of the calls
        # as the format writes in one answer before it (one per answer in some; DeepSeek V3's
        # template writes a stop token after the second call of three).
        for n in range(len(calls), 0, -1):
            answer["tool_calls"] = calls[:n]
            if self._writes(user, answer, tools):
                completion = self._completion([*user, answer], tools)
                found = [(completion.find(s), s) for s in fmt.stop if s in completion]
                at, stop = min(found) if found else (len(completion), "")
                self.completion = completion[: at + len(stop)]
                self.output, self.stopped = completion[:at], bool(stop)  # what a server streams
                if all(json.dumps(c["from"], ensure_ascii=False) in self.completion for c in CALLS[:n]):
                    break
        written = fmt.normalize([*user, answer], tools=tools)[-1]
        self.answer = written.content
        self.expected: list[Call] = [
            (c["function"]["name"], value(c["function"]["arguments"]), c.get("id")) for c in written.tool_calls or []
        ]

    def _completion(self, messages: list[dict[str, Any]], tools: list[Any] | None) -> str:
        """What a model writes after the prompt to end with the last of ``messages``: the model
        writes on from the prompt; where the prompt opens what the history does not write
        (DeepSeek-R1's <think>), from the last token the two share."""
        full = self.fmt.render(messages, tools=tools)
        k = len(os.path.commonprefix([self.prompt, full]))
        while k < len(self.prompt) and k and not any(full.startswith(t, k) for t in self.fmt.tokens):
            k -= 1
        return full[k:]

    @staticmethod
    def _call(arguments: dict[str, Any], call_id: str, longer: int, as_text: bool) -> dict[str, Any]:
        if longer > 1:
            arguments = {**arguments, "alternatives": [arguments] * (longer - 1)}
        args: Any = json.dumps(arguments, ensure_ascii=False) if as_text else arguments
        return {"type": "function", "id": call_id, "function": {"name": "search_flights", "arguments": args}}

    def _writes(self, user: list[dict[str, Any]], answer: dict[str, Any], tools: list[Any] | None) -> bool:
        """Whether the format writes this answer (several calls, content beside them)."""
        try:
            self.fmt.render([*user, answer], tools=tools)
        except cg.UnsupportedConversationError:
            return False
        return True


def stream(name: str, prompt: str, output: str, size: int, stopped: bool) -> list[cg.Event]:
    """The events of a stream of the prompt, then of the model's output (its stop string, which
    servers do not pass on, left out) in chunks of ``size`` characters."""
    p = cg.StreamParser(name)
    p.feed(prompt)
    events: list[cg.Event] = []
    for i in range(0, len(output), size):
        events += p.feed(output[i : i + size])
    return events + p.close(stopped=stopped)


def streamed(events: list[cg.Event]) -> tuple[str, list[Call]]:
    """The answer's content and its calls, as the events of the completion tell them (the events
    of the prompt's last turn, decided by the completion's first characters, left out)."""
    names = {e.index: e.name for e in events if isinstance(e, cg.ToolCallStart)}
    ids = {e.index: e.id for e in events if isinstance(e, cg.ToolCallEnd)}
    args: dict[int, list[str]] = {}
    for e in events:
        if isinstance(e, cg.ToolCallDelta):
            args.setdefault(e.index, []).append(e.arguments_text)
    last = max(e.index for e in events if isinstance(e, cg.MessageStart))
    content = "".join(e.text for e in events if isinstance(e, cg.ContentDelta) and e.index == last)
    return content, [(names[i], json.loads("".join(args[i])), ids[i]) for i in sorted(names)]


def floor(fmt: cg.Format) -> Callable[[str], list[Call]] | None:
    """A hand-written reader of the format's calls: each part before the arguments (the name,
    the id) between the literals the grammar writes before it and before the next part, then the
    JSON that follows (None: the arguments are not last, or a part has no literal before it)."""
    order = fmt._c.payloads.call_order
    before: dict[str, str] = {}
    for shape in fmt._c.shapes.values():
        k = next(i for i, p in enumerate(shape.regex) if not isinstance(p, str))
        if shape.role in order and k and isinstance(shape.regex[k - 1], str):
            before[shape.role] = unescape(shape.regex[k - 1])
    if order[-1] != "tool_args" or set(before) != set(order):
        return None
    calls = re.compile("".join(re.escape(before[part]) + ("(.*?)" if part != "tool_args" else "") for part in order))
    has_id = "tool_call_id" in order

    def read(completion: str) -> list[Call]:
        found = []
        for m in calls.finditer(completion):
            found.append((m[1], DECODER.raw_decode(completion, m.end())[0], m[2] if has_id else None))
        return found

    return read


def check(case: Case, name: str) -> None:
    """Every reading of the completion gives the answer and the calls it was rendered from."""
    got = case.fmt.parse_completion(case.completion, prompt=case.prompt)
    assert got.message is not None and not got.diagnostics, (name, got.diagnostics)
    assert got.message.content == case.answer, name
    calls = [(c["function"]["name"], value(c["function"]["arguments"]), c.get("id")) for c in got.message.tool_calls]
    assert calls == case.expected, (name, calls)
    for size in (1, 16):
        events = stream(name, case.prompt, case.output, size, case.stopped)
        assert streamed(events) == (case.answer, case.expected), name


def time_stream(name: str, case: Case, size: int, repeat: int) -> float:
    """Seconds to stream the completion (the prompt's feed, timed alone, taken out)."""
    t = best_of(lambda: stream(name, case.prompt, case.output, size, case.stopped), repeat)
    return t - best_of(lambda: cg.StreamParser(name).feed(case.prompt), repeat)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--formats", default=None, help="comma-separated (default: every format that writes tool calls)")
    a = ap.parse_args()
    repeat = 3 if a.quick else 7
    names = a.formats.split(",") if a.formats else [n for n in cg.formats() if "tool_call" in roles(cg.get_format(n))]
    print(f"Python {platform.python_version()} on {platform.machine()}; chatgrammar {cg.__version__}")
    print("µs per completion; (x) = that time / batch parse_completion; floor: regex + json, no checks\n")
    head = f"{'format':<18} {'calls':>5} {'chars':>5} {'batch µs':>9} {'1-char µs':>16} {'16-char µs':>16}"
    print(f"{head} {'floor µs':>14} {f'1-char, {LONGER}x text':>17}")
    worst: dict[str, tuple[float, str]] = {}
    for name in names:
        case, long = Case(name), Case(name, LONGER)
        check(case, name)
        check(long, name)
        batch = best_of(lambda case=case: case.fmt.parse_completion(case.completion, prompt=case.prompt), repeat)
        row = [f"{name:<18}", f"{len(case.expected):>5}", f"{len(case.completion):>5}", f"{batch * 1e6:>9.0f}"]
        streams = {size: time_stream(name, case, size, repeat) for size in (1, 16)}
        for size, t in streams.items():
            row.append(f"{t * 1e6:>8.0f} ({t / batch:>4.1f}x)")
            worst[f"{size}-character chunks"] = max(worst.get(f"{size}-character chunks", (0, "")), (t / batch, name))
        read = floor(case.fmt)
        if read is not None and read(case.completion) == case.expected:
            t = best_of(lambda read=read, case=case: read(case.completion), repeat)
            row.append(f"{t * 1e6:>6.1f} ({t / batch:>5.3f}x)")
        else:
            row.append(f"{'-':>14}")
        # The longer completion: its 1-character stream's time over the original's (~10 is linear).
        growth = time_stream(name, long, 1, repeat) / streams[1]
        chars = len(long.completion) / len(case.completion)
        row.append(f"{chars:>5.1f}x chars {growth:>4.1f}x")
        worst["10x text, time / chars"] = max(worst.get("10x text, time / chars", (0, "")), (growth / chars, name))
        print(" ".join(row))
    print()
    for what, (ratio, name) in worst.items():
        print(f"highest, {what}: {ratio:.1f}x ({name})")


if __name__ == "__main__":
    main()
