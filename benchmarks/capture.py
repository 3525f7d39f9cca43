"""How many real chat templates ``from_template`` captures, treating each one as unknown.

    python benchmarks/capture.py [--templates ../shared/templates] [--conversations 200] [--json]

For every template in ``index.json`` (and tests/templates, real templates of further families),
only the template's source and its BOS/EOS tokens are given to ``chatgrammar.from_template``:
never the name of a built-in format. A template is *captured* when the derived format renders
what the template renders on every generated conversation of the verification (the capture
raises otherwise). For the others, the probe that diverged and why are printed.

Each captured format is then checked again here, independently of the verification inside
``from_template``: on conversations drawn from the derived format, the template is rendered
by ``render_reference.py`` (Hugging Face's renderer) and compared byte for byte.

``match_template`` (which built-in format a template is equivalent to) is measured too.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ROLES = ["system", "user", "assistant", "tool"]
CONTENTS = ["", " ", "\n", "Hi", " padded \n", "ünï ✓ 😀", "line one\nline two", "x" * 3000, "a <b> [c] {d}"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--templates", type=Path, default=ROOT.parent / "shared" / "templates")
    ap.add_argument("--extra", type=Path, default=ROOT / "tests" / "templates")
    ap.add_argument("--conversations", type=int, default=200, help="verification conversations per template")
    ap.add_argument("--recheck", type=int, default=200, help="conversations of the independent re-check")
    ap.add_argument("--json", action="store_true", help="one JSON object per template on stdout")
    ap.add_argument("--only", help="comma-separated template slugs to measure")
    args = ap.parse_args(argv)

    sys.path.insert(0, str(args.templates))
    import render_reference

    import chatgrammar as cg

    entries: list[tuple[Path, dict[str, Any]]] = []
    for folder in (args.templates, args.extra):
        if (folder / "index.json").exists():
            entries += [(folder, e) for e in json.loads((folder / "index.json").read_text(encoding="utf-8"))]

    if args.only:
        entries = [(f, e) for f, e in entries if e["slug"] in args.only.split(",")]
    captured = matched = 0
    rows = []
    for folder, entry in entries:
        source = (folder / entry["template_file"]).read_text(encoding="utf-8")
        bos, eos = entry.get("bos_token") or "", entry.get("eos_token") or ""
        kwargs = entry.get("render_kwargs") or {}
        row: dict[str, Any] = {"template": entry["slug"]}
        start = time.perf_counter()
        try:
            fmt = cg.from_template(
                source, bos_token=bos, eos_token=eos, name=entry["slug"], conversations=args.conversations, **kwargs
            )
        except cg.TemplateCaptureError as e:
            row.update(captured=False, probe=e.probe, why=e.reason)
        else:
            mismatches = 0
            rng = random.Random(7)
            for _ in range(args.recheck):
                roles = [rng.choice(ROLES) for _ in range(rng.choice([0, 1, 2, 3, 4, 6]))]
                if rng.random() < 0.7:  # mostly the usual order, which most templates require
                    roles = (["system"] if rng.random() < 0.4 else []) + [
                        ("user", "assistant")[i % 2] for i in range(rng.choice([1, 2, 3, 4, 5]))
                    ]
                msgs = [{"role": r, "content": rng.choice(CONTENTS)} for r in roles]
                gen = rng.random() < 0.5
                ours: str | None
                if fmt.roles is not None and any(r not in fmt.roles for r in roles):
                    # The derived format refuses a role it was not shown (the template writes
                    # nothing for it, or writes it as no other role): declared, not a mismatch.
                    continue
                try:
                    ours = fmt.render(msgs, add_generation_prompt=gen)
                except cg.UnsafeContentError:
                    continue
                except cg.RenderError:
                    ours = None
                try:
                    theirs = render_reference.render(
                        source, msgs, add_generation_prompt=gen, bos_token=bos, eos_token=eos, **kwargs
                    )
                except Exception:  # the template raised
                    theirs = None
                if ours != theirs:
                    mismatches += 1
                    if mismatches == 1:
                        row["mismatch"] = {"messages": msgs, "generation": gen, "template": theirs, "derived": ours}
            row.update(captured=mismatches == 0, recheck_mismatches=mismatches)
            captured += mismatches == 0
        row["seconds"] = round(time.perf_counter() - start, 2)
        row["match"] = cg.match_template(source, bos_token=bos, eos_token=eos, **kwargs)
        matched += row["match"] is not None
        rows.append(row)
        if args.json:
            print(json.dumps(row, ensure_ascii=False), flush=True)
        else:
            state = "captured" if row["captured"] else f"not captured ({row.get('probe', 're-check')})"
            print(f"{entry['slug']:<28} {state}  match={row['match']}  {row['seconds']}s", flush=True)
            if "why" in row:
                print("    " + row["why"].splitlines()[0][:160], flush=True)
            if "mismatch" in row:
                print("    " + json.dumps(row["mismatch"], ensure_ascii=False)[:400], flush=True)
    summary = f"from_template captured {captured}/{len(rows)} templates; match_template named {matched}/{len(rows)}"
    print(summary, file=sys.stderr if args.json else sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
