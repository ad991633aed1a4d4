"""Objective comparison (docs/protocol.md#objective-comparison): paired tests between models trained with
different objectives.

Two results are compared only when they explain **the same images** under **the same evaluation config**: same
architecture, dataset, ``indices_sha256`` and config hash. For each (method, metric) both results scored, the
per-sample scores are paired by ``sample_id``:

- pairs where either score is NaN are dropped (and counted in ``n_dropped_nan``);
- a two-sided Wilcoxon signed-rank test (``scipy.stats.wilcoxon``, ``zero_method="wilcox"``: zero differences are
  dropped, counted in ``n_zero``) gives the p-value; when every difference is zero there is nothing to test and
  p = 1;
- Holm's step-down correction runs over the tests of one metric family within one comparison (faithfulness,
  complexity, continuity and randomisation are separate families, as the claim is stated per family);
- the effect is the median paired difference ``a − b`` in the metric's units with a seeded percentile bootstrap
  CI; which side is *better* is read from the signed-rank sums (the test's own statistic) in the metric's
  better direction, so a lower-is-better metric (deletion AUC, complexity, sensitivity) flips the sign.

The **claim check** asks per family whether SupCon (SCL) beats SimCLR (CL) for most (method, metric) pairs, i.e.
on more than half of the family's tests, significant after Holm at α; CE is compared with each contrastive
objective the same way. When meta-evaluations say how far each metric can be trusted on the zoo
(:mod:`sclzoo.evaluator.reliability`), each family's verdict also lists its reliable metrics (MC on the zoo above
the threshold) and gives the verdict on their tests alone, Holm-corrected among themselves, beside the verdict on
all. Everything is a pure function of the per-sample scores (and MC scores): same input, same bytes.
"""

from __future__ import annotations

import warnings
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from sclzoo.errors import ResultError
from sclzoo.evaluator.reliability import MC_THRESHOLD, is_reliable
from sclzoo.vocab import CLAIMS, COMPARISONS, FAMILIES, OBJECTIVES

__all__ = ["SampleScores", "from_result", "holm", "paired_test", "compare_records", "compare_folder",
           "format_markdown", "OBJECTIVE_NAMES", "ALPHA"]

ALPHA = 0.05
N_BOOTSTRAP = 2000
OBJECTIVE_NAMES = {name: o.display for name, o in OBJECTIVES.items()}
PAIR_ORDER: list[tuple[str, str]] = list(COMPARISONS)


def objective_name(objective: str) -> str:
    """Display name of an objective: ``supcon`` → ``SupCon``."""
    return OBJECTIVE_NAMES.get(objective, objective)


@dataclass(frozen=True)
class SampleScores:
    """Per-sample scores of one result (one model commit under one evaluation config).

    Attributes:
        model: Model id (``org/name`` or ``local/<folder>``).
        name: Display name of the model.
        commit_sha: The model's commit (40 hex).
        objective: Training objective (``ce``, ``supcon``, ``simclr``, …).
        architecture: Architecture name.
        dataset: Dataset id.
        indices_sha256: Hash of the evaluated sample indices.
        config_hash: Hash of the evaluation config.
        sample_ids: (N,) int64 dataset indices, in the samples file's order.
        scores: ``{(method, metric): (N,) float64}`` with NaN kept.
        metrics: ``{metric: {"family": str, "higher_is_better": bool, "version": int}}``.
        file: The result file, relative to the results folder.
        training: How the model was trained apart from its objective: ``standard``, or the patch deletion it was
            trained with (``patch deletion g4 v0 p0.5``; sclzoo/deletion.py). Only models trained the same way are
            compared, so a difference is the objective's, not the augmentation's.
    """

    model: str
    name: str
    commit_sha: str
    objective: str
    architecture: str
    dataset: str
    indices_sha256: str
    config_hash: str
    sample_ids: np.ndarray
    scores: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    file: str = ""
    training: str = "standard"

    @property
    def key(self) -> str:
        return f"{self.model}@{self.commit_sha}"

    @property
    def group_key(self) -> tuple[str, str, str, str, str]:
        return (self.architecture, self.dataset, self.indices_sha256, self.config_hash, self.training)


