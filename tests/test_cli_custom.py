"""`chatgrammar import` and `chatgrammar export`, driven as subprocesses.

What they print is checked against independent renderers: the real templates through
../shared/templates/render_reference.py, and Hugging Face's Jinja settings for an export.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import TEMPLATES
from reference import TemplateRaised, _render, _source, index
from test_cli import run
from test_sources import write_gguf

import chatgrammar as cg

CONVERSATIONS = [
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": " sys \n"}, {"role": "user", "content": "ünï ✓"}],
    [{"role": "user", "content": ""}, {"role": "assistant", "content": "x" * 2000}, {"role": "user", "content": "?"}],
    [{"role": "system", "content": "S"}, {"role": "user", "content": "a\n\nb"}, {"role": "assistant", "content": " "}],
]


def entry(slug: str) -> dict:
    return next(e for e in index() if e["slug"] == slug)


def agrees_with_template(grammar: str, source: str, bos: str = "", eos: str = "") -> int:
    """How many conversations the imported grammar renders as the template does (all must agree)."""
    fmt = cg.load_format(grammar)
    compared = 0
    for msgs in CONVERSATIONS:
        for gen in (False, True):
            try:
                theirs: str | None = _render(source, msgs, add_generation_prompt=gen, bos_token=bos, eos_token=eos)
            except TemplateRaised:
                theirs = None
            try:
                ours: str | None = fmt.render(msgs, add_generation_prompt=gen)
            except cg.RenderError:
                ours = None
            assert ours == theirs, (msgs, gen)
            compared += theirs is not None
    return compared


def test_import_a_template_file_prints_a_grammar_that_renders_as_the_template() -> None:
    e = entry("zephyr")
    path = TEMPLATES / e["template_file"]
    r = run("import", str(path), "--eos", e["eos_token"], "--match")
    assert r.returncode == 0, r.stderr
    assert agrees_with_template(r.stdout, _source(e["template_file"]), eos=e["eos_token"]) >= 4
    assert "captured as 'zephyr'" in r.stderr
    assert "verified on 300 generated conversations" in r.stderr
    assert "equivalent built-in format: zephyr" in r.stderr


def test_import_from_stdin_to_a_file(tmp_path: Path) -> None:
    e = entry("chatml-openhermes")
    out = tmp_path / "mine.lark"
    r = run("import", "-", "--name", "my-chat", "-o", str(out), stdin=_source(e["template_file"]))
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    assert cg.load_format(str(out)).name == "my-chat"
    assert agrees_with_template(out.read_text(encoding="utf-8"), _source(e["template_file"])) >= 4


def test_import_a_tokenizer_config(tmp_path: Path) -> None:
    e = entry("llama3")
    config = {"chat_template": _source(e["template_file"]), "bos_token": e["bos_token"], "eos_token": e["eos_token"]}
    path = tmp_path / "tokenizer_config.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    r = run("import", str(path))
    assert r.returncode == 0, r.stderr
    assert agrees_with_template(r.stdout, config["chat_template"], bos=e["bos_token"], eos=e["eos_token"]) >= 4
    # the folder works too, as a model directory
    again = run("import", str(tmp_path), "--name", "from-folder")
    assert again.returncode == 0, again.stderr
    assert "// name: from-folder" in again.stdout
    assert agrees_with_template(again.stdout, config["chat_template"], bos=e["bos_token"], eos=e["eos_token"]) >= 4


def test_import_a_gguf(tmp_path: Path) -> None:
    template = _source(entry("chatml-openhermes")["template_file"])
    path = write_gguf(tmp_path / "tiny.gguf", templates=template)
    r = run("import", str(path))
    assert r.returncode == 0, r.stderr
    assert agrees_with_template(r.stdout, template) >= 4
    assert "<|im_end|>" in r.stderr  # the stop string, in the summary


def test_import_says_which_probe_diverged() -> None:
    e = entry("llama3.2")  # it prints today's date
    path = TEMPLATES / e["template_file"]
    r = run("import", str(path), "--bos", e["bos_token"], "--eos", e["eos_token"])
    assert r.returncode == 1
    assert r.stdout == ""
    assert "the template was not captured: render ['system'] on two dates" in r.stderr


def test_import_problems_and_usage(tmp_path: Path) -> None:
    r = run("import", str(tmp_path / "missing.json"))
    assert r.returncode == 1 and "missing.json" in r.stderr
    assert run("import").returncode == 2


def test_export_jinja_renders_as_the_format() -> None:
    r = run("export", "-f", "chatml", "--to", "jinja")
    assert r.returncode == 0, r.stderr
    fmt = cg.get_format("chatml")
    for msgs in CONVERSATIONS:
        for gen in (False, True):
            assert _render(r.stdout, msgs, add_generation_prompt=gen) == fmt.render(msgs, add_generation_prompt=gen)


def test_export_jinja_of_a_format_outside_the_family_fails_clearly() -> None:
    r = run("export", "-f", "llama3.1", "--to", "jinja")
    assert r.returncode == 1
    assert "the format was not exported: exporting llama3.1 to Jinja" in r.stderr


def test_export_lark_and_stop(tmp_path: Path) -> None:
    r = run("export", "-f", "llama3", "--to", "lark")
    assert r.returncode == 0
    msgs = CONVERSATIONS[1]
    e = entry("llama3")
    assert cg.load_format(r.stdout).render(msgs) == _render(
        _source(e["template_file"]), msgs, bos_token=e["bos_token"], eos_token=e["eos_token"]
    )
    # a user's grammar file is exported as well as a registered format
    path = tmp_path / "mine.lark"
    path.write_text(r.stdout, encoding="utf-8")
    stop = run("export", "-f", str(path), "--to", "stop")
    assert stop.returncode == 0
    assert "<|eot_id|>" in json.loads(stop.stdout)
    assert set(json.loads(stop.stdout)) <= {*e["stop"], e["eos_token"]}


@pytest.mark.parametrize("dialect", ["gbnf", "llguidance"])
def test_export_decoding_grammars_are_read_by_llguidance(dialect: str) -> None:
    llg = pytest.importorskip("llguidance")
    r = run("export", "-f", "chatml", "--to", dialect)
    assert r.returncode == 0
    grammar = llg.grammar_from("gbnf" if dialect == "gbnf" else "lark", r.stdout)
    assert llg.LLMatcher.validate_grammar(grammar) == ""


def test_export_usage_errors() -> None:
    assert run("export", "-f", "no-such-format", "--to", "jinja").returncode == 2
    assert run("export", "-f", "chatml", "--to", "yaml").returncode == 2
