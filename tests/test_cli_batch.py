"""`show`, `stop`, `convert`, and JSON Lines streams through `render`, `parse` and `convert`, as subprocesses.

Texts are compared with the real templates (../shared/templates, rendered by render_reference),
not with chatgrammar's own output.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from reference import _render, _source, index
from test_cli import run

import chatgrammar as cg

CHATS = [
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "ünï ✓\n\nline"}],
    [
        {"role": "user", "content": " padded "},
        {"role": "assistant", "content": "x" * 3000},
        {"role": "user", "content": ""},
    ],
]


def entry(slug: str) -> dict:
    return next(e for e in index() if e["slug"] == slug)


def reference(slug: str, msgs: list[dict], gen: bool = False) -> str:
    e = entry(slug)
    return _render(
        _source(e["template_file"]),
        msgs,
        add_generation_prompt=gen,
        bos_token=e["bos_token"] or "",
        eos_token=e["eos_token"] or "",
    )


def test_show_prints_the_metadata_and_a_grammar_that_renders_as_the_template() -> None:
    r = run("show", "llama-3")  # an alias
    assert r.returncode == 0, r.stderr
    head, _, grammar = r.stdout.partition("\n\n")
    fields = dict(line.split(":", 1) for line in head.splitlines())
    assert fields["name"].strip() == "llama3"
    assert set(json.loads(fields["stop"])) <= {*entry("llama3")["stop"], entry("llama3")["eos_token"]}
    fmt = cg.load_format(grammar)
    for msgs in CHATS:
        assert fmt.render(msgs, add_generation_prompt=True) == reference("llama3", msgs, True)


def test_show_json() -> None:
    r = run("show", "gemma", "--json")
    assert r.returncode == 0
    meta = json.loads(r.stdout)
    assert meta["name"] == "gemma"
    assert meta["system"] != "native"  # Gemma's template refuses a system message first
    assert "<end_of_turn>" in meta["stop"]
    assert run("show", "no-such-format").returncode == 2


def test_stop_as_a_list_and_as_lines() -> None:
    e = entry("chatml-openhermes")
    r = run("stop", "chatml")
    assert r.returncode == 0
    stop = json.loads(r.stdout)
    assert stop and set(stop) <= {*e["stop"], e["eos_token"]}
    lines = run("stop", "chatml", "--lines").stdout.splitlines()
    assert [json.loads(line) for line in lines] == stop


def test_convert_writes_what_the_target_template_writes(tmp_path: Path) -> None:
    for msgs in CHATS:
        source = reference("chatml-openhermes", msgs, True)
        r = run("convert", "--from", "chatml", "--to", "llama3", stdin=source)
        assert r.returncode == 0, r.stderr
        assert r.stdout == reference("llama3", msgs, True)


def test_convert_refuses_what_the_target_cannot_write() -> None:
    text = reference("chatml-openhermes", CHATS[1])
    r = run("convert", "--from", "chatml", "--to", "gemma", stdin=text)
    assert r.returncode == 1
    assert r.stdout == ""
    assert "<stdin>: gemma cannot write it: Conversation roles must alternate" in r.stderr
    assert "message 0 is 'system'" in r.stderr
    bad = run("convert", "--from", "chatml", "--to", "llama3", stdin="<|im_start|>user\nhi<|im_start|>")
    assert bad.returncode == 1 and bad.stderr.startswith("<stdin>:2:3: ")
    assert run("convert", "--from", "chatml", "--to", "nope", stdin=text).returncode == 2


def test_render_jsonl_one_text_per_line_and_null_for_a_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "chats.jsonl"
    rows = [json.dumps(CHATS[0]), json.dumps({"messages": CHATS[1], "add_generation_prompt": True}), "", "{oops"]
    rows.append(json.dumps([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]))  # llama3 takes it
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    r = run("render", "-f", "llama3", str(path))  # .jsonl: JSON Lines without asking
    assert r.returncode == 1
    out = [json.loads(line) for line in r.stdout.splitlines()]
    assert out == [
        reference("llama3", CHATS[0]),
        reference("llama3", CHATS[1], True),
        None,
        reference("llama3", [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]),
    ]
    assert r.stderr.startswith(f"{path}:4:2: not valid JSON")


def test_parse_and_convert_jsonl() -> None:
    texts = [reference("zephyr", msgs) for msgs in CHATS]
    lines = [json.dumps(texts[0]), json.dumps({"text": texts[1]}), json.dumps(texts[2]), json.dumps(3)]
    r = run("parse", "-f", "zephyr", "--jsonl", stdin="\n".join(lines) + "\n")
    assert r.returncode == 1
    got = [json.loads(line) for line in r.stdout.splitlines()]
    assert got == [*CHATS, None]
    assert "<stdin>:4:1: expected a JSON string or an object with 'text'" in r.stderr
    c = run("convert", "--from", "zephyr", "--to", "chatml", "--jsonl", stdin="\n".join(lines[:3]) + "\n")
    assert c.returncode == 0, c.stderr
    assert [json.loads(line) for line in c.stdout.splitlines()] == [
        reference("chatml-openhermes", msgs) for msgs in CHATS
    ]


def test_jsonl_is_streamed_a_line_in_a_line_out() -> None:
    """The first answer comes out before the input ends: nothing waits for the whole file."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "chatgrammar", "render", "-f", "chatml", "--jsonl"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(json.dumps(CHATS[0]) + "\n")
        proc.stdin.flush()
        assert json.loads(proc.stdout.readline()) == reference("chatml-openhermes", CHATS[0])
        proc.stdin.write(json.dumps(CHATS[1]) + "\n")
        proc.stdin.flush()
        assert json.loads(proc.stdout.readline()) == reference("chatml-openhermes", CHATS[1])
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
        proc.stdout.close()
    assert proc.returncode == 0


