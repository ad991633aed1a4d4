"""Re-render (or check) the model cards of the bundled zoo repos from their data.

A card (README.md) is a pure function of its repo's config.json and training.json (see
:func:`sclzoo.model_cards.render_card`). ``make cards`` rewrites every bundled card; ``make cards-check`` fails
with a unified diff when a committed card drifted from what its data renders to::

    python -m sclzoo.zoo.cards            # rewrite zoo/models/*/README.md
    python -m sclzoo.zoo.cards --check    # exit 1 and print the diff of each drifted card
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CardStatus", "bundled_repos", "sync_cards", "main"]

MODELS_DIR = Path(__file__).resolve().parent / "models"


@dataclass(frozen=True)
class CardStatus:
    """One repo's card: where it is, whether it matched its data, and the diff when it did not."""

    repo: Path
    drifted: bool
    diff: str


def bundled_repos(models_dir: Path = MODELS_DIR) -> list[Path]:
    """Zoo repo folders under ``models_dir`` (those with a config.json), sorted by name."""
    if not models_dir.is_dir():
        return []
    return sorted(p for p in models_dir.iterdir() if p.is_dir() and (p / "config.json").is_file())


def sync_cards(repos: list[Path], check: bool = False) -> list[CardStatus]:
    """Renders each repo's card; writes it unless ``check`` (then only reports drift).

    Args:
        repos: Zoo repo folders.
        check: Compare only; leave files untouched.

    Returns:
        One :class:`CardStatus` per repo.
    """
    from sclzoo.model_cards import board_rows, leaderboard_rows, render_card

    out = []
    for repo in repos:
        card = repo / "README.md"
        rows, config = leaderboard_rows(repo)
        want = render_card(repo, leaderboard_rows=rows, leaderboard_config=config, scores=board_rows(repo))
        have = card.read_text() if card.is_file() else ""
        drifted = want != have
        diff = "".join(difflib.unified_diff(have.splitlines(keepends=True), want.splitlines(keepends=True),
                                            fromfile=f"{card} (committed)", tofile=f"{card} (rendered)"))
        if drifted and not check:
            card.write_text(want)
        out.append(CardStatus(repo, drifted, diff))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sclzoo.zoo.cards", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail with a diff when a card drifted; write nothing")
    parser.add_argument("--models-dir", type=Path, default=MODELS_DIR, help="folder of zoo repos (default: bundled)")
    args = parser.parse_args(argv)
    repos = bundled_repos(args.models_dir)
    if not repos:
        print(f"no zoo repos (folders with config.json) under {args.models_dir}", file=sys.stderr)
        return 1
    statuses = sync_cards(repos, check=args.check)
    drifted = [s for s in statuses if s.drifted]
    if args.check:  # the card-level check: metadata a Hub page and model-index readers need
        from sclzoo.model_cards import card_problems

        bad = 0
        for repo in repos:
            objective = json.loads((repo / "config.json").read_text()).get("sclzoo", {}).get("objective")
            for problem in card_problems((repo / "README.md").read_text(), objective):
                bad += 1
                print(f"BAD CARD {repo / 'README.md'}: {problem}", file=sys.stderr)
        if bad:
            return 1
    for s in statuses:
        state = ("DRIFTED" if args.check else "updated") if s.drifted else "ok"
        print(f"{state:8} {s.repo / 'README.md'}")
    if args.check and drifted:
        for s in drifted:
            sys.stdout.write(s.diff)
        print(f"{len(drifted)} card(s) differ from their data; run `make cards` and commit the result",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