def training_of(model: dict[str, Any]) -> str:
    """A result's model block → how it was trained apart from the objective (see :class:`SampleScores`)."""
    pd = model.get("patch_deletion")
    if not isinstance(pd, dict):
        return "standard"
    return f"patch deletion g{pd.get('grid')} v{pd.get('value')} p{pd.get('p')}"


def from_result(doc: dict[str, Any], samples: Sequence[dict[str, Any]], file: str = "") -> SampleScores:
    """Builds :class:`SampleScores` from a result document and its per-sample records (``read_samples``)."""
    ids = np.array([int(s["sample_id"]) for s in samples], dtype=np.int64)
    scores: dict[tuple[str, str], np.ndarray] = {}
    metrics: dict[str, dict[str, Any]] = {}
    for method, per in doc["scores"].items():
        for metric, agg in per.items():
            metrics.setdefault(metric, {"family": agg["family"], "higher_is_better": bool(agg["higher_is_better"]),
                                        "version": int(agg["version"])})
            scores[(method, metric)] = np.array(
                [np.nan if s["scores"].get(method, {}).get(metric) is None else s["scores"][method][metric]
                 for s in samples], dtype=np.float64)
    m = doc["model"]
    return SampleScores(model=m["id"], name=m.get("name", m["id"]), commit_sha=m["commit_sha"],
                        objective=m["objective"], architecture=m["architecture"], dataset=doc["dataset"]["id"],
                        indices_sha256=doc["dataset"]["indices_sha256"], config_hash=doc["config_hash"],
                        sample_ids=ids, scores=scores, metrics=metrics, file=file, training=training_of(m))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values (same order as the input; family size = ``len(pvalues)``).

    p_(i) sorted ascending gets (m − i + 1)·p_(i), made monotone by a running maximum and capped at 1.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    m = len(p)
    if m == 0:
        return []
    order = np.argsort(p, kind="stable")
    adj = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adj[i] = running
    return [float(v) for v in adj]


def _seed(seed: int, *parts: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32("|".join(parts).encode())])


