"""The documentation runs: every example in it is executed, and the site builds.

* Python examples are doctests (``--doctest-glob='*.md'`` runs them); here, every line of a
  ```python block must be part of one, or it would never run.
* ```console blocks are command-line sessions: each ``$ `` command is run, with
  ``python -m chatgrammar``, and its output compared with the lines that follow it. The
  commands a session may hold (a shell is not needed for them):

      $ chatgrammar ARGS                     (also: < FILE, > FILE)
      $ echo 'TEXT' | chatgrammar ARGS       (or printf 'TEXT', with \\n escapes)
      $ printf 'TEXT' > FILE                 (or echo 'TEXT' > FILE)
      $ cat > FILE <<'EOF'                   (the lines up to EOF are the file)

  ending with ``2>&1`` (stderr is shown too) and/or ``; echo $?`` (the exit status is shown);
  a command that fails must show its status. The sessions of one page share a working
  directory, so a file made in one can be read in the next. For shell that is not run, use
  ```sh.
* ``mkdocs build --strict`` passes, the nav lists every page, and the API page every public name.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import chatgrammar as cg

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
GENERATED = {"formats.md"}  # generated (tests/test_catalogue.py checks it), not run by the doctests
MARKDOWN = [*PAGES, ROOT / "README.md"]
PYTHON = {"python", "py", "python3", "pycon"}


@dataclass
class Fence:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    body: list[str]

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def fences(path: Path) -> Iterator[Fence]:
    """The fenced code blocks of a Markdown file (``` or ~~~, possibly indented)."""
    opening: re.Match[str] | None = None
    start, body = 0, list[str]()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if opening is None:
            opening = re.match(r"\s*(`{3,}|~{3,})\s*([\w+-]*)", line)
            start, body = number, []
        elif re.fullmatch(rf"\s*{opening.group(1)[0]}{{{len(opening.group(1))},}}\s*", line):
            yield Fence(path, start, opening.group(2).lower(), body)
            opening = None
        else:
            body.append(line)
    assert opening is None, f"{path.relative_to(ROOT)}:{start}: a code block is never closed"


def unrun_lines(body: list[str]) -> list[str]:
    """The lines of a ```python block that no doctest runs or checks: code before the first
    ``>>>``, or after a blank line that ended an example's expected output."""
    out, in_example = [], False
    for line in body:
        stripped = line.strip()
        if stripped.startswith(">>>"):
            in_example = True
        elif not stripped:
            in_example = False
        elif not in_example:
            out.append(line)
    return out


def test_docs_are_found() -> None:
    assert {p.name for p in PAGES} >= {"index.md", "api.md", "errors.md"}, PAGES


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: p.name)
def test_python_examples_are_doctests(path: Path) -> None:
    problems = []
    for fence in fences(path):
        if fence.lang not in PYTHON:
            continue
        if path.name in GENERATED:
            problems.append(f"{fence.where}: a Python example in a generated page, which no doctest runs")
        elif not any(line.strip().startswith(">>>") for line in fence.body):
            problems.append(f"{fence.where}: a ```{fence.lang} block with no >>> line: it is never run")
        elif unrun := unrun_lines(fence.body):
            problems.append(f"{fence.where}: lines no doctest runs (write them as >>> lines): {unrun[:3]}")
    assert not problems, "\n".join(problems)


# --- command-line sessions -------------------------------------------------------------------

_STATUS = re.compile(r"\s*;\s*echo \$\?\s*$")
_MERGE = re.compile(r"\s+2>&1\s*$")
_HEREDOC = re.compile(r"cat > (\S+) <<\s*'?(\w+)'?")
_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", '"': '"', "'": "'"}


def _printf(fmt: str) -> str:
    """What ``printf FMT`` writes (escapes and %% only: the examples need no arguments)."""
    if "%" in fmt.replace("%%", ""):
        raise ValueError(f"printf with directives is not supported here: {fmt!r}")
    return re.sub(r"\\(.)|%%", lambda m: _ESCAPES.get(m.group(1), m.group(0)) if m.group(1) else "%", fmt)