def test_progress_on_files_only_when_asked_or_on_a_terminal(tmp_path: Path) -> None:
    path = tmp_path / "chats.jsonl"
    path.write_text("\n".join(json.dumps(CHATS[0]) for _ in range(50)) + "\n", encoding="utf-8")
    shown = run("render", "-f", "chatml", str(path), "--progress")
    assert shown.returncode == 0
    assert "100.0% 50 rows" in shown.stderr
    assert run("render", "-f", "chatml", str(path)).stderr == ""  # stderr is not a terminal here
    assert run("render", "-f", "chatml", str(path), "--no-progress").stderr == ""
    piped = run("render", "-f", "chatml", "--jsonl", "--progress", stdin=json.dumps(CHATS[0]) + "\n")
    assert piped.stderr == ""  # stdin has no size to show progress against


def test_every_command_is_in_the_help_and_documented() -> None:
    import argparse

    from chatgrammar.cli import _parser

    sub = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    commands = list(sub.choices)
    assert {"formats", "show", "render", "parse", "detect", "validate", "convert", "stop", "export", "import"} <= set(
        commands
    )
    r = run("--help")
    assert r.returncode == 0
    page = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text(encoding="utf-8")
    for command in commands:
        assert command in r.stdout
        assert f"| `{command}" in page, f"docs/cli.md does not list `{command}`"


def test_validate_jsonl_texts_and_messages(tmp_path: Path) -> None:
    path = tmp_path / "prompts.jsonl"
    good = reference("llama2-chat", [{"role": "user", "content": "Hi"}])
    path.write_text("\n".join(json.dumps(t) for t in ["<s>" + good, good]) + "\n", encoding="utf-8")
    r = run("validate", "-f", "llama2", str(path))
    assert r.returncode == 1
    assert r.stdout.splitlines() == [f"{path}:1: 1:1: double-bos the BOS token '<s>' is written twice"]
    lines = [json.dumps([{"role": "user", "content": "[INST]"}]), json.dumps(CHATS[0])]
    m = run("validate", "-f", "llama2", "--messages", "--jsonl", stdin="\n".join(lines) + "\n")
    assert m.returncode == 1
    assert m.stdout.startswith("<stdin>:1: message 0:1:1: delimiter-in-content ")
    assert len(m.stdout.splitlines()) == 1
    clean = run("validate", "-f", "llama2", "--jsonl", stdin=json.dumps(good) + "\n")
    assert clean.returncode == 0 and clean.stdout == ""
