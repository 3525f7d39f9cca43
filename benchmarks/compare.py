"""chatgrammar against the other chat-template libraries, in one run: the tables of docs/benchmarks.md.

    python benchmarks/compare.py [--quick] [--json] [--write docs/benchmarks.md] [--formats chatml,llama3]

Render: chatgrammar against transformers' own chat-template renderer, llm-templates and FastChat, for
the formats where each library has a template. A library is timed on a set of chats only after its output
has been checked equal, byte for byte, to chatgrammar's and to the model's real template (rendered by
jinja2 set up as Hugging Face sets it up); otherwise its cell says "differs" and a numbered note gives
the first differing offset. None of the libraries is needed: a missing one gets "not installed".

Parse: chatgrammar against a regex split (the floor, as in bench.py) and against its own Lark reference
parser, in MB/s. Chats are bench.py's: "short" = system + 3 turns of 4-40 words, "long" = 16 messages of
1-4 KB. Ratios are what matter; absolute times vary from run to run.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.metadata
import json
import os
import platform
import random
import shlex
import statistics
import sys
import timeit
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import chatgrammar as cg

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TEMPLATE_DIRS = (ROOT.parent / "shared" / "templates", ROOT / "tests" / "templates")
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(TEMPLATE_DIRS[0]))

from bench import REGEXES, long_chat, regex_split, short_chat  # noqa: E402

Msgs = list[dict[str, str]]
Renderer = Callable[[Msgs], str]

FORMATS = ("chatml", "llama3", "llama2", "mistral", "zephyr", "vicuna", "gemma", "phi-3-mini")

# -- the other libraries: each maps a chatgrammar format to its own template for the same model ----------------

# llm-templates' own template names (llm_templates/formats/*.py).
LLM_TEMPLATES = {
    "llama3": "llama3",
    "llama2": "llama2",
    "mistral": "mistral",
    "zephyr": "zephyr",
    "gemma": "gemma",
    "phi-3-mini": "phi3",
}
# Where llm-templates' add_assistant_prompt appends an empty assistant turn (closed by </s>) instead of
# opening one; these templates end the prompt at [/INST] without it, as the real templates do.
LLM_TEMPLATES_NO_ASSISTANT_PROMPT = frozenset({"llama2", "mistral"})

# FastChat's conversation templates (fastchat/conversation.py); a name this fschat does not register is skipped.
FASTCHAT = {
    "chatml": "OpenHermes-2.5-Mistral-7B",
    "llama3": "llama-3",
    "llama2": "llama-2",
    "mistral": "mistral",
    "zephyr": "zephyr",
    "vicuna": "vicuna_v1.1",
    "gemma": "gemma",
}


def reference_template(fmt: cg.Format) -> tuple[dict[str, Any], str] | None:
    """The index.json entry and source of the real template ``fmt`` reproduces, if it is on this machine."""
    for folder in TEMPLATE_DIRS:
        index = folder / "index.json"
        if not fmt.reference or not index.is_file():
            continue
        entry = next((e for e in json.loads(index.read_text()) if e["template_file"] == fmt.reference), None)
        if entry is not None:
            return entry, (folder / fmt.reference).read_text()
    return None


def transformers_renderer(fmt: cg.Format) -> tuple[str, Renderer] | None:
    """``render_jinja_template``: what ``tokenizer.apply_chat_template(..., tokenize=False)`` runs, no tokenizer."""
    from transformers.utils.chat_template_utils import render_jinja_template

    found = reference_template(fmt)
    if found is None:
        return None
    entry, source = found
    kwargs = {"bos_token": entry["bos_token"], "eos_token": entry["eos_token"], **entry.get("render_kwargs", {})}

    def render(msgs: Msgs) -> str:
        out, _ = render_jinja_template(conversations=[msgs], chat_template=source, add_generation_prompt=True, **kwargs)
        return str(out[0])

    return fmt.reference or "", render


def llm_templates_renderer(fmt: cg.Format) -> tuple[str, Renderer] | None:
    """``Formatter(model).render(Conversation(...), add_assistant_prompt=...)``."""
    from llm_templates import Content, Conversation, Formatter

    model = LLM_TEMPLATES.get(fmt.name)
    if model is None:
        return None
    formatter = Formatter(model)
    gen = model not in LLM_TEMPLATES_NO_ASSISTANT_PROMPT

    def render(msgs: Msgs) -> str:
        conversation = Conversation(model=model, messages=[Content(role=m["role"], content=m["content"]) for m in msgs])
        return str(formatter.render(conversation, add_assistant_prompt=gen))

    return model, render


def fastchat_renderer(fmt: cg.Format) -> tuple[str, Renderer] | None:
    """``get_conv_template(name)``, ``set_system_message``, ``append_message`` per turn, then ``get_prompt()``."""
    from fastchat.conversation import conv_templates, get_conv_template

    name = FASTCHAT.get(fmt.name)
    if name is None or name not in conv_templates:
        return None

    def render(msgs: Msgs) -> str:
        conv = get_conv_template(name)
        for m in msgs:
            if m["role"] == "system":
                conv.set_system_message(m["content"])
            else:
                conv.append_message(conv.roles[m["role"] == "assistant"], m["content"])
        conv.append_message(conv.roles[1], None)  # the generation prompt: an empty assistant turn
        return str(conv.get_prompt())

    return name, render


@dataclass(frozen=True)
class Library:
    key: str  # JSON key and column title
    module: str  # imported to tell whether it is installed
    dist: str  # distribution name, for its version
    renderer: Callable[[cg.Format], tuple[str, Renderer] | None]


LIBRARIES = (
    Library("transformers", "transformers.utils.chat_template_utils", "transformers", transformers_renderer),
    Library("llm-templates", "llm_templates", "llm-templates", llm_templates_renderer),
    Library("FastChat", "fastchat.conversation", "fschat", fastchat_renderer),
)


def importable(module: str) -> bool:
    """Whether ``module`` imports (it is then imported)."""
    # transformers logs "PyTorch was not found..." on import: rendering templates does not need it.
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


# -- timing -------------------------------------------------------------------------------------------------


def loops(fn: Callable[[], Any], budget: float) -> int:
    """The number of calls of ``fn`` that takes at least ``budget`` seconds (like ``Timer.autorange``)."""
    timer = timeit.Timer(fn)
    n = 1
    while True:
        for k in (1, 2, 5):
            if timer.timeit(n * k) >= budget:
                return n * k
        n *= 10


def interleaved(fns: dict[str, Callable[[], Any]], rounds: int, budget: float) -> dict[str, list[float]]:
    """Seconds per call of each function in each round, the functions taking turns within every round.

    The machine's speed drifts (other tenants, frequency scaling); timing the contenders in turn and taking
    their ratios round by round cancels most of that drift.
    """
    timers = {name: (timeit.Timer(fn), loops(fn, budget)) for name, fn in fns.items()}
    out: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, (timer, n) in timers.items():
            out[name].append(timer.timeit(n) / n)
    return out


def ratio(theirs: list[float], ours: list[float]) -> float:
    """The median over rounds of theirs / ours."""
    return statistics.median(t / o for t, o in zip(theirs, ours, strict=True))


# -- checks -------------------------------------------------------------------------------------------------


def digest(texts: list[str]) -> str:
    """One hash of a list of outputs, so that the JSON shows what was compared."""
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def first_difference(expected: str, got: str) -> int:
    return next(
        (i for i, (x, y) in enumerate(zip(expected, got, strict=False)) if x != y), min(len(expected), len(got))
    )


def describe(expected: list[str], got: list[str]) -> dict[str, Any]:
    """Where the first differing chat differs, and whether every difference is one missing or extra prefix."""
    i = next(k for k, (e, g) in enumerate(zip(expected, got, strict=True)) if e != g)
    e, g = expected[i], got[i]
    offset = first_difference(e, g)
    lo = max(0, offset - 12)
    out: dict[str, Any] = {
        "chat_index": i,
        "offset": offset,
        "expected": e[lo : offset + 24],
        "got": g[lo : offset + 24],
        "differing_chats": sum(x != y for x, y in zip(expected, got, strict=True)),
        "chats": len(expected),
    }
    for long_, short, key in ((e, g, "missing_prefix"), (g, e, "extra_prefix")):
        prefix = long_[: len(long_) - len(short)]
        if prefix and long_.endswith(short):
            pairs = zip(expected, got, strict=True) if key == "missing_prefix" else zip(got, expected, strict=True)
            if all(x == prefix + y for x, y in pairs):
                out[key] = prefix
    return out


def reference_texts(fmt: cg.Format, convs: list[Msgs]) -> list[str] | None:
    """The real template's text for each chat (jinja2 with Hugging Face's settings), if it is on this machine."""
    found = reference_template(fmt)
    if found is None:
        return None
    try:
        from render_reference import FIXED_NOW, render
    except ImportError:  # jinja2 is not installed
        return None

    entry, source = found
    return [
        render(
            source,
            c,
            bos_token=entry["bos_token"],
            eos_token=entry["eos_token"],
            add_generation_prompt=True,
            now=FIXED_NOW if entry.get("fixed_now") else None,
            engine="jinja2",
            **entry.get("render_kwargs", {}),
        )
        for c in convs
    ]


def chats_for(fmt: cg.Format, convs: list[Msgs]) -> list[Msgs]:
    """The chats as ``fmt`` takes them: without the system message where its template refuses one."""
    if fmt.system == "none":
        convs = [[m for m in c if m["role"] != "system"] for c in convs]
    out = []
    for c in convs:
        try:
            fmt.render(c, add_generation_prompt=True)
        except cg.RenderError:
            continue
        out.append(c)
    return out


# -- the run ------------------------------------------------------------------------------------------------


def run(formats: list[str], *, quick: bool, command: str) -> dict[str, Any]:
    rounds, budget = (3, 0.002) if quick else (7, 0.2)
    rng = random.Random(7)
    n_short, n_long = (4, 2) if quick else (20, 4)
    chats = {"short": [short_chat(rng) for _ in range(n_short)], "long": [long_chat(rng) for _ in range(n_long)]}
    installed = {lib.key: importable(lib.module) for lib in LIBRARIES}
    render_rows: list[dict[str, Any]] = []
    parse_rows: list[dict[str, Any]] = []
    for name in formats:
        fmt = cg.get_format(name)  # looked up once, as the libraries' templates are compiled once
        renderers = {lib.key: lib.renderer(fmt) if installed[lib.key] else None for lib in LIBRARIES}
        for size, all_convs in chats.items():
            convs = chats_for(fmt, all_convs)
            if not convs:
                raise SystemExit(f"{name}: refuses every {size} chat; choose another format")
            render_rows.append(render_row(fmt, size, convs, installed, renderers, rounds, budget))
            texts = [fmt.render(c, add_generation_prompt=True) for c in convs]
            parse_rows.append(parse_row(fmt, size, texts, rounds, budget))
    return {
        "command": command,
        "quick": quick,
        "rounds": rounds,
        "machine": machine(),
        "versions": {
            "chatgrammar": cg.__version__,
            "lark": version("lark"),
            "jinja2": version("jinja2"),
            **{lib.dist: version(lib.dist) for lib in LIBRARIES},
        },
        "installed": installed,
        "formats": formats,
        "render": render_rows,
        "parse": parse_rows,
    }


def render_row(
    fmt: cg.Format,
    size: str,
    convs: list[Msgs],
    installed: dict[str, bool],
    renderers: dict[str, tuple[str, Renderer] | None],
    rounds: int,
    budget: float,
) -> dict[str, Any]:
    """Every library on one set of chats: each checked against chatgrammar's texts first, timed only if equal."""
    texts = [fmt.render(c, add_generation_prompt=True) for c in convs]
    reference = reference_texts(fmt, convs)
    if reference is not None and reference != texts:
        raise SystemExit(f"{fmt.name}: chatgrammar differs from {fmt.reference}: {describe(reference, texts)}")
    cells: dict[str, dict[str, Any]] = {}
    timed: dict[str, Callable[[], Any]] = {
        "chatgrammar": lambda: [fmt.render(c, add_generation_prompt=True) for c in convs]
    }
    for key, found in renderers.items():
        if not installed[key]:
            cells[key] = {"status": "not installed"}
            continue
        if found is None:
            cells[key] = {"status": "no template"}
            continue
        template, render = found
        try:
            got = [render(c) for c in convs]
        except Exception as e:  # a library refusing a chat the real template takes is a difference too
            cells[key] = {"status": "differs", "template": template, "checked_equal": False, "error": f"{e!r}"}
            continue
        cells[key] = {"template": template, "sha": digest(got), "checked_equal": got == texts}
        if got == texts:
            cells[key]["status"] = "timed"
            timed[key] = lambda render=render: [render(c) for c in convs]
        else:
            cells[key].update(status="differs", **describe(texts, got))
    times = interleaved(timed, rounds, budget)
    ours = times.pop("chatgrammar")
    for key, theirs in times.items():
        cells[key].update(us=statistics.median(theirs) / len(convs) * 1e6, ratio=ratio(theirs, ours))
    return {
        "format": fmt.name,
        "chat": size,
        "chats": len(convs),
        "messages": len(convs[0]),
        "bytes": round(statistics.mean(len(t.encode()) for t in texts)),
        "system": fmt.system,
        "reference": fmt.reference if reference is not None else None,
        "chatgrammar_us": statistics.median(ours) / len(convs) * 1e6,
        "chatgrammar_sha": digest(texts),
        "baselines": cells,
    }


