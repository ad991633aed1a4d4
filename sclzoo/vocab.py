"""The project's fixed vocabularies, in one place: metric families, training objectives, sample selections.

Every module that names a family, shows an objective or accepts a selection reads it from here (and this module
imports nothing heavy, so the CLI can use it without loading torch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["CLAIMS", "COMPARISONS", "FAMILIES", "Family", "OBJECTIVES", "ObjectiveInfo", "SELECTIONS",
           "objective_info"]

Family = Literal["faithfulness", "complexity", "continuity", "randomisation", "localisation"]
#: Metric families in display order (docs/protocol.md#metrics). ``localisation`` needs a dataset with ground-truth
#: masks (docs/protocol.md#localisation).
FAMILIES: tuple[Family, ...] = ("faithfulness", "complexity", "continuity", "randomisation", "localisation")


@dataclass(frozen=True)
class ObjectiveInfo:
    """How an objective is named and shown.

    Attributes:
        name: Registry name (``zoo/losses.py``), as recorded in config.json and results.
        display: Short name in tables and plots.
        title: Long name in model cards.
        colour: Plot colour.
        paper_ids: arXiv ids of the paper that introduced the objective (model cards' ``paper_ids``).
        contrastive: Trained on embeddings, then evaluated through a linear probe.
    """

    name: str
    display: str
    title: str
    colour: str
    paper_ids: tuple[str, ...]
    contrastive: bool


OBJECTIVES: dict[str, ObjectiveInfo] = {
    o.name: o
    for o in (
        ObjectiveInfo("ce", "CE", "cross-entropy (CE)", "#4c72b0", (), False),
        ObjectiveInfo("supcon", "SupCon", "supervised contrastive (SupCon)", "#dd8452", ("arXiv:2004.11362",), True),
        ObjectiveInfo("simclr", "SimCLR", "self-supervised contrastive (SimCLR)", "#55a868", ("arXiv:2002.05709",),
                      True),
        ObjectiveInfo("triplet", "Triplet", "batch-hard triplet", "#c44e52", ("arXiv:1703.07737",), True),
    )
}


def objective_info(name: str) -> ObjectiveInfo | None:
    """The display data of objective ``name``; None for an objective sclzoo does not know (a user's model)."""
    return OBJECTIVES.get(name)


#: Objective pairs the comparison reports first, in the orientation its verdicts are worded: (first, second).
COMPARISONS: tuple[tuple[str, str], ...] = (("supcon", "simclr"), ("ce", "supcon"), ("ce", "simclr"))
#: Pairs that test a stated claim: (first, second) -> the claim's words.
CLAIMS: dict[tuple[str, str], str] = {("supcon", "simclr"): "SCL beats CL"}

#: Sample selections of an evaluation: CLI/config name -> the name recorded in the canonical config.
SELECTIONS: dict[str, str] = {"first": "first_n", "stratified": "stratified"}
