"""The command line: ``chatgrammar`` (or ``python -m chatgrammar``).

A thin layer over the library: it reads files or stdin (``-``), writes stdout,
reports problems on stderr as ``file:line:col: message`` and exits 0 (done),
1 (the input has a problem) or 2 (the command line is wrong).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from collections.abc import Iterator, Sequence
from typing import Any, TextIO

from ._api import convert
from ._errors import ChatGrammarError, ParseError, RenderError
from ._format import Format
from ._registry import formats, get_format
from ._results import Diagnostic

__all__ = ["main"]

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2


class _Problem(Exception):
    """An input problem, already worded as ``file:line:col: message``."""


class _Usage(Exception):
    """A command-line mistake (exit 2)."""


def _option_value(text: str) -> Any:
    """A -o value: JSON when it reads as JSON (false, 3, "x"), else the text itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        status: int = args.run(args)
        return status
    except _Problem as e:
        print(str(e), file=sys.stderr)
        return EXIT_PROBLEM
    except _Usage as e:
        print(f"chatgrammar: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except ChatGrammarError as e:
        if isinstance(e, LookupError):  # an unknown format name is a usage error
            print(f"chatgrammar: error: {e}", file=sys.stderr)
            return EXIT_USAGE
        print(f"chatgrammar: {e}", file=sys.stderr)
        return EXIT_PROBLEM
    except BrokenPipeError:  # e.g. `chatgrammar parse ... | head`
        return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="chatgrammar",
        description="Render chat messages as a model's prompt text, and parse such text back.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    f = sub.add_parser("formats", help="list the chat formats")
    f.add_argument("--long", action="store_true", help="show aliases, model ids, role policies, stop strings, losses")
    f.add_argument("--markdown", action="store_true", help="write the catalogue page (docs/formats.md)")
    f.set_defaults(run=_formats)

    r = sub.add_parser("render", help="JSON messages -> prompt text")
    r.add_argument("-f", "--format", required=True, help="format name, alias or model id, or a .lark file")
    r.add_argument("file", nargs="?", default="-", help="JSON list of messages, or {messages, ...} (default: stdin)")
    r.add_argument(
        "-g", "--add-generation-prompt", action="store_true", help="open the assistant's turn after the messages"
    )
    r.add_argument(
        "--allow-unsafe", action="store_true", help="render content that holds the format's delimiters anyway"
    )
    r.add_argument(
        "-o",
        "--option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a template switch, e.g. enable_thinking=false (see `formats --long`)",
    )
    r.add_argument("--date", help="the date a template prints, YYYY-MM-DD (default: today, as the template does)")
    r.add_argument("--tools", metavar="FILE", help="JSON list of tool definitions (JSON schemas), as tools=")
    _stream_options(r, "one conversation per line in, one JSON string (the text) per line out")
    r.set_defaults(run=_render)

    q = sub.add_parser(
        "parse",
        help="prompt text -> JSON messages ({messages, tools} when the text lists tool definitions)",
    )
    q.add_argument("-f", "--format", required=True, help="format name, alias or model id, or a .lark file")
    q.add_argument("file", nargs="?", default="-", help="the text (default: stdin)")
    q.add_argument("--indent", type=int, default=None, help="indent the JSON output")
    q.add_argument(
        "--tolerant",
        action="store_true",
        help="read truncated or damaged text: its problems go to stderr, the messages read to stdout",
    )
    _stream_options(q, "one text (a JSON string, or an object with 'text') per line in, one message list per line out")
    q.set_defaults(run=_parse)

    c = sub.add_parser(
        "convert",
        help="rewrite prompt texts from one format in another (parse, then render)",
        description=(
            "Read a text written in one format and write it in another. What the target cannot write (a "
            "system message where it has none, content holding its delimiters) is an error, never dropped."
        ),
    )
    c.add_argument("--from", dest="source", required=True, metavar="FMT", help="the format the text is in")
    c.add_argument("--to", dest="target", required=True, metavar="FMT", help="the format to write")
    c.add_argument("file", nargs="?", default="-", help="the text (default: stdin)")
    c.add_argument("--date", help="the date the target prints, YYYY-MM-DD (default: today)")
    _stream_options(c, "one text (a JSON string, or an object with 'text') per line in, one JSON string per line out")
    c.set_defaults(run=_convert)

    sh = sub.add_parser("show", help="a format's metadata and grammar")
    sh.add_argument("format", metavar="FMT", help="format name, alias or model id, or a .lark file")
    sh.add_argument("--json", action="store_true", help="the metadata as JSON, without the grammar")
    sh.set_defaults(run=_show)

    st = sub.add_parser("stop", help="a format's stop strings, as a JSON list (for a server's stop=)")
    st.add_argument("format", metavar="FMT", help="format name, alias or model id, or a .lark file")
    st.add_argument("--lines", action="store_true", help="one per line, as JSON strings, instead of a list")
    st.set_defaults(run=_stop)

    v = sub.add_parser(
        "validate",
        help="report every problem of a prompt text (or JSON messages) as file:line:col: code message",
    )
    v.add_argument("-f", "--format", required=True, help="format name, alias or model id, or a .lark file")
    v.add_argument("files", nargs="*", default=["-"], metavar="FILE", help="texts to check (default: stdin)")
    v.add_argument("--messages", action="store_true", help="the files hold JSON lists of messages, not prompt texts")
    v.add_argument("--hints", action="store_true", help="print each problem's hint under it")
    v.add_argument(
        "--jsonl",
        action="store_true",
        help="JSON Lines: one text (or message list, with --messages) per line; implied by a .jsonl name",
    )
    v.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None, help="a progress line on stderr")
    v.set_defaults(run=_validate)

    d = sub.add_parser("detect", help="name the formats a text is written in, best first")
    d.add_argument("file", nargs="?", default="-", help="the text (default: stdin)")
    d.add_argument("--all", action="store_true", help="list every format that reads the text, with its score")
    d.set_defaults(run=_detect)

    i = sub.add_parser(
        "import",
        help="derive a format from a model's chat template: prints its grammar (a summary goes to stderr)",
        description=(
            "Derive a chatgrammar format from a chat template and print its grammar. SOURCE is a Jinja "
            "template file (or - for stdin), a tokenizer_config.json, a .gguf file, a model folder, or a "
            "Hugging Face model id found in the local cache (nothing is downloaded). The grammar is "
            "verified against the template on generated conversations first; when the template cannot "
            "be captured, the probe that diverged is reported and the exit status is 1."
        ),
    )
    i.add_argument("source", metavar="SOURCE", help="template, tokenizer_config.json, .gguf, folder or model id")
    i.add_argument("--name", help="the format's name (default: from the source)")
    i.add_argument("--bos", default=None, help="the BOS token, for a bare template file")
    i.add_argument("--eos", default=None, help="the EOS token, for a bare template file")
    i.add_argument("--template-name", help="which of a tokenizer's named templates (default: 'default')")
    i.add_argument("--conversations", type=int, default=300, help="generated conversations to verify on (default: 300)")
    i.add_argument("--match", action="store_true", help="also name the built-in format the template is equivalent to")
    i.add_argument("-o", "--output", metavar="FILE", help="write the grammar to FILE instead of stdout")
    i.set_defaults(run=_import)

    e = sub.add_parser(
        "export",
        help="write a format as a Jinja chat template, its Lark grammar, its stop strings, or a decoding grammar",
    )
    e.add_argument("-f", "--format", required=True, help="format name, alias or model id, or a .lark file")
    e.add_argument(
        "--to",
        required=True,
        choices=["jinja", "lark", "stop", "gbnf", "llguidance"],
        help=(
            "jinja: a Hugging Face chat_template rendering byte-identically; lark: the grammar; stop: the stop "
            "strings as a JSON list; gbnf (llama.cpp) or llguidance (Lark): the assistant's answer, for "
            "constrained decoding"
        ),
    )
    e.add_argument("--special-tokens", action="store_true", help="gbnf/llguidance: write the stop as a special token")
    e.set_defaults(run=_export)
    return p


