"""Smoke test of benchmarks/compare.py: one quick run with whatever this interpreter has installed."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "compare.py"
TEMPLATES = ROOT.parent / "shared" / "templates"
LIBRARIES = {"transformers": "transformers", "llm-templates": "llm_templates", "FastChat": "fastchat"}
STATUSES = {"timed", "differs", "no template", "not installed"}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    """The JSON and the markdown of one ``--quick`` run, warnings raised as errors as in the test suite."""
    assert TEMPLATES.is_dir(), f"the reference templates are missing: expected {TEMPLATES}"
    out = tmp_path_factory.mktemp("bench") / "benchmarks.md"
    proc = subprocess.run(
        [sys.executable, "-W", "error", str(SCRIPT), "--quick", "--json", "--write", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), out.read_text(encoding="utf-8")


def test_every_format_has_its_rows(run: tuple[dict[str, Any], str]) -> None:
    data, markdown = run
    assert data["formats"]
    for section in ("render", "parse"):
        assert [(r["format"], r["chat"]) for r in data[section]] == [
            (f, chat) for f in data["formats"] for chat in ("short", "long")
        ]
    for row in data["render"]:
        assert row["chatgrammar_us"] > 0
        assert row["reference"], f"{row['format']}: chatgrammar was not checked against the real template"
        assert f"| {row['format']} | {row['chat']} (" in markdown
    for row in data["parse"]:
        assert row["chatgrammar_mbs"] > 0 and row["lark_mbs"] > 0
        assert f"| {row['format']} | {row['chat']} | " in markdown


def test_only_libraries_checked_equal_are_timed(run: tuple[dict[str, Any], str]) -> None:
    data, _ = run
    timed = 0
    for row in data["render"]:
        for key, cell in row["baselines"].items():
            assert cell["status"] in STATUSES, cell
            if cell["status"] == "timed":
                timed += 1
                assert cell["checked_equal"] is True and cell["sha"] == row["chatgrammar_sha"], (row["format"], key)
                assert cell["us"] > 0 and cell["ratio"] > 0
            else:
                assert "us" not in cell and "ratio" not in cell, (row["format"], key)
            if cell["status"] == "differs":
                assert cell["checked_equal"] is False, (row["format"], key)
                assert "error" in cell or cell["sha"] != row["chatgrammar_sha"], (row["format"], key)
    for row in data["parse"]:
        if row["regex"]["status"] == "timed":
            assert row["regex"]["checked_equal"] is True
    if importlib.util.find_spec("transformers") is not None:
        assert timed, "transformers renders the real templates: it should match on every format"


def test_missing_libraries_say_so(run: tuple[dict[str, Any], str]) -> None:
    data, markdown = run
    for key, module in LIBRARIES.items():
        installed = importlib.util.find_spec(module) is not None
        assert data["installed"][key] is installed
        statuses = {row["baselines"][key]["status"] for row in data["render"]}
        assert (statuses == {"not installed"}) is not installed, (key, statuses)
    if not all(data["installed"].values()):
        assert "not installed" in markdown
    assert "the ratios are what matter" in markdown