def _producer(words: list[str]) -> str:
    """The output of ``echo ...`` or ``printf FMT``."""
    if words[0] == "echo" and len(words) > 1 and not words[1].startswith("-"):
        return " ".join(words[1:]) + "\n"
    if words[0] == "printf" and len(words) == 2:
        return _printf(words[1])
    raise ValueError(f"only echo WORDS and printf FMT can write text here, not {shlex.join(words)!r}")


def _redirect(words: list[str], op: str) -> tuple[list[str], str | None]:
    """``words`` without ``op FILE``, and FILE (or None)."""
    if op not in words:
        return words, None
    k = words.index(op)
    return words[:k] + words[k + 2 :], words[k + 1]


def run_command(command: str, cwd: Path, heredoc: list[str]) -> tuple[str, str, int]:
    """Run one ``$`` line as described at the top; returns (shown output, stderr, status)."""
    show_status = bool(_STATUS.search(command))
    command = _STATUS.sub("", command)
    merge = bool(_MERGE.search(command))
    command = _MERGE.sub("", command)
    if m := _HEREDOC.fullmatch(command):
        (cwd / m.group(1)).write_text("".join(line + "\n" for line in heredoc), encoding="utf-8")
        return "", "", 0
    lexer = shlex.shlex(command, posix=True, punctuation_chars="|<>")
    lexer.whitespace_split = True
    words = list(lexer)
    stdin = ""
    if "|" in words:
        k = words.index("|")
        stdin, words = _producer(words[:k]), words[k + 1 :]
    if words[0] != "chatgrammar":
        words, target = _redirect(words, ">")
        if target is None:
            raise ValueError(f"not a chatgrammar command: {command!r}")
        (cwd / target).write_text(_producer(words), encoding="utf-8")
        return "", "", 0
    words, source = _redirect(words, "<")
    words, target = _redirect(words, ">")
    if source is not None:
        stdin = (cwd / source).read_text(encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    r = subprocess.run(
        [sys.executable, "-m", "chatgrammar", *words[1:]],
        input=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merge else subprocess.PIPE,
        text=True,
        encoding="utf-8",
        cwd=cwd,
        env=env,
        timeout=120,
    )
    out = r.stdout
    if target is not None:
        (cwd / target).write_text(out, encoding="utf-8")
        out = ""
    if show_status:
        out += ("" if not out or out.endswith("\n") else "\n") + f"{r.returncode}\n"
    elif r.returncode != 0:
        raise AssertionError(
            f"exit status {r.returncode} (show it with '; echo $?' if it is meant):\n{r.stdout}{r.stderr or ''}"
        )
    return out, r.stderr or "", r.returncode


def sessions(fence: Fence) -> Iterator[tuple[int, str, list[str], list[str]]]:
    """(line, command, heredoc lines, expected output lines) of each ``$`` command of a ```console block."""
    lines = fence.body
    k = 0
    assert not lines or lines[0].startswith("$ "), f"{fence.where}: a console block starts with a '$ ' command"
    while k < len(lines):
        command, line = lines[k][2:], fence.line + 1 + k
        k += 1
        heredoc: list[str] = []
        if m := _HEREDOC.fullmatch(_MERGE.sub("", _STATUS.sub("", command))):
            while k < len(lines) and lines[k] != m.group(2):
                heredoc.append(lines[k])
                k += 1
            assert k < len(lines), f"{fence.path.name}:{line}: the here-document never ends with {m.group(2)}"
            k += 1
        expected = []
        while k < len(lines) and not lines[k].startswith("$ "):
            expected.append(lines[k])
            k += 1
        yield line, command, heredoc, expected


CONSOLE_PAGES = [p for p in MARKDOWN if any(f.lang == "console" for f in fences(p))]


@pytest.mark.parametrize("path", CONSOLE_PAGES, ids=lambda p: p.name)
def test_console_examples(path: Path, tmp_path: Path) -> None:
    ran = 0
    for fence in fences(path):
        if fence.lang != "console":
            continue
        for line, command, heredoc, expected in sessions(fence):
            where = f"{path.relative_to(ROOT)}:{line}: $ {command}"
            try:
                out, _, _ = run_command(command, tmp_path, heredoc)
            except (ValueError, AssertionError) as e:
                pytest.fail(f"{where}\n{e}")
            want = "\n".join(expected)
            got = out.removesuffix("\n")
            assert got == want, f"{where}\n--- the page shows:\n{want}\n--- the command wrote:\n{got}"
            ran += 1
    assert ran


def test_console_runner_reads_the_supported_commands(tmp_path: Path) -> None:
    assert run_command("""printf '<s><s>[INST] Hi\\n [/INST]' > p.txt""", tmp_path, []) == ("", "", 0)
    assert (tmp_path / "p.txt").read_text() == "<s><s>[INST] Hi\n [/INST]"
    assert run_command("cat > c.json <<'EOF'", tmp_path, ['[{"role": "user",', '"content": "Hi"}]']) == ("", "", 0)
    assert (tmp_path / "c.json").read_text() == '[{"role": "user",\n"content": "Hi"}]\n'
    assert _producer(["echo", "a", "b"]) == "a b\n" and _printf("x\\ty%%\\n") == "x\ty%\n"
    out, _, status = run_command("chatgrammar validate -f llama2 p.txt; echo $?", tmp_path, [])
    assert out.startswith("p.txt:1:1: double-bos ") and out.endswith("\n1\n") and status == 1, out
    out, _, status = run_command("chatgrammar render -f nope < c.json 2>&1; echo $?", tmp_path, [])
    assert "unknown chat format 'nope'" in out and out.endswith("\n2\n") and status == 2, out
    with pytest.raises(AssertionError, match="exit status 2"):
        run_command("echo '[]' | chatgrammar render -f nope", tmp_path, [])
    with pytest.raises(ValueError, match="not a chatgrammar command"):
        run_command("python -c 'print(1)'", tmp_path, [])


# --- the site ---------------------------------------------------------------------------------


def nav_pages() -> list[str]:
    """The pages mkdocs.yml's nav lists, in order (read without a YAML library)."""
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    nav = re.search(r"^nav:\n((?:[ \t].*\n|\n)*)", config, re.MULTILINE)
    assert nav, "mkdocs.yml has no nav"
    return re.findall(r"^\s*-\s+(?:.*?:\s+)?(\S+\.md)\s*$", nav.group(1), re.MULTILINE)


def test_nav_lists_every_page_once() -> None:
    listed = nav_pages()
    assert len(listed) == len(set(listed)), f"listed twice: {sorted(p for p in listed if listed.count(p) > 1)}"
    missing = [p for p in listed if not (DOCS / p).is_file()]
    assert not missing, f"in the nav of mkdocs.yml but not in docs/: {missing}"
    unlisted = sorted({p.name for p in PAGES} - set(listed))
    assert not unlisted, f"in docs/ but not in the nav of mkdocs.yml: {unlisted}"


def test_api_page_documents_every_public_name() -> None:
    page = (DOCS / "api.md").read_text(encoding="utf-8")
    entries = re.findall(r"^::: chatgrammar\.(\w+)\s*$", page, re.MULTILINE)
    assert len(entries) == len(set(entries)), "a name is documented twice in docs/api.md"
    assert sorted(set(cg.__all__) - set(entries)) == [], "public names missing from docs/api.md"
    modules = {"datasets", "testing"}  # public modules of their own, documented whole
    assert modules <= set(entries), "docs/api.md does not document chatgrammar.datasets and chatgrammar.testing"
    assert sorted(set(entries) - set(cg.__all__) - modules) == [], "docs/api.md documents names that are not public"


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing
        return False


def test_site_builds_strictly(tmp_path: Path) -> None:
    needed = {"mkdocs": "mkdocs", "material": "mkdocs-material", "mkdocstrings_handlers.python": "mkdocstrings[python]"}
    missing = [package for module, package in needed.items() if not _installed(module)]
    if missing:
        pytest.skip(f"the site is not built: {', '.join(missing)} not installed (the docs extra)")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            "mkdocs.yml",
            "--site-dir",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        encoding="utf-8",
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=300,
    )
    assert r.returncode == 0, f"mkdocs build --strict failed:\n{r.stderr}{r.stdout}"
    assert (tmp_path / "api" / "index.html").is_file()