def _stream_options(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--jsonl",
        action="store_true",
        help=f"JSON Lines ({what}; a failed line gives null, its error goes to stderr). "
        "Streamed in constant memory. Implied by a .jsonl file name",
    )
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a progress line on stderr while reading a file (default: when stderr is a terminal)",
    )


def _format_arg(name: str) -> Format:
    import os

    if name.endswith(".lark") and os.path.isfile(name):
        from ._custom import load_format

        return load_format(name)
    return get_format(name)


def _jsonl(args: argparse.Namespace) -> bool:
    return bool(args.jsonl or args.file.endswith(".jsonl"))


class _Progress:
    """A progress line on stderr: bytes read of the file, rows, rows per second (redrawn 5 times a second)."""

    def __init__(self, path: str, enabled: bool | None) -> None:
        import os
        import time

        self._time = time.monotonic
        self.total = os.path.getsize(path) if path != "-" and os.path.isfile(path) else 0
        self.on = (sys.stderr.isatty() if enabled is None else enabled) and path != "-"
        self.start = self.last = self._time()
        self.rows = self.done = 0

    def step(self, nbytes: int) -> None:
        self.rows += 1
        self.done += nbytes
        if self.on and self._time() - self.last >= 0.2:
            self.last = self._time()
            self._draw()

    def _draw(self, end: str = "") -> None:
        rate = self.rows / max(self._time() - self.start, 1e-9)
        pct = f"{100 * self.done / self.total:5.1f}% " if self.total else ""
        sys.stderr.write(f"\r{pct}{self.rows:,} rows, {rate:,.0f} rows/s{end}")
        sys.stderr.flush()

    def close(self) -> None:
        if self.on:
            self._draw("\n")


