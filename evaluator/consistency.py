"""The meta-consistency of a metric: intra-consistency (IAC), inter-consistency (IEC) and the MC score.

Pure functions of score arrays (numpy and scipy, no torch), so the leaderboard and ``sclzoo validate`` can recompute
a meta-evaluation from its stored draws. The definitions are MetaQuantus's (Hedström et al., "The Meta-Evaluation
Problem in Explainable AI", TMLR 2023; package ``metaquantus`` 0.0.5, ``MetaEvaluation``); docs/protocol.md#meta-evaluation
gives them in words and :mod:`sclzoo.evaluator.meta` the perturbation tests that produce the arrays.

Notation: ``q`` (N,) the unperturbed scores of one method, ``q̂`` the scores after one weight-noise draw; ``Q``,
``Q̂`` (M, N) the same for M methods; ``keep`` (N,) the samples a draw is judged on: those whose prediction the
noise left unchanged (minor test, *NR* = noise resilience) or changed (disruptive test, *AR* = adversarial
reactivity).

- IAC_NR of one (method, draw) is the p-value of a two-sided Wilcoxon signed-rank test of ``q`` against ``q̂``
  over ``keep`` (``scipy.stats.wilcoxon``, ``zero_method="zsplit"``): high when the scores did not move.
  IAC_AR is ``1 − p``: high when they did. A test that raises counts as p = 0, as in MetaQuantus.
- IEC_NR of one draw is the fraction of positions at which the methods' order by score (``argsort`` over the
  methods, per sample) is the same before and after the noise, over the kept samples: high when the ranking of
  the methods is kept. IEC_AR is the fraction of kept (method, sample) entries whose score got worse (lower when
  higher is better, higher when lower is better; a tie is not worse).
- Each part is averaged over draws (and IAC over methods too); MC is the mean of the four parts, in [0, 1]
  (higher = more reliable). MetaQuantus also reports the standard deviation, over iterations, of each
  iteration's mean of the four parts (``mc_std``).

Where sclzoo departs from MetaQuantus, it is to count NaN instead of letting it spread: a pair (IAC) or a sample
(IEC) with a NaN score is left out of that draw and counted, and a draw whose kept set is empty (or all NaN) is
*undefined*: recorded as null, counted, and left out of its part's mean. MetaQuantus returns NaN for the whole
score in both cases; on arrays without NaN and without an undefined draw the two agree exactly
(tests/test_meta_reference.py).

MetaQuantus 0.0.5 takes the metric's direction as ``score_direction`` and tests it for truth, so its documented
string values ``"higher"`` and ``"lower"`` both select the lower-is-better comparison in IEC_AR; the comparison
here is the paper's (a disrupted score must get worse in the metric's own direction), which is MetaQuantus's
with ``score_direction=False`` for higher-is-better metrics and ``True`` for lower-is-better ones.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

__all__ = ["PARTS", "TESTS", "DrawScores", "iac_p_value", "iac", "iec_resilience", "iec_reactivity",
           "consistency", "mean_or_none"]

#: The two perturbation tests: minor (noise resilience, NR) and disruptive (adversarial reactivity, AR).
TESTS = ("minor", "disruptive")
#: The four parts of the MC score, in MetaQuantus's order.
PARTS = ("iac_nr", "iac_ar", "iec_nr", "iec_ar")


def iac_p_value(q: np.ndarray, q_hat: np.ndarray, keep: np.ndarray) -> tuple[float, int, int]:
    """The Wilcoxon p-value of one (method, draw): does the score distribution of the kept samples move?

    Args:
        q: (N,) unperturbed scores (NaN allowed).
        q_hat: (N,) scores under one noise draw.
        keep: (N,) bool, the samples this draw is judged on.

    Returns:
        ``(p, n_pairs, n_nan)``: p is NaN when no kept pair is left (undefined), 0.0 when scipy raises (as in
        MetaQuantus); ``n_pairs`` pairs were tested, ``n_nan`` kept pairs were dropped for a NaN score.
    """
    q = np.asarray(q, dtype=np.float64)[keep]
    q_hat = np.asarray(q_hat, dtype=np.float64)[keep]
    finite = ~(np.isnan(q) | np.isnan(q_hat))
    n_nan = int((~finite).sum())
    q, q_hat = q[finite], q_hat[finite]
    if len(q) == 0:
        return math.nan, 0, n_nan
    try:
        with warnings.catch_warnings():  # scipy notes ties, zeros and its normal approximation
            warnings.simplefilter("ignore")
            p = float(stats.wilcoxon(q, q_hat, alternative="two-sided", zero_method="zsplit")[1])
    except Exception:  # MetaQuantus counts any failure of the test as p = 0
        p = 0.0
    return p, len(q), n_nan


def iac(q: np.ndarray, q_hat: np.ndarray, keep: np.ndarray, test: str) -> float:
    """IAC of one (method, draw): the p-value (minor test) or 1 − p-value (disruptive); NaN when undefined."""
    p, _, _ = iac_p_value(q, q_hat, keep)
    return p if test == "minor" else 1.0 - p


def iec_resilience(big_q: np.ndarray, big_q_hat: np.ndarray, keep: np.ndarray) -> tuple[float, int]:
    """IEC_NR of one draw: is the order of the methods by score kept, sample by sample?

    Args:
        big_q: (M, N) unperturbed scores of M methods.
        big_q_hat: (M, N) scores under one noise draw.
        keep: (N,) bool.

    Returns:
        ``(u, n_nan)``: the mean over kept samples and the M sorted positions of 1{same method at that position}
        (``np.argsort`` over methods, as MetaQuantus), NaN when no kept sample is left; ``n_nan`` kept samples were
        left out because a method's score was NaN.
    """
    big_q = np.asarray(big_q, dtype=np.float64)
    big_q_hat = np.asarray(big_q_hat, dtype=np.float64)
    finite = ~(np.isnan(big_q).any(axis=0) | np.isnan(big_q_hat).any(axis=0))
    use = keep & finite
    n_nan = int((keep & ~finite).sum())
    if not use.any():
        return math.nan, n_nan
    r_star = np.argsort(big_q, axis=0)[:, use]
    r_hat = np.argsort(big_q_hat, axis=0)[:, use]
    return float(np.mean(r_star == r_hat)), n_nan


def iec_reactivity(big_q: np.ndarray, big_q_hat: np.ndarray, keep: np.ndarray, higher_is_better: bool
                   ) -> tuple[float, int]:
    """IEC_AR of one draw: did the kept scores get worse?

    Args:
        big_q: (M, N) unperturbed scores.
        big_q_hat: (M, N) scores under one noise draw.
        keep: (N,) bool.
        higher_is_better: The metric's direction.

    Returns:
        ``(u, n_nan)``: the mean over kept (method, sample) entries without NaN of 1{q̂ worse than q}, NaN when
        none is left; ``n_nan`` kept entries were left out for a NaN score.
    """
    q = np.asarray(big_q, dtype=np.float64)[:, keep]
    q_hat = np.asarray(big_q_hat, dtype=np.float64)[:, keep]
    finite = ~(np.isnan(q) | np.isnan(q_hat))
    n_nan = int((~finite).sum())
    if not finite.any():
        return math.nan, n_nan
    worse = q_hat < q if higher_is_better else q_hat > q
    return float(worse[finite].mean()), n_nan


def mean_or_none(values: Sequence[float]) -> float | None:
    """Mean of the defined (non-NaN) values; None when there is none."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    return float(v.mean()) if len(v) else None


