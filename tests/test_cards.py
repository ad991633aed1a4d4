"""Model cards are rendered from their data: the bundled cards must not drift (what `make cards-check` checks)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from sclzoo.model_cards import leaderboard_rows, render_card
from sclzoo.zoo.cards import bundled_repos, sync_cards
from sclzoo.zoo.hub import content_commit


def test_bundled_cards_match_their_data() -> None:
    repos = bundled_repos()
    assert len(repos) >= 3
    drifted = [s for s in sync_cards(repos, check=True) if s.drifted]
    assert not drifted, "cards drifted (run `make cards`):\n" + "\n".join(s.diff for s in drifted)


def test_card_shows_leaderboard_rows_only_for_the_same_weights(bundled: dict[str, Path], tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(bundled["ce"], repo)
    row = {"commit_sha": content_commit(repo), "config_hash": "ab" * 32, "n_evaluated": 64, "method": "saliency",
           "metrics": {"sparseness": {"family": "complexity", "higher_is_better": True, "mean": 0.5,
                                      "ci95": [0.4, 0.6], "n": 64, "n_nan": 2}}}
    board = tmp_path / "leaderboard.json"
    board.write_text(json.dumps({"rows": [row, {**row, "commit_sha": "0" * 40}]}))
    rows, config = leaderboard_rows(repo, board)
    assert config == "ab" * 6 and rows == [{"method": "saliency", "metric": "sparseness ↑", "family": "complexity",
                                           "mean": "0.5", "ci": "[0.4, 0.6]", "n": "64 (2 NaN)"}]
    card = render_card(repo, leaderboard_rows=rows, leaderboard_config=config)
    assert "| saliency | sparseness ↑ | complexity | 0.5 | [0.4, 0.6] | 64 (2 NaN) |" in card
    assert "library_name: timm" in card and "- sclzoo" in card and "value: 0.98" in card
    board.write_text(json.dumps({"rows": [{**row, "commit_sha": "0" * 40}]}))  # other weights: no rows
    assert leaderboard_rows(repo, board) == ([], "")