def _each_line(path: str, progress_shown: bool | None) -> Iterator[tuple[int, Any]]:
    """(line number, JSON value or _Problem) of each line of a JSON Lines input, streamed; blank
    lines skipped."""
    progress = _Progress(path, progress_shown)
    source = _name(path)
    fh = sys.stdin if path == "-" else None
    try:
        if fh is None:
            try:
                fh = open(path, encoding="utf-8", newline="")  # noqa: SIM115 - closed below
            except OSError as e:
                raise _Problem(f"{source}: {e.strerror or e}") from None
        for number, line in enumerate(fh, 1):
            progress.step(len(line.encode("utf-8")))
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as e:
                yield number, _Problem(f"{source}:{number}:{e.colno}: not valid JSON: {e.msg}")
    finally:
        progress.close()
        if fh is not None and fh is not sys.stdin:
            fh.close()


def _run_lines(args: argparse.Namespace, one: Any) -> int:
    """Apply ``one(value, where)`` to every line; write its JSON result (null on a problem)."""
    problems = 0
    out = sys.stdout
    source = _name(args.file)
    for number, value in _each_line(args.file, args.progress):
        try:
            if isinstance(value, _Problem):
                raise value
            result = one(value, f"{source}:{number}")
        except _Problem as e:
            print(str(e), file=sys.stderr)
            problems += 1
            result = None
        out.write(json.dumps(result, ensure_ascii=False) + "\n")
    return EXIT_PROBLEM if problems else EXIT_OK


def _text_of(value: Any, where: str) -> str:
    if isinstance(value, dict):
        value = value.get("text")
    if not isinstance(value, str):
        raise _Problem(f"{where}:1: expected a JSON string or an object with 'text'")
    return value