@dataclass(frozen=True)
class DrawScores:
    """One noise draw of one test, as the consistency measures need it.

    Attributes:
        predictions: (N,) the perturbed model's predicted classes.
        scores: ``{method: (N,) float64}`` the metric's scores under this draw (NaN kept).
    """

    predictions: np.ndarray
    scores: Mapping[str, np.ndarray]


def _kept(test: str, unperturbed: np.ndarray, perturbed: np.ndarray) -> np.ndarray:
    same = np.asarray(perturbed) == np.asarray(unperturbed)
    return same if test == "minor" else ~same


def consistency(unperturbed_scores: Mapping[str, np.ndarray], unperturbed_predictions: np.ndarray,
                draws: Mapping[str, Sequence[DrawScores]], higher_is_better: bool, iterations: int
                ) -> dict[str, Any]:
    """IAC, IEC and MC of one metric from its scores before and under every noise draw of both tests.

    Args:
        unperturbed_scores: ``{method: (N,)}`` scores of the unperturbed model (methods in a fixed order: the
            order IEC_NR sorts ties in).
        unperturbed_predictions: (N,) the unperturbed model's predictions.
        draws: ``{"minor": [...], "disruptive": [...]}``, each ``iterations × K`` draws, iteration-major.
        higher_is_better: The metric's direction.
        iterations: How many iterations the draws form (for ``mc_std``).

    Returns:
        ``{"mc", "mc_std", "iac_nr", "iac_ar", "iec_nr", "iec_ar", "resilience", "reactivity", "undefined",
        "draws"}``: the part means (None when a part has no defined draw; MC then None too), the resilience
        (mean of IAC_NR and IEC_NR) and reactivity (mean of IAC_AR and IEC_AR), ``undefined`` counts of undefined
        draw values per part, and ``draws``: per test, one record per draw with ``iac`` (per method), ``iec``,
        ``n_kept`` and the NaN counts.
    """
    methods = list(unperturbed_scores)
    big_q = np.stack([np.asarray(unperturbed_scores[m], dtype=np.float64) for m in methods])
    values: dict[str, list[float]] = {p: [] for p in PARTS}
    per_iteration: dict[str, list[list[float]]] = {p: [] for p in PARTS}
    records: dict[str, list[dict[str, Any]]] = {}
    for test in TESTS:
        iac_part, iec_part = ("iac_nr", "iec_nr") if test == "minor" else ("iac_ar", "iec_ar")
        recs = []
        runs = list(draws[test])
        if iterations < 1 or len(runs) % iterations:
            raise ValueError(f"{len(runs)} {test} draws do not form {iterations} iterations of equal size")
        per = len(runs) // iterations
        for d, run in enumerate(runs):
            keep = _kept(test, unperturbed_predictions, run.predictions)
            big_q_hat = np.stack([np.asarray(run.scores[m], dtype=np.float64) for m in methods])
            iac_by_method: dict[str, float | None] = {}
            iac_values: list[float] = []
            nan_pairs = 0
            for i, m in enumerate(methods):
                p, _, n_nan = iac_p_value(big_q[i], big_q_hat[i], keep)
                nan_pairs += n_nan
                v = p if test == "minor" else 1.0 - p
                iac_by_method[m] = None if math.isnan(v) else v
                iac_values.append(v)
            values[iac_part] += iac_values
            if test == "minor":
                u, nan_iec = iec_resilience(big_q, big_q_hat, keep)
            else:
                u, nan_iec = iec_reactivity(big_q, big_q_hat, keep, higher_is_better)
            values[iec_part].append(u)
            if d % per == 0:
                per_iteration[iac_part].append([])
                per_iteration[iec_part].append([])
            per_iteration[iac_part][-1] += iac_values
            per_iteration[iec_part][-1].append(u)
            recs.append({"iac": iac_by_method, "iec": None if math.isnan(u) else u, "n_kept": int(keep.sum()),
                         "n_nan_pairs": nan_pairs, "n_nan_iec": nan_iec})
        records[test] = recs
    parts = {p: mean_or_none(values[p]) for p in PARTS}
    defined = all(v is not None for v in parts.values())
    mc = float(np.mean([parts[p] for p in PARTS])) if defined else None
    it_means = []
    for i in range(iterations):
        ms = [mean_or_none(per_iteration[p][i]) for p in PARTS]
        if all(m is not None for m in ms):
            it_means.append(float(np.mean(ms)))  # type: ignore[arg-type]
    mc_std = float(np.std(it_means)) if defined and len(it_means) == iterations else None

    def pair(a: str, b: str) -> float | None:
        return None if parts[a] is None or parts[b] is None else (parts[a] + parts[b]) / 2  # type: ignore[operator]

    return {"mc": mc, "mc_std": mc_std, **parts, "resilience": pair("iac_nr", "iec_nr"),
            "reactivity": pair("iac_ar", "iec_ar"),
            "undefined": {p: int(np.isnan(np.asarray(values[p], dtype=np.float64)).sum()) for p in PARTS},
            "draws": records}
