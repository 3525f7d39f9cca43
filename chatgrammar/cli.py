"""The command line: ``chatgrammar`` (or ``python -m chatgrammar``).

A thin layer over the library: it reads files or stdin (``-``), writes stdout,
reports problems on stderr as ``file:line:col: message`` and exits 0 (done),
1 (the input has a problem) or 2 (the command line is wrong).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from ._errors import ChatGrammarError, ParseError, RenderError
from ._format import Format
from ._message import Message
from ._registry import formats, get_format

__all__ = ["main"]

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2


class _Problem(Exception):
    """An input problem, already worded as ``file:line:col: message``."""


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
    f.add_argument("--long", action="store_true", help="show aliases, roles, stop strings and generation prompt")
    f.set_defaults(run=_formats)

    r = sub.add_parser("render", help="JSON messages -> prompt text")
    r.add_argument("-f", "--format", required=True, help="format name, alias or model id")
    r.add_argument("file", nargs="?", default="-", help="JSON list of messages, or {messages, ...} (default: stdin)")
    r.add_argument(
        "-g", "--add-generation-prompt", action="store_true", help="open the assistant's turn after the messages"
    )
    r.add_argument(
        "--allow-unsafe", action="store_true", help="render content that holds the format's delimiters anyway"
    )
    r.set_defaults(run=_render)

    q = sub.add_parser("parse", help="prompt text -> JSON messages")
    q.add_argument("-f", "--format", required=True, help="format name, alias or model id")
    q.add_argument("file", nargs="?", default="-", help="the text (default: stdin)")
    q.add_argument("--indent", type=int, default=None, help="indent the JSON output")
    q.set_defaults(run=_parse)
    return p


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
    for name in formats():
        if not args.long:
            out.write(name + "\n")
            continue
        fmt = get_format(name)
        roles = ", ".join(fmt.roles) if fmt.roles is not None else "any"
        out.write(f"{name}\n")
        out.write(f"  aliases:    {', '.join(fmt.aliases) or '-'}\n")
        out.write(f"  models:     {', '.join(fmt.models) or '-'}\n")
        out.write(f"  roles:      {roles}\n")
        out.write(f"  stop:       {json.dumps(fmt.stop, ensure_ascii=False)}\n")
        out.write(f"  generation: {json.dumps(fmt.generation_prompt, ensure_ascii=False)}\n")
    return EXIT_OK


def _render(args: argparse.Namespace) -> int:
    fmt = get_format(args.format)
    source = _name(args.file)
    data = _load_json(_read(args.file), source)
    gen = args.add_generation_prompt
    if isinstance(data, dict):
        gen = gen or bool(data.get("add_generation_prompt", False))
        data = data.get("messages")
    if not isinstance(data, list):
        raise _Problem(f"{source}:1:1: expected a JSON list of messages or an object with 'messages'")
    try:
        text = fmt.render(data, add_generation_prompt=gen, on_unsafe="allow" if args.allow_unsafe else "raise")
    except RenderError as e:
        where = f"message {e.index}: " if e.index is not None else ""
        raise _Problem(f"{source}: {where}{e}") from None
    sys.stdout.write(text)
    return EXIT_OK


def _parse(args: argparse.Namespace) -> int:
    fmt: Format = get_format(args.format)
    source = _name(args.file)
    text = _read(args.file)
    try:
        messages = fmt.parse(text)
    except ParseError as e:
        raise _Problem(f"{source}:{e.line}:{e.column}: {e.reason}\n{e.snippet}") from None
    json.dump([_dict(m) for m in messages], sys.stdout, ensure_ascii=False, indent=args.indent)
    sys.stdout.write("\n")
    return EXIT_OK


def _dict(m: Message) -> dict[str, Any]:
    d: dict[str, Any] = {"role": m.role, "content": m.content}
    if not m.complete:
        d["complete"] = False
    return d


def _load_json(text: str, source: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise _Problem(f"{source}:{e.lineno}:{e.colno}: not valid JSON: {e.msg}") from None
