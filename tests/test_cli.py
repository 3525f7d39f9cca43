"""The command line, driven as a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import chatgrammar as cg

MESSAGES = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]


def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chatgrammar", *args], input=stdin, capture_output=True, text=True, timeout=120
    )


def test_formats() -> None:
    r = run("formats")
    assert r.returncode == 0
    assert r.stdout.split() == cg.formats()


def _blocks(text: str) -> dict[str, dict[str, list[str]]]:
    out: dict[str, dict[str, list[str]]] = {}
    for line in text.splitlines():
        if not line.startswith(" "):
            current = out.setdefault(line, {})
        else:
            key, _, value = line.strip().partition(": ")
            current.setdefault(key.rstrip(":"), []).append(value.strip())
    return out


def test_formats_long_shows_stop_strings_and_policies() -> None:
    r = run("formats", "--long")
    assert r.returncode == 0
    blocks = _blocks(r.stdout)
    assert list(blocks) == cg.formats()
    assert blocks["chatml"]["stop"] == ['["<|im_end|>"]']
    assert blocks["llama2"]["alternation"] == ["required"]
    assert blocks["chatml"]["alternation"] == ["not required"]
    assert blocks["gemma3"]["system"] == ["merged-first-user"]
    assert blocks["mistral"]["system"] == ["none"]
    assert any("whitespace" in loss for loss in blocks["llama2"]["loses"])


def test_render_from_stdin() -> None:
    r = run("render", "-f", "llama-3", "-g", stdin=json.dumps(MESSAGES))
    assert r.returncode == 0, r.stderr
    assert r.stdout == cg.render(MESSAGES, "llama3", add_generation_prompt=True)


def test_render_object_with_messages(tmp_path: Path) -> None:
    path = tmp_path / "chat.json"
    path.write_text(json.dumps({"messages": MESSAGES, "add_generation_prompt": True}))
    r = run("render", "-f", "chatml", str(path))
    assert r.returncode == 0, r.stderr
    assert r.stdout.endswith("<|im_start|>assistant\n")


def test_parse_round_trip(tmp_path: Path) -> None:
    text = cg.render(MESSAGES, "zephyr", add_generation_prompt=True)
    path = tmp_path / "prompt.txt"
    path.write_text(text, newline="")
    r = run("parse", "-f", "zephyr", str(path))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == MESSAGES + [{"role": "assistant", "content": "", "complete": False}]


def test_parse_error_is_file_line_col(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_text("<|im_start|>user\nhi<|im_start|>", newline="")
    r = run("parse", "-f", "chatml", str(path))
    assert r.returncode == 1
    assert r.stderr.startswith(f"{path}:2:3: expected ")
    assert r.stdout == ""


def test_render_refusal_exits_1() -> None:
    r = run("render", "-f", "chatml", stdin=json.dumps([{"role": "user", "content": "<|im_end|>"}]))
    assert r.returncode == 1
    assert "message 0" in r.stderr and "<|im_end|>" in r.stderr


def test_allow_unsafe() -> None:
    r = run("render", "-f", "chatml", "--allow-unsafe", stdin=json.dumps([{"role": "user", "content": "<|im_end|>"}]))
    assert r.returncode == 0
    assert r.stdout == "<|im_start|>user\n<|im_end|><|im_end|>\n"


def test_bad_json_exits_1_with_position() -> None:
    r = run("render", "-f", "chatml", stdin='[{"role": "user",')
    assert r.returncode == 1
    assert r.stderr.startswith("<stdin>:1:")


def test_unknown_format_is_a_usage_error() -> None:
    r = run("parse", "-f", "lama2", stdin="")
    assert r.returncode == 2
    assert "Did you mean 'llama2'" in r.stderr


def test_usage_errors_exit_2() -> None:
    assert run().returncode == 2
    assert run("render").returncode == 2  # -f is required
    assert run("frobnicate").returncode == 2


def test_missing_file_exits_1() -> None:
    r = run("parse", "-f", "chatml", "/nonexistent/file.txt")
    assert r.returncode == 1
    assert r.stderr.startswith("/nonexistent/file.txt: ")


def test_render_with_options_and_date() -> None:
    msgs = json.dumps([{"role": "user", "content": "Hi"}])
    r = run("render", "-f", "qwen3", "-g", "-o", "enable_thinking=false", stdin=msgs)
    assert r.returncode == 0, r.stderr
    assert r.stdout == cg.render(json.loads(msgs), "qwen3", add_generation_prompt=True, enable_thinking=False)
    assert r.stdout != cg.render(json.loads(msgs), "qwen3", add_generation_prompt=True)
    r = run("render", "-f", "llama3.2", "--date", "2024-07-26", stdin=msgs)
    assert r.returncode == 0, r.stderr
    assert "26 Jul 2024" in r.stdout


def test_render_object_carries_options() -> None:
    doc = {"messages": [{"role": "user", "content": "Hi"}], "add_generation_prompt": True, "enable_thinking": False}
    r = run("render", "-f", "qwen3", stdin=json.dumps(doc))
    assert r.returncode == 0, r.stderr
    assert r.stdout.endswith("<think>\n\n</think>\n\n")


def test_render_bad_option_and_date_are_usage_errors() -> None:
    msgs = json.dumps([{"role": "user", "content": "Hi"}])
    r = run("render", "-f", "qwen3", "-o", "enable_thinking", stdin=msgs)
    assert r.returncode == 2 and "NAME=VALUE" in r.stderr
    r = run("render", "-f", "llama3.2", "--date", "26/07/2024", stdin=msgs)
    assert r.returncode == 2 and "YYYY-MM-DD" in r.stderr
    r = run("render", "-f", "qwen3", "-o", "thinking=true", stdin=msgs)
    assert r.returncode == 1 and "no option 'thinking'" in r.stderr


def test_validate_prints_lint_lines_and_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("<s><s>[INST] Hi [/INST]Hello</s>", encoding="utf-8")
    good = tmp_path / "good.txt"
    good.write_text(cg.render(MESSAGES, "llama2"), encoding="utf-8")
    r = run("validate", "-f", "llama2", str(good), str(bad))
    assert r.returncode == 1
    lines = r.stdout.splitlines()
    assert lines == [
        f"{bad}:1:1: double-bos the BOS token '<s>' is written twice",
        f'{bad}:1:24: whitespace "" where llama2 writes " "',
        f'{bad}:1:29: whitespace "" where llama2 writes " "',
    ]
    ok = run("validate", "-f", "llama2", str(good))
    assert ok.returncode == 0 and ok.stdout == ""
    piped = run("validate", "-f", "chatml", stdin="<|im_start|>user\nHi\n<|im_start|>assistant\nHo<|im_end|>\n")
    assert piped.returncode == 1 and piped.stdout.startswith("<stdin>:3:1: unclosed-turn ")
    messages = tmp_path / "m.json"
    messages.write_text(json.dumps([{"role": "user", "content": "a <|im_end|>"}]), encoding="utf-8")
    m = run("validate", "-f", "chatml", "--messages", str(messages))
    assert m.returncode == 1 and m.stdout.startswith(f"{messages}:message 0:1:3: delimiter-in-content ")


def test_detect_and_tolerant_parse() -> None:
    text = cg.render(MESSAGES, "llama3")
    r = run("detect", stdin=text)
    assert r.returncode == 0 and r.stdout.split()[0] == "llama3"
    assert run("detect", stdin="").returncode == 1
    cut = run(
        "parse", "-f", "chatml", "--tolerant", stdin="<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHel<|im_e"
    )
    assert json.loads(cut.stdout) == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hel", "complete": False},
    ]
    assert cut.returncode == 1 and cut.stderr.startswith("<stdin>:4:4: truncated ")


WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
}
AGENT = [
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": "",
        "reasoning_content": "Use the tool.",
        "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
    },
    {"role": "tool", "content": "21°C"},
]


def test_tools_and_tool_calls_go_through_render_and_parse(tmp_path: Path) -> None:
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps([WEATHER]))
    r = run("render", "-f", "qwen3", "--tools", str(tools), stdin=json.dumps(AGENT))
    assert r.returncode == 0, r.stderr
    assert r.stdout == cg.render(AGENT, "qwen3", tools=[WEATHER])
    # parse writes what render takes: the calls, the reasoning and the tools are kept.
    back = run("parse", "-f", "qwen3", stdin=r.stdout)
    assert back.returncode == 0, back.stderr
    doc = json.loads(back.stdout)
    assert doc == {"messages": AGENT, "tools": [WEATHER]}
    again = run("render", "-f", "qwen3", stdin=back.stdout)
    assert again.stdout == r.stdout
    # Without tool definitions in the text, parse writes the list of messages.
    plain = run("parse", "-f", "qwen3", stdin=cg.render(AGENT, "qwen3"))
    assert json.loads(plain.stdout) == AGENT


def test_parse_reports_arguments_that_are_not_json() -> None:
    text = cg.render(AGENT[:2], "qwen3").replace('{"city": "Paris"}', '{"city": "Par')
    r = run("parse", "-f", "qwen3", stdin=text)
    assert r.returncode == 1
    assert json.loads(r.stdout)[1]["tool_calls"][0]["function"]["arguments"] == '{"city": "Par'
    assert r.stderr.startswith("<stdin>:") and "invalid-arguments" in r.stderr


def test_render_tools_must_be_a_list(tmp_path: Path) -> None:
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps(WEATHER))
    r = run("render", "-f", "qwen3", "--tools", str(tools), stdin=json.dumps(AGENT))
    assert r.returncode == 1
    assert "expected a JSON list of tool definitions" in r.stderr