def parse_row(fmt: cg.Format, size: str, texts: list[str], rounds: int, budget: float) -> dict[str, Any]:
    """chatgrammar's parse (its scanner) against a regex split and its own Lark reference parser, in MB/s."""
    nbytes = statistics.mean(len(t.encode()) for t in texts)
    fns: dict[str, Callable[[], Any]] = {"chatgrammar": lambda: [fmt.parse(t) for t in texts]}
    rx = REGEXES.get(fmt.name)
    regex: dict[str, Any] = {"status": "no regex"}
    if rx is not None:
        split = regex_split(rx)
        got = [[(d["role"], d["content"]) for d in split(t)] for t in texts]
        want = [[(m.role, m.content) for m in fmt.parse(t) if m.complete] for t in texts]
        regex = {"status": "timed" if got == want else "differs", "checked_equal": got == want}
        if got == want:
            fns["regex"] = lambda: [split(t) for t in texts]
    fmt.lark.parse(texts[0])  # build the parser before timing it
    fns["lark"] = lambda: [fmt.lark.parse(t) for t in texts]
    times = interleaved(fns, rounds, budget)

    def mbs(name: str) -> float:
        return nbytes * len(texts) / statistics.median(times[name]) / 1e6

    if "regex" in times:
        regex.update(mbs=mbs("regex"), share=ratio(times["regex"], times["chatgrammar"]))
    return {
        "format": fmt.name,
        "chat": size,
        "bytes": round(nbytes),
        "chatgrammar_mbs": mbs("chatgrammar"),
        "regex": regex,
        "lark_mbs": mbs("lark"),
        "lark_ratio": ratio(times["lark"], times["chatgrammar"]),  # how many times longer Lark takes
    }


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": platform.platform(terse=True),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
    }