def paired_test(a: np.ndarray, b: np.ndarray, higher_is_better: bool, rng: np.random.Generator,
                n_bootstrap: int = N_BOOTSTRAP) -> dict[str, Any]:
    """Two-sided Wilcoxon signed-rank test of paired scores, with the median difference and its bootstrap CI.

    Args:
        a: (N,) scores of the first model (NaN allowed).
        b: (N,) scores of the second model on the same samples, in the same order.
        higher_is_better: The metric's direction; decides which side is ``better``.
        rng: Generator of the bootstrap resamples.
        n_bootstrap: Number of bootstrap resamples of the paired differences.

    Returns:
        ``n_pairs`` (pairs without NaN), ``n_dropped_nan``, ``n_zero`` (zero differences, dropped by the test),
        ``statistic`` (min of the signed-rank sums) and ``p_value`` (None when no pair is left),
        ``median_diff`` and ``median_diff_ci95`` of ``a − b``, and ``better``: ``"a"``, ``"b"`` or None by the
        signed-rank sums in the metric's better direction (not yet a significance statement).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    keep = ~(np.isnan(a) | np.isnan(b))
    d = a[keep] - b[keep]
    out: dict[str, Any] = {"n_pairs": int(keep.sum()), "n_dropped_nan": int((~keep).sum()), "n_zero": 0,
                           "statistic": None, "p_value": None, "median_diff": None,
                           "median_diff_ci95": [None, None], "better": None}
    if len(d) == 0:
        return out
    nz = d[d != 0]
    out["n_zero"] = int(len(d) - len(nz))
    out["median_diff"] = float(np.median(d))
    boot = np.median(d[rng.integers(0, len(d), size=(n_bootstrap, len(d)))], axis=1)
    lo, hi = np.quantile(boot, [0.025, 0.975])
    out["median_diff_ci95"] = [float(lo), float(hi)]
    if len(nz) == 0:  # every pair is tied: no evidence either way
        out["statistic"], out["p_value"] = 0.0, 1.0
        return out
    ranks = stats.rankdata(np.abs(nz))
    r_plus, r_minus = float(ranks[nz > 0].sum()), float(ranks[nz < 0].sum())
    with warnings.catch_warnings():  # scipy notes when it falls back to the normal approximation
        warnings.simplefilter("ignore")
        res = stats.wilcoxon(nz, zero_method="wilcox", alternative="two-sided")
    out["statistic"] = float(res.statistic)
    out["p_value"] = float(res.pvalue)
    adv_a = r_plus - r_minus if higher_is_better else r_minus - r_plus
    out["better"] = "a" if adv_a > 0 else "b" if adv_a < 0 else None
    return out


def _order_pair(x: SampleScores, y: SampleScores) -> tuple[SampleScores, SampleScores]:
    if (y.objective, x.objective) in PAIR_ORDER:
        return y, x
    if (x.objective, y.objective) in PAIR_ORDER:
        return x, y
    return (x, y) if (x.objective, x.key) <= (y.objective, y.key) else (y, x)


def _pair_rank(a: SampleScores, b: SampleScores) -> tuple[int, str, str]:
    pair = (a.objective, b.objective)
    return (PAIR_ORDER.index(pair) if pair in PAIR_ORDER else len(PAIR_ORDER), a.key, b.key)


def _label(r: SampleScores, group: Sequence[SampleScores]) -> str:
    """Objective name, plus the model when the group holds several models of that objective."""
    same = [g for g in group if g.objective == r.objective]
    if len(same) == 1:
        return objective_name(r.objective)
    return f"{objective_name(r.objective)} ({r.name}@{r.commit_sha[:7]})"


def _verdict(a_label: str, b_label: str, family: str, k: int, j: int, n: int, alpha: float,
             claim: str | None) -> tuple[str, bool]:
    if n == 0:
        return f"{family}: no testable (method, metric) pair.", False
    text = (f"{family}: {a_label} beats {b_label} on {k} of {n} (method, metric) pairs at α={alpha:g} after Holm; "
            f"{b_label} beats {a_label} on {j}; {n - k - j} not significant")
    majority = k > n / 2
    if claim is not None:
        text += f" → “{claim}” {'holds' if majority else 'does not hold'} for most pairs."
    elif majority:
        text += f" → {a_label} is better on most pairs."
    elif j > n / 2:
        text += f" → {b_label} is better on most pairs."
    else:
        text += " → neither is better on most pairs."
    return text, majority


def _reliable_verdict(a_label: str, b_label: str, family: str, ft: list[dict[str, Any]], alpha: float,
                      claim: str | None, mc: Mapping[str, float | None], threshold: float) -> dict[str, Any]:
    """The family's verdict on its reliable metrics' tests alone (Holm among themselves)."""
    names = sorted({t["metric"] for t in ft})
    good = [m for m in names if is_reliable(mc.get(m), threshold)]
    sub = [t for t in ft if t["metric"] in good]
    adj = holm([t["p_value"] for t in sub])
    k = sum(1 for t, p in zip(sub, adj, strict=True) if p < alpha and t["better"] == "a")
    j = sum(1 for t, p in zip(sub, adj, strict=True) if p < alpha and t["better"] == "b")
    if good:
        text, majority = _verdict(a_label, b_label, f"{family} (reliable: {', '.join(good)})", k, j, len(sub), alpha,
                                  claim)
    else:
        text, majority = (f"{family}: no metric of this family is reliable on this zoo (MC > {threshold:g}); "
                          "nothing to conclude from it."), False
    return {"metrics": good, "unreliable": [m for m in names if m not in good],
            "mc": {m: mc.get(m) for m in names}, "n": len(sub), "a_wins": k, "b_wins": j,
            "not_significant": len(sub) - k - j, "majority": majority, "text": text}


def _compare_two(a: SampleScores, b: SampleScores, group: Sequence[SampleScores], alpha: float, seed: int,
                 n_bootstrap: int, mc: Mapping[str, float | None] | None = None,
                 threshold: float = MC_THRESHOLD) -> dict[str, Any]:
    common, ia, ib = np.intersect1d(a.sample_ids, b.sample_ids, assume_unique=False, return_indices=True)
    a_label, b_label = _label(a, group), _label(b, group)
    tests: list[dict[str, Any]] = []
    for method, metric in sorted(set(a.scores) & set(b.scores)):
        meta = a.metrics[metric]
        if b.metrics.get(metric, {}).get("version") != meta["version"]:
            continue  # never compare different metric versions (the config hash already rules this out)
        t = paired_test(a.scores[(method, metric)][ia], b.scores[(method, metric)][ib], meta["higher_is_better"],
                        _seed(seed, a.key, b.key, method, metric), n_bootstrap)
        tests.append({"method": method, "metric": metric, "family": meta["family"],
                      "higher_is_better": meta["higher_is_better"], **t})
    def fam_key(f: str) -> tuple[int, str]:
        return (FAMILIES.index(f) if f in FAMILIES else len(FAMILIES), f)

    tests.sort(key=lambda t: (fam_key(t["family"]), t["method"], t["metric"]))
    families = sorted({t["family"] for t in tests}, key=fam_key)
    claim = CLAIMS.get((a.objective, b.objective))
    verdicts = []
    for fam in families:
        ft = [t for t in tests if t["family"] == fam and t["p_value"] is not None]
        for t, p in zip(ft, holm([t["p_value"] for t in ft]), strict=True):
            t["p_holm"] = p
            t["significant"] = bool(p < alpha)
            t["winner"] = (a.objective if t["better"] == "a" else b.objective) if t["significant"] else None
        k = sum(1 for t in ft if t["significant"] and t["better"] == "a")
        j = sum(1 for t in ft if t["significant"] and t["better"] == "b")
        text, majority = _verdict(a_label, b_label, fam, k, j, len(ft), alpha, claim)
        verdicts.append({"family": fam, "n": len(ft), "a_wins": k, "b_wins": j, "not_significant": len(ft) - k - j,
                         "majority": majority, "claim": claim, "text": text})
        if mc is not None:
            verdicts[-1]["reliable"] = _reliable_verdict(a_label, b_label, fam, ft, alpha, claim, mc, threshold)
    for t in tests:
        if t["p_value"] is None:
            t.update(p_holm=None, significant=False, winner=None)
    return {
        "a": {"model": a.model, "name": a.name, "commit_sha": a.commit_sha, "objective": a.objective,
              "label": a_label, "file": a.file},
        "b": {"model": b.model, "name": b.name, "commit_sha": b.commit_sha, "objective": b.objective,
              "label": b_label, "file": b.file},
        "n_common_samples": int(len(common)),
        "claim": claim,
        "tests": tests,
        "verdicts": verdicts,
    }


def compare_records(records: Iterable[SampleScores], alpha: float = ALPHA, seed: int = 0,
                    n_bootstrap: int = N_BOOTSTRAP, reliability: Mapping[str, Mapping[str, float | None]] | None = None,
                    threshold: float = MC_THRESHOLD) -> dict[str, Any]:
    """Every objective comparison the records allow.

    Args:
        records: Per-sample scores of results (any number, any configs).
        alpha: Significance level after Holm.
        seed: Seed of the bootstrap CIs (per test it is combined with the models, method and metric).
        n_bootstrap: Bootstrap resamples per CI.
        reliability: ``{config_hash: {metric: MC on the zoo}}`` (:func:`sclzoo.evaluator.reliability.mc_by_config`);
            groups with an entry get each verdict's ``reliable`` block. None (the default) leaves the output as it
            was before meta-evaluations existed.
        threshold: MC above which a metric is reliable.

    Returns:
        ``{"alpha", "method", "groups": [...], "claim_check": [...]}``; a group holds the results that explain the
        same images under the same config, its ``comparisons`` one entry per pair of models with different
        objectives, each with ``tests`` (one per (method, metric)) and ``verdicts`` (one per family).
        ``claim_check`` repeats the verdicts of the claim comparisons and of CE vs each contrastive objective.
    """
    records_list = list(records)
    by_group: dict[tuple[str, str, str, str, str], list[SampleScores]] = {}
    for r in records_list:
        by_group.setdefault(r.group_key, []).append(r)
    groups = []
    claim_check = []
    for gk in sorted(by_group, key=lambda k: (k[:4], k[4] != "standard", k[4])):  # standard training first
        members = sorted(by_group[gk], key=lambda r: (r.objective, r.key))
        pairs = [_order_pair(x, y) for i, x in enumerate(members) for y in members[i + 1:]
                 if x.objective != y.objective]
        mc = None if reliability is None else reliability.get(gk[3])
        comparisons = [_compare_two(a, b, members, alpha, seed, n_bootstrap, mc, threshold)
                       for a, b in sorted(pairs, key=lambda p: _pair_rank(*p))]
        arch, dataset, indices, config_hash, training = gk
        note = None
        if len({m.objective for m in members}) < 2:
            note = "only one objective evaluated on these images under this config: nothing to compare"
        groups.append({"architecture": arch, "dataset": dataset, "indices_sha256": indices,
                       "config_hash": config_hash, "training": training, "n_samples": int(len(members[0].sample_ids)),
                       "models": [{"model": m.model, "name": m.name, "commit_sha": m.commit_sha,
                                   "objective": m.objective, "file": m.file} for m in members],
                       "comparisons": comparisons, "note": note})
        for c in comparisons:
            pair = (c["a"]["objective"], c["b"]["objective"])
            if pair in PAIR_ORDER:
                for v in c["verdicts"]:
                    claim_check.append({"config_hash": config_hash, "dataset": dataset, "architecture": arch,
                                        "training": training,
                                        "a": c["a"]["label"], "b": c["b"]["label"], "family": v["family"],
                                        "claim": c["claim"], "holds": v["majority"], "text": v["text"]})
                    if "reliable" in v:
                        r = v["reliable"]
                        claim_check[-1]["reliable"] = {"metrics": r["metrics"], "holds": r["majority"],
                                                       "text": r["text"]}
    method: dict[str, Any] = {
        "test": "Wilcoxon signed-rank, two-sided (scipy.stats.wilcoxon, zero_method='wilcox')",
        "pairs": "by sample_id; pairs with a NaN score dropped and counted",
        "correction": "Holm per (comparison, metric family)",
        "effect": "median paired difference a − b, percentile bootstrap 95% CI",
        "bootstrap": {"n_resamples": n_bootstrap, "seed": seed},
        "majority": "a claim holds for a family when the first objective wins more than half of its "
                    "(method, metric) tests",
    }
    if reliability is not None:
        method["reliability"] = (f"per family, the verdict on the tests of its reliable metrics alone (MC on the zoo "
                                 f"> {threshold:g}, docs/protocol.md#meta-evaluation), Holm among themselves")
    from sclzoo.evaluator.proxies import deletion_vs_single_deletion, ground_truth_agreement

    report = {"alpha": alpha, "method": method, "groups": groups, "claim_check": claim_check}
    # The two checks of the proxies themselves (evaluator/proxies.py); absent when the records allow neither.
    deletion = deletion_vs_single_deletion(report)
    if deletion:
        report["deletion_check"] = deletion
    agreement = ground_truth_agreement(records_list, seed=seed)
    if agreement:
        report["ground_truth"] = agreement
    return report


def compare_folder(results_dir: str | Path, alpha: float = ALPHA, seed: int = 0) -> dict[str, Any]:
    """:func:`compare_records` over every result under ``results_dir``; results whose per-sample file is missing
    or corrupt are listed in ``skipped``."""
    from sclzoo.evaluator.results import read_result, read_samples

    root = Path(results_dir)
    if not root.is_dir():
        raise ResultError(f"results folder {str(root)!r} does not exist; run `sclzoo evaluate` first")
    records, skipped = [], []
    for f in sorted(root.rglob("*.json")):
        doc = read_result(f)
        if doc.get("schema_version") != 1 or "scores" not in doc:
            continue
        rel = f.relative_to(root).as_posix()
        try:
            records.append(from_result(doc, read_samples(f), rel))
        except ResultError:
            skipped.append(rel)
    return {**compare_records(records, alpha=alpha, seed=seed), "skipped": skipped}


def _fmt(v: float | None, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}g}"


def format_p_value(v: float | None) -> str:
    """A p-value for tables: 3 decimals, scientific below 0.001, a dash when there was nothing to test."""
    if v is None:
        return "–"
    return f"{v:.2e}" if v < 1e-3 else f"{v:.3f}"


def _training_note(training: str | None) -> str:
    return "" if training in (None, "standard") else f" · trained with {training}"


def format_markdown(report: dict[str, Any]) -> str:
    """The comparison as Markdown: the claim check, then one table of tests per comparison."""
    lines = ["## Objective comparison", ""]
    if not any(g["comparisons"] for g in report["groups"]):
        return "\n".join([*lines, "No two objectives were evaluated on the same images under the same config "
                          "(same architecture, dataset, sample indices and config hash): nothing to compare.", ""])
    lines += [f"Paired two-sided Wilcoxon signed-rank tests per (method, metric) on the same images, Holm-corrected "
              f"per metric family, α = {report['alpha']:g}. Δ is the median paired difference (first − second) "
              "in the metric's units with a bootstrap 95 % CI; ↑/↓ gives the metric's better direction.", "",
              "### Claim check", ""]
    for c in report["claim_check"]:
        lines.append(f"- `{c['config_hash'][:12]}` {c['dataset']}{_training_note(c.get('training'))} · "
                     f"{c['a']} vs {c['b']} — {c['text']}")
        if "reliable" in c:
            lines.append(f"  - on reliable metrics alone: {c['reliable']['text']}")
    lines.append("")
    from sclzoo.evaluator.proxies import format_markdown as proxies_markdown

    extra = proxies_markdown(report.get("ground_truth", []), report.get("deletion_check", []))
    if extra:
        lines += [extra]
    for g in report["groups"]:
        for c in g["comparisons"]:
            lines += [f"### {c['a']['label']} vs {c['b']['label']} · {g['architecture']} · {g['dataset']}"
                      f"{_training_note(g.get('training'))} · config `{g['config_hash'][:12]}`", "",
                      f"{c['a']['name']}@{c['a']['commit_sha'][:7]} vs {c['b']['name']}@{c['b']['commit_sha'][:7]} "
                      f"on {c['n_common_samples']} common images.", "",
                      "| family | method | metric | n pairs (NaN dropped) | Δ median [95% CI] | p | p Holm | better |",
                      "|---|---|---|---|---|---|---|---|"]
            for t in c["tests"]:
                arrow = "↑" if t["higher_is_better"] else "↓"
                ci = t["median_diff_ci95"]
                better = objective_name(t["winner"]) if t["winner"] else "n.s."
                lines.append(f"| {t['family']} | {t['method']} | {t['metric']} {arrow} | {t['n_pairs']} "
                             f"({t['n_dropped_nan']}) | {_fmt(t['median_diff'])} [{_fmt(ci[0])}, {_fmt(ci[1])}] | "
                             f"{format_p_value(t['p_value'])} | {format_p_value(t['p_holm'])} | {better} |")
            lines.append("")
            lines += [f"- {v['text']}" for v in c["verdicts"]]
            lines.append("")
    return "\n".join(lines)
