"""The answer of a leaderboard folder in a dozen lines: the claim check and where the page is.

``make demo`` ends with it (``python -m sclzoo.evaluator.summary build/demo/leaderboard``), so the answer is the
last thing in the terminal rather than ~300 lines of Markdown. It reads only ``compare.json`` (written by
``sclzoo leaderboard``), one line of win counts and one line of verdict per comparison of the claim check::

    Claim check: paired Wilcoxon tests, Holm per metric family, α = 0.05
    (wins first / wins second / not significant, over the family's (method, metric) pairs)
    resnet8_cifar · mnist5k · 64 images · config c94196b256aa
      SupCon vs SimCLR  faithfulness 2/0/7  complexity 0/5/4  continuity 0/2/4
                        → “SCL beats CL” holds in no family; SimCLR better on complexity
    ...
    Page: build/demo/leaderboard/index.html · tables: build/demo/leaderboard/LEADERBOARD.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from sclzoo.vocab import COMPARISONS

__all__ = ["summary_lines", "verdict", "main"]

# The comparisons of the claim check, in its order.
CLAIM_PAIRS = list(COMPARISONS)


def verdict(c: dict[str, Any]) -> str:
    """The comparison's verdict: whether its claim holds, and which side wins most pairs of which family."""
    parts = []
    sides = [(c["a"]["label"], "a_wins"), (c["b"]["label"], "b_wins")]
    if c.get("claim"):
        holds = [v["family"] for v in c["verdicts"] if v["majority"]]
        parts.append(f"“{c['claim']}” holds in " + (", ".join(holds) if holds else "no family"))
        sides = sides[1:]  # the first side's wins are the claim's
    for who, key in sides:
        fams = [v["family"] for v in c["verdicts"] if v["n"] and v[key] > v["n"] / 2]
        if fams:
            parts.append(f"{who} better on {', '.join(fams)}")
    return "; ".join(parts) if parts else "neither is better on most pairs of any family"


def summary_lines(out_dir: str | Path) -> list[str]:
    """The claim check of the leaderboard in ``out_dir`` (its ``compare.json``) and the paths of its page."""
    out = Path(out_dir)
    report = json.loads((out / "compare.json").read_text())
    lines = [f"Claim check: paired Wilcoxon tests, Holm per metric family, α = {report['alpha']:g}",
             "(wins first / wins second / not significant, over the family's (method, metric) pairs)"]
    shown = 0
    for g in report["groups"]:
        comps = [c for c in g["comparisons"] if (c["a"]["objective"], c["b"]["objective"]) in CLAIM_PAIRS]
        comps.sort(key=lambda c: CLAIM_PAIRS.index((c["a"]["objective"], c["b"]["objective"])))
        if not comps:
            continue
        lines.append(f"{g['architecture']} · {g['dataset']} · {g['n_samples']} images · "
                     f"config {g['config_hash'][:12]}")
        width = max(len(f"{c['a']['label']} vs {c['b']['label']}") for c in comps)
        for c in comps:
            pair = f"{c['a']['label']} vs {c['b']['label']}".ljust(width)
            counts = "  ".join(f"{v['family']} {v['a_wins']}/{v['b_wins']}/{v['not_significant']}"
                               for v in c["verdicts"])
            lines += [f"  {pair}  {counts}", f"  {'':{width}}  → {verdict(c)}"]
            shown += 1
    if shown == 0:
        lines.append("nothing to compare: no two of CE, SupCon and SimCLR were evaluated on the same images "
                     "under the same config")
    others = [c for g in report["groups"] for c in g["comparisons"]
              if (c["a"]["objective"], c["b"]["objective"]) not in CLAIM_PAIRS]
    if others:
        names = sorted({c[s]["label"] for c in others for s in "ab"
                        if c[s]["objective"] not in {o for pair in CLAIM_PAIRS for o in pair}})
        lines.append(f"{len(others)} more pairwise comparison{'s' if len(others) > 1 else ''}"
                     + (f" (with {', '.join(names)})" if names else "") + " in LEADERBOARD.md")
    lines.append(f"Page: {out / 'index.html'} · tables: {out / 'LEADERBOARD.md'}")
    return lines


def main(argv: list[str] | None = None) -> int:
    """``python -m sclzoo.evaluator.summary LEADERBOARD_DIR``: prints :func:`summary_lines`."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m sclzoo.evaluator.summary LEADERBOARD_DIR", file=sys.stderr)
        return 2
    if not (Path(args[0]) / "compare.json").is_file():
        print(f"no compare.json in {args[0]!r}: build it with `sclzoo leaderboard RESULTS --out {args[0]}`",
              file=sys.stderr)
        return 1
    print("\n".join(summary_lines(args[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