# -- output -------------------------------------------------------------------------------------------------


def us(x: float) -> str:
    return f"{x:.1f} µs" if x < 100 else f"{x:,.0f} µs"


def to_markdown(data: dict[str, Any]) -> str:
    """The whole of docs/benchmarks.md, from the JSON ``run`` returns."""
    keys = [lib.key for lib in LIBRARIES]
    differing: dict[tuple[str, str], list[tuple[str, dict[str, Any]]]] = {}  # (library, format) -> (chat, cell)
    for row in data["render"]:
        for key in keys:
            if row["baselines"][key]["status"] == "differs":
                differing.setdefault((key, row["format"]), []).append((row["chat"], row["baselines"][key]))
    labels: dict[tuple[str, str], int] = {}  # one note per library and format, numbered in order of use

    def note(key: str, fmt: str) -> str:
        return f"({labels.setdefault((key, fmt), len(labels) + 1)})"

    v = data["versions"]
    m = data["machine"]
    lines = [
        "# Benchmarks",
        "",
        "Written by `benchmarks/compare.py`; do not edit by hand. Produced with",
        "",
        "```sh",
        data["command"],
        "```",
        "",
        f"on {m['python']}, {m['os']}, {m['cpu']}, {m['cpu_count']} CPUs; "
        + ", ".join(f"{k} {v[k] or 'not installed'}" for k in v)
        + ".",
        "",
        "Absolute times vary from run to run and machine to machine: the ratios are what matter."
        + (" This was a `--quick` run (few chats, short rounds): its figures are rough." if data["quick"] else ""),
        "",
        "## Rendering",
        "",
        "Time per chat to render a prompt ready for generation (`add_generation_prompt=True`); in brackets, how many",
        "times longer the library takes than chatgrammar (the median of the ratios over rounds timed back to back).",
        "A library is timed only on chats where its output was first checked equal, byte for byte, to chatgrammar's",
        'and to the model\'s real template; elsewhere the cell says "differs" and the numbered note below says',
        'where. "—": the library has no template for that format.',
        "",
        "| format | chat | chatgrammar | " + " | ".join(keys) + " |",
        "|---|---|---:|" + "---:|" * len(keys),
    ]
    for row in data["render"]:
        cells = []
        for key in keys:
            cell = row["baselines"][key]
            status = cell["status"]
            if status == "timed":
                cells.append(f"{us(cell['us'])} ({times(cell['ratio'])})")
            elif status == "differs":
                cells.append("differs " + note(key, row["format"]))
            elif status == "no template":
                cells.append("—")
            else:
                cells.append(status)
        chat = f"{row['chat']} ({row['messages']} msgs)"
        lines.append(f"| {row['format']} | {chat} | {us(row['chatgrammar_us'])} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Parsing",
        "",
        "Prompts as rendered above, read back into messages. None of the libraries above reads a prompt back, so",
        "chatgrammar's `Format.parse` (its scanner) is compared with a regex split (content as unrolled `[^<]*` runs,",
        "no validation: the floor; written for two formats, and checked to give the same messages first) and with",
        "its own Lark LALR reference parser (`Format.lark.parse`, which builds a tree).",
        "",
        "| format | chat | size | chatgrammar | regex split | chatgrammar / regex | Lark reference"
        " | chatgrammar / Lark |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in data["parse"]:
        rx = row["regex"]
        if rx["status"] == "timed":
            regex, share = f"{rx['mbs']:,.0f} MB/s", f"{rx['share']:.2f}"
        else:
            regex, share = ("—" if rx["status"] == "no regex" else "differs"), "—"
        lines.append(
            f"| {row['format']} | {row['chat']} | {size(row['bytes'])} | {row['chatgrammar_mbs']:,.0f} MB/s | {regex} "
            f"| {share} | {row['lark_mbs']:,.1f} MB/s | {row['lark_ratio']:.1f}× |"
        )
    lines += ["", "## How", "", *how(data), ""]
    if labels:
        lines += ["## Where the libraries differ", ""]
        lines += [f"{label}. {difference_note(*where, differing[where])}" for where, label in labels.items()]
        lines.append("")
    return "\n".join(lines)


def times(ratio: float) -> str:
    return f"{ratio:,.0f}×" if ratio >= 100 else f"{ratio:.1f}×"


def size(nbytes: int) -> str:
    return f"{nbytes} B" if nbytes < 1000 else f"{nbytes / 1000:.0f} KB"


def code(text: str) -> str:
    r = repr(text)
    return f"`` {r} ``" if "`" in r else f"`{r}`"


def difference_note(key: str, fmt: str, cells: list[tuple[str, dict[str, Any]]]) -> str:
    """One footnote for a library's template on one format, over the chat sizes where it differs."""
    head = f"{key} (`{cells[0][1]['template']}`) on {fmt}"
    parts = []
    for chat, cell in cells:  # one sentence per chat size
        if "error" in cell:
            parts.append(f"On the {chat} chats it raises {cell['error']}")
            continue
        n, total = cell["differing_chats"], cell["chats"]
        which = f"The {total} {chat} chats all differ" if n == total else f"{n} of the {total} {chat} chats differ"
        part = (
            f"{which}, the first at offset {cell['offset']}: the real template writes {code(cell['expected'])},"
            f" {key} {code(cell['got'])}"
        )
        if "missing_prefix" in cell:
            part += f"; it leaves out only the leading {code(cell['missing_prefix'])}, the rest is identical"
        if "extra_prefix" in cell:
            part += f"; it only adds a leading {code(cell['extra_prefix'])}, the rest is identical"
        parts.append(part)
    return f"{head}: " + ". ".join(parts) + "."


def how(data: dict[str, Any]) -> list[str]:
    short = next(r for r in data["render"] if r["chat"] == "short")
    long_ = next(r for r in data["render"] if r["chat"] == "long")
    refuse = [r["format"] for r in data["render"] if r["chat"] == "short" and r["system"] == "none"]
    drop = [r["format"] for r in data["render"] if r["chat"] == "short" and r["system"] == "dropped"]
    chats = (
        f'- Chats: {short["chats"]} "short" ones (system + 3 turns of 4-40 words) and {long_["chats"]} "long"'
        " ones (system + 15 turns of 1-4 KB), generated as in `benchmarks/bench.py`."
    )
    if refuse:
        chats += (
            f" Formats whose template refuses a system message ({', '.join(refuse)}) get the same chats without it."
        )
    if drop:
        chats += f" The template of {', '.join(drop)} leaves the system message out, as chatgrammar does."
    return [
        chats,
        "- chatgrammar: `Format.render(messages, add_generation_prompt=True)` on a `Format` looked up once.",
        "- transformers: `transformers.utils.chat_template_utils.render_jinja_template`, which"
        " `tokenizer.apply_chat_template(..., tokenize=False)` runs once it has the template and special tokens;"
        " given the model's real template (`../shared/templates`) and its BOS/EOS tokens, compiled once and cached"
        " by transformers.",
        "- llm-templates: `Formatter(name).render(Conversation(model=name, messages=[Content(...)]),"
        " add_assistant_prompt=True)`, created once. For `llama2` and `mistral` without `add_assistant_prompt`,"
        " which there appends an empty, closed assistant turn; their prompts end at `[/INST]` like the real"
        " templates. llm-templates compiles its Jinja template on every call; its API offers no way to keep it.",
        "- FastChat (`fschat`): `get_conv_template(name)`, `set_system_message`, `append_message` per message and"
        " an empty assistant message, then `get_prompt()`.",
        f"- Timing: each figure is the median over {data['rounds']} rounds; within a round chatgrammar and every"
        " library timed on the same chats take turns, and a ratio is the median of the per-round ratios, which"
        " cancels most of the machine's drift.",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few chats and short rounds (for a smoke run)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON instead of markdown")
    ap.add_argument("--write", metavar="PATH", help="(re)write this markdown file, e.g. docs/benchmarks.md")
    ap.add_argument("--formats", default=",".join(FORMATS), help="comma-separated formats")
    args = ap.parse_args()
    command = shlex.join(["python", "benchmarks/compare.py", *sys.argv[1:]])
    formats = [cg.get_format(name).name for name in args.formats.split(",")]
    data = run(formats, quick=args.quick, command=command)
    text = to_markdown(data)
    if args.write:
        Path(args.write).write_text(text, encoding="utf-8")
    print(json.dumps(data, indent=1, ensure_ascii=False) if args.json else text)


if __name__ == "__main__":
    main()
