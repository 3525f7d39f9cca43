"""docs/formats.md is generated from the registry, and must not go stale."""

from __future__ import annotations

import re

from conftest import ROOT

import chatgrammar as cg
from chatgrammar._catalogue import EXAMPLE_DATE, example_messages, formats_markdown

PAGE = ROOT / "docs" / "formats.md"


def test_formats_page_is_up_to_date() -> None:
    assert PAGE.read_text(encoding="utf-8") == formats_markdown(), (
        "docs/formats.md is stale: run `chatgrammar formats --markdown > docs/formats.md`"
    )


def test_page_has_one_section_and_one_example_per_format() -> None:
    page = formats_markdown()
    prose = re.sub(r"^(`{3,})text\n.*?\n\1$", "", page, flags=re.M | re.S)  # not inside an example
    sections = re.findall(r"^## (.+)$", prose, flags=re.M)
    assert sections == cg.formats()
    names = cg.formats()
    for name, after in zip(names, [*names[1:], None], strict=True):
        fmt = cg.get_format(name)
        # The section runs to the next format's heading (an example may hold lines like "## ...").
        body = page.split(f"\n## {name}\n", 1)[1]
        body = body.split(f"\n## {after}\n", 1)[0] if after is not None else body
        example = re.search(r"^(`{3,})text\n(.*?)\n\1$", body, flags=re.M | re.S)
        assert example, name
        text = example.group(2)
        # The example is the format's own rendering: it reads back as the conversation, normalized.
        msgs = example_messages(fmt)
        gen = fmt.generation_prompt is not None
        expected = fmt.normalize(msgs, add_generation_prompt=gen, date=EXAMPLE_DATE)
        assert fmt.parse(text) == expected, name
        assert "Red." in text and "Another?" in text
        for stop in fmt.stop:
            assert stop.replace("|", "\\|") in body