def _read(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            return fh.read()
    except OSError as e:
        raise _Problem(f"{path}: {e.strerror or e}") from None


def _name(path: str) -> str:
    return "<stdin>" if path == "-" else path


def _formats(args: argparse.Namespace) -> int:
    out: TextIO = sys.stdout
    if args.markdown:
        from ._catalogue import formats_markdown

        out.write(formats_markdown())
        return EXIT_OK
    for name in formats():
        if not args.long:
            out.write(name + "\n")
            continue
        fmt = get_format(name)
        policy = fmt.policy
        rows = [
            ("aliases", ", ".join(fmt.aliases) or "-"),
            ("models", ", ".join(fmt.models) or "-"),
            ("roles", ", ".join(policy.roles) if policy.roles is not None else "any"),
            (
                "system",
                policy.system
                + ("" if policy.system != "native" else ", anywhere" if policy.system_anywhere else ", first only"),
            ),
            ("alternation", "required" if policy.alternation else "not required"),
            ("stop", json.dumps(fmt.stop, ensure_ascii=False)),
            ("generation", json.dumps(fmt.generation_prompt, ensure_ascii=False)),
        ]
        if fmt.options:
            rows.append(("options", ", ".join(f"{k}={'|'.join(map(str, v))}" for k, v in fmt.option_values.items())))
        if policy.default_system is not None:
            rows.append(("default", json.dumps(policy.default_system, ensure_ascii=False)))
        rows += [("loses", loss) for loss in policy.losses]
        out.write(f"{name}\n")
        for label, value in rows:
            out.write(f"  {label + ':':<13}{value}\n")
    return EXIT_OK


def _render(args: argparse.Namespace) -> int:
    fmt = _format_arg(args.format)
    options: dict[str, Any] = {}
    for item in args.option:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise _Usage(f"-o takes NAME=VALUE, not {item!r}")
        options[key] = _option_value(value)
    if args.tools is not None:
        tools = _load_json(_read(args.tools), _name(args.tools))
        if not isinstance(tools, list):
            raise _Problem(f"{_name(args.tools)}:1:1: expected a JSON list of tool definitions")
        options["tools"] = tools
    date = _date(args.date) if args.date is not None else None
    if _jsonl(args):
        return _run_lines(args, lambda value, where: _render_one(fmt, value, where, args, options, date))
    source = _name(args.file)
    sys.stdout.write(_render_one(fmt, _load_json(_read(args.file), source), source, args, options, date))
    return EXIT_OK


def _date(text: Any) -> datetime.date:
    try:
        return datetime.date.fromisoformat(str(text))
    except ValueError:
        raise _Usage(f"--date takes YYYY-MM-DD, not {text!r}") from None


def _render_one(
    fmt: Format,
    data: Any,
    where: str,
    args: argparse.Namespace,
    given: dict[str, Any],
    when: datetime.date | None,
) -> str:
    gen = args.add_generation_prompt
    options = dict(given)
    if isinstance(data, dict):  # {"messages": [...], "add_generation_prompt": ..., "date": ..., other switches}
        data = dict(data)
        gen = gen or bool(data.pop("add_generation_prompt", False))
        date = data.pop("date", None)
        if when is None and date is not None:
            when = _date(date)
        messages = data.pop("messages", None)
        options = {**data, **options}
        data = messages
    if not isinstance(data, list):
        raise _Problem(f"{where}:1: expected a JSON list of messages or an object with 'messages'")
    try:
        return fmt.render(
            data,
            add_generation_prompt=gen,
            on_unsafe="allow" if args.allow_unsafe else "raise",
            date=when,
            **options,
        )
    except RenderError as e:
        raise _render_problem(where, e) from None


def _render_problem(where: str, e: RenderError) -> _Problem:
    """``where: message i: reason`` (the message named once, where the reason does not name it)."""
    at = f"message {e.index}: " if e.index is not None and f"message {e.index}" not in str(e) else ""
    return _Problem(f"{where}: {at}{e}")


def _parse(args: argparse.Namespace) -> int:
    fmt: Format = _format_arg(args.format)
    if _jsonl(args):
        return _run_lines(args, lambda value, where: _parse_one(fmt, _text_of(value, where), where, args.tolerant))
    source = _name(args.file)
    text = _read(args.file)
    try:
        parsed = fmt.parse(text, strict=not args.tolerant)
    except ParseError as e:
        raise _Problem(f"{source}:{e.line}:{e.column}: {e.reason}\n{e.snippet}") from None
    # A strict reading reports payloads that are not JSON too (kept as their text).
    diagnostics: list[Diagnostic] = getattr(parsed, "diagnostics", [])
    for d in diagnostics:
        print(f"{source}:{d}", file=sys.stderr)
    messages = [m.to_dict() for m in parsed]
    # What render takes back: the messages, with the tool definitions the text lists.
    tools = getattr(parsed, "tools", None)
    out: Any = messages if tools is None else {"messages": messages, "tools": tools}
    json.dump(out, sys.stdout, ensure_ascii=False, indent=args.indent)
    sys.stdout.write("\n")
    return EXIT_PROBLEM if diagnostics else EXIT_OK


def _parse_one(fmt: Format, text: str, where: str, tolerant: bool) -> Any:
    """One text of a JSON Lines input: its messages (with the tools it lists), as parse writes them."""
    try:
        parsed = fmt.parse(text, strict=not tolerant)
    except ParseError as e:
        raise _Problem(f"{where}: text line {e.line}, column {e.column}: {e.reason}") from None
    for d in getattr(parsed, "diagnostics", []):
        print(f"{where}: text {d}", file=sys.stderr)
    messages = [m.to_dict() for m in parsed]
    tools = getattr(parsed, "tools", None)
    return messages if tools is None else {"messages": messages, "tools": tools}


def _convert(args: argparse.Namespace) -> int:
    source_fmt, target_fmt = _format_arg(args.source), _format_arg(args.target)
    when = _date(args.date) if args.date is not None else None

    def one(text: str, where: str, at_line: bool) -> str:
        try:
            return convert(text, source_fmt, target_fmt, date=when)
        except ParseError as e:
            place = f"{where}:{e.line}:{e.column}" if at_line else f"{where}: text line {e.line}, column {e.column}"
            raise _Problem(f"{place}: {e.reason}" + (f"\n{e.snippet}" if at_line else "")) from None
        except RenderError as e:
            raise _render_problem(f"{where}: {target_fmt.name} cannot write it", e) from None

    if _jsonl(args):
        return _run_lines(args, lambda value, where: one(_text_of(value, where), where, False))
    sys.stdout.write(one(_read(args.file), _name(args.file), True))
    return EXIT_OK


def _show(args: argparse.Namespace) -> int:
    fmt = _format_arg(args.format)
    policy = fmt.policy
    meta: dict[str, Any] = {
        "name": fmt.name,
        "description": fmt.description,
        "aliases": fmt.aliases,
        "models": fmt.models,
        "roles": policy.roles,
        "system": policy.system,
        "alternation": policy.alternation,
        "bos": fmt.bos,
        "eos": fmt.eos,
        "stop": fmt.stop,
        "generation_prompt": fmt.generation_prompt,
        "tokens": fmt.tokens,
        "markers": fmt.markers,
        "options": {k: list(v) for k, v in fmt.option_values.items()},
        "default_system": policy.default_system,
        "losses": list(policy.losses),
        "reference": fmt.reference,
    }
    if args.json:
        json.dump(meta, sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
        return EXIT_OK
    for key, value in meta.items():
        plain = isinstance(value, str) and value.isprintable() and value == value.strip()
        shown = "any" if key == "roles" and value is None else value if plain else json.dumps(value, ensure_ascii=False)
        sys.stdout.write(f"{key + ':':<19}{shown}\n")
    sys.stdout.write("\n" + fmt.to_lark())
    return EXIT_OK


def _stop(args: argparse.Namespace) -> int:
    stop = _format_arg(args.format).stop
    if args.lines:
        sys.stdout.writelines(json.dumps(s, ensure_ascii=False) + "\n" for s in stop)
    else:
        sys.stdout.write(json.dumps(stop, ensure_ascii=False) + "\n")
    return EXIT_OK


def _validate(args: argparse.Namespace) -> int:
    from ._inspect import validate

    fmt: Format = _format_arg(args.format)
    problems = 0
    for path in args.files:
        source = _name(path)
        if args.jsonl or path.endswith(".jsonl"):
            problems += _validate_lines(fmt, path, args)
            continue
        text = _read(path)
        if args.messages:
            data = _load_json(text, source)
            if isinstance(data, dict):
                data = data.get("messages")
            if not isinstance(data, list):
                raise _Problem(f"{source}:1:1: expected a JSON list of messages or an object with 'messages'")
            found = validate(data, fmt)
        else:
            found = validate(text, fmt)
        for d in found:
            where = (
                f"{source}:message {d.index}:{d.line}:{d.column}" if args.messages else f"{source}:{d.line}:{d.column}"
            )
            print(f"{where}: {d.code} {d.message}")
            if args.hints:
                print(f"    hint: {d.hint}")
        problems += len(found)
    return EXIT_PROBLEM if problems else EXIT_OK


def _validate_lines(fmt: Format, path: str, args: argparse.Namespace) -> int:
    """Validate each line of a JSON Lines file (texts, or message lists with --messages)."""
    from ._inspect import validate

    problems = 0
    for number, value in _each_line(path, args.progress):
        where = f"{_name(path)}:{number}"
        try:
            if isinstance(value, _Problem):
                raise value
            if args.messages:
                data = value.get("messages") if isinstance(value, dict) else value
                if not isinstance(data, list):
                    raise _Problem(f"{where}:1: expected a JSON list of messages or an object with 'messages'")
                found = validate(data, fmt)
            else:
                found = validate(_text_of(value, where), fmt)
        except _Problem as e:
            print(str(e))
            problems += 1
            continue
        for d in found:
            inner = f"message {d.index}:{d.line}:{d.column}" if args.messages else f"{d.line}:{d.column}"
            print(f"{where}: {inner}: {d.code} {d.message}")
            if args.hints:
                print(f"    hint: {d.hint}")
        problems += len(found)
    return problems


def _detect(args: argparse.Namespace) -> int:
    from ._inspect import detect

    text = _read(args.file)
    found = detect(text)
    if not found:
        print(f"{_name(args.file)}: no registered format reads this text", file=sys.stderr)
        return EXIT_PROBLEM
    if not args.all:
        best = found[0][1]
        found = [(n, s) for n, s in found if s == best]  # the best, with its ties
    for name, score in found:
        print(f"{name}\t{score:.3f}")
    return EXIT_OK


def _import(args: argparse.Namespace) -> int:
    import os

    from . import _derive, _sources
    from ._custom import _name_of

    source = args.source
    try:
        if source == "-" or (os.path.isfile(source) and not source.lower().endswith((".json", ".gguf"))):
            src = _sources.TemplateSource(
                template=_read(source),
                bos_token=args.bos,
                eos_token=args.eos,
                special_tokens=(),
                origin=_name(source),
                name=None if source == "-" else os.path.splitext(os.path.basename(source))[0],
            )
        else:  # a .gguf, a tokenizer_config.json, a folder, or a model id in the local Hugging Face cache
            src = _sources.from_pretrained(source, template_name=args.template_name)
    except ImportError as err:
        raise _Problem(f"{_name(source)}: {err} (pip install 'chatgrammar[templates,gguf,hub]')") from None
    except ChatGrammarError as err:
        raise _Problem(f"{_name(source)}: {err}") from None
    bos = args.bos if args.bos is not None else src.bos_token or ""
    eos = args.eos if args.eos is not None else src.eos_token or ""
    try:
        result = _derive.capture(
            src.template,
            bos_token=bos,
            eos_token=eos,
            name=args.name or _name_of(src.name),
            special_tokens=src.special_tokens,
            conversations=args.conversations,
        )
    except ImportError as err:
        raise _Problem(f"{_name(source)}: {err} (pip install 'chatgrammar[templates]')") from None
    except _derive.TemplateCaptureError as err:
        raise _Problem(f"{_name(source)}: {err}") from None
    fmt = result.format
    if args.output:
        with open(args.output, "w", encoding="utf-8", newline="") as fh:
            fh.write(fmt.to_lark())
    else:
        sys.stdout.write(fmt.to_lark())
    out = sys.stderr
    roles = ", ".join(fmt.roles) if fmt.roles is not None else "any"
    print(f"{_name(source)}: captured as {fmt.name!r} (roles: {roles}; stop: {json.dumps(fmt.stop)})", file=out)
    print(
        f"  verified on {result.verified} generated conversations ({result.refusals} refused by both), "
        f"{result.probes} probe renders",
        file=out,
    )
    for note in result.notes:
        print(f"  note: {note}", file=out)
    if args.match:
        from ._derive import match_template

        same = match_template(src.template, bos_token=bos or None, eos_token=eos or None)
        print(f"  equivalent built-in format: {same or 'none'}", file=out)
    return EXIT_OK


def _export(args: argparse.Namespace) -> int:
    fmt = _format_arg(args.format)
    if args.to == "jinja":
        from ._derive import TemplateCaptureError

        try:
            text = fmt.to_jinja()
        except TemplateCaptureError as err:
            raise _Problem(f"{fmt.name}: {err}") from None
    elif args.to == "lark":
        text = fmt.to_lark()
    elif args.to == "stop":
        text = json.dumps(fmt.stop, ensure_ascii=False) + "\n"
    else:
        dialect = "gbnf" if args.to == "gbnf" else "lark"
        text = fmt.constraint_grammar(dialect, special_tokens=args.special_tokens)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return EXIT_OK


def _load_json(text: str, source: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise _Problem(f"{source}:{e.lineno}:{e.colno}: not valid JSON: {e.msg}") from None
