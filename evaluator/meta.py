"""``sclzoo.meta_evaluate``: how far each metric can be trusted on a model (docs/protocol.md#meta-evaluation).

A meta-evaluation runs MetaQuantus's two model-perturbation tests (Hedström et al., "The Meta-Evaluation Problem in
Explainable AI", TMLR 2023; package ``metaquantus`` 0.0.5) on the evaluation a config describes: the same model,
images, targets, methods and metrics as ``sclzoo evaluate``, whose per-sample scores are the unperturbed ones.

- **Noise.** A perturbed model is a copy of the model, made on the evaluation device and never written to disk,
  with every parameter (``model.parameters()``; buffers such as batch-norm statistics are left alone) multiplied
  element-wise by noise drawn from N(1, σ²) (MetaQuantus's ``noise_type="multiplicative"``, ``mean=1``). The
  standard normals are drawn on the CPU from :func:`~sclzoo.evaluator.seeding.sample_generator` keyed by
  ``(seed, "meta/<test>/<unit>", draw)`` and moved to the device, so CPU and GPU runs perturb alike.
- **Draw units.** A metric's perturbed models are its own: the unit is the metric's name, except that a metric
  that shares its draws with another in the plain evaluation (``avg_sensitivity`` with ``max_sensitivity``,
  :attr:`MetricSpec.shares_draws_with`) shares its perturbed models with it too, and is scored on the same
  explanations (its unit is the other metric's name, whether or not that one is selected). A metric's result
  therefore depends on (seed, unit, draw) only, never on which other metrics run beside it.
- **Tests.** Minor (resilience, MetaQuantus's "Model Resilience Test") with σ_minor and disruptive (reactivity,
  "Model Adversary Test") with σ_disruptive; each runs :data:`ITERATIONS` × :data:`PERTURBATIONS` = 3 × 2 = 6
  draws per unit by default: MetaQuantus's 3 iterations (so MC has a standard deviation over iterations) with 2
  draws each instead of its benchmarks' K = 5 (``--iters=3 --K=5``), which would make the standard preset's
  meta-evaluation 2.5 times dearer (``--perturbations 5`` gives exactly MetaQuantus's setting); with 64 images
  and 3 methods each IAC part still averages 18 p-values. Under each draw every method explains the perturbed
  model for the **unperturbed** model's targets, and the unit's metrics score those explanations on the
  perturbed model (:func:`~sclzoo.evaluator.runner.run_evaluation` with ``targets``: the same batches,
  :class:`~sclzoo.evaluator.metrics.MetricContext` and metric draws as the plain evaluation).
- **Calibration** (per model, on the evaluated images, unless σ is given): :data:`CALIBRATION_DRAWS` = 5 noise
  draws (``(seed, "meta/calibration", k)``, the same standard normals at every σ) at each σ of the 1-2-5 grid
  :data:`SIGMA_GRID` (0.001 … 8). σ_minor is the largest grid value up to which every calibration draw changes
  at most :data:`MAX_CHANGED_MINOR` = 5 % of the evaluated predictions (the tests' own draws are others, so one
  of them may change a little more: each test records the fractions its draws changed, and the minor test's
  measures judge a draw only on the samples whose prediction it kept); σ_disruptive is the smallest grid value
  above σ_minor at which the perturbed predictions agree with the unperturbed ones no more than chance does:
  mean agreement over the draws ≤ 1/C + :data:`CHANCE_Z` · sqrt((1/C)(1 − 1/C)/n) with C classes and n images
  (chance plus two binomial standard errors; agreement with the unperturbed predictions is the model's accuracy
  as the disruptive test judges it, and is defined for any dataset). The grid rows are recorded.
- **Measures.** IAC and IEC of each test and the MC score of each metric: :mod:`sclzoo.evaluator.consistency`
  (MetaQuantus's definitions; the statistical test is the two-sided Wilcoxon signed-rank test with
  ``zero_method="zsplit"`` over the samples whose prediction the draw kept (minor) or changed (disruptive)).

Cost: 1 plain evaluation for the unperturbed scores, the calibration's forwards (at most 13 σ × 5 draws × n
images), then per unit 2 × 6 evaluations of that unit's metrics, each with its own explanations: :func:`meta_cost`,
``sclzoo meta-evaluate --dry-run``; bench/bench_meta.py measures it.

The result is one file per (model commit, meta config): ``<results>/<org>__<name>/<commit>/<meta_hash>.meta.json``
with every draw's per-sample scores beside it (:mod:`sclzoo.evaluator.meta_results`); a run is checkpointed per
unit and draw and resumes like an evaluation.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from sclzoo.errors import ConfigError, ModelLoadError
from sclzoo.evaluator.config import EvalConfig, build_config
from sclzoo.evaluator.consistency import TESTS, DrawScores, consistency
from sclzoo.evaluator.metrics import METRICS, metric_cost
from sclzoo.evaluator.runner import EvalOutput, estimate_cost, resolve_specs, run_evaluation
from sclzoo.evaluator.seeding import deterministic_algorithms, sample_generator

__all__ = ["META_VERSION", "ITERATIONS", "PERTURBATIONS", "SIGMA_GRID", "CALIBRATION_DRAWS", "MAX_CHANGED_MINOR",
           "CHANCE_Z", "MetaConfig", "MetaOutput", "MetaResult", "UnitRun", "Calibration", "perturbed_copy",
           "draw_units", "calibrate", "run_meta", "summarise", "meta_cost", "meta_evaluate", "meta_dry_run"]

#: Version of the meta-evaluation protocol (bumped when a definition or constant below changes).
META_VERSION = 1
#: Iterations of each test (MetaQuantus's benchmarks: 3) and noise draws per iteration (theirs: K = 5; 2 here).
ITERATIONS = 3
PERTURBATIONS = 2
#: Candidate noise levels σ of the calibration, ascending (a 1-2-5 grid).
SIGMA_GRID: tuple[float, ...] = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 4.0, 8.0)
#: Noise draws per σ in the calibration.
CALIBRATION_DRAWS = 5
#: Most evaluated predictions a minor draw may change.
MAX_CHANGED_MINOR = 0.05
#: Binomial standard errors above chance that a disruptive draw's agreement may reach.
CHANCE_Z = 2.0
NOISE = "multiplicative N(1, sigma^2) on every parameter (model.parameters(); buffers unchanged)"
STATISTICAL_TEST = "scipy.stats.wilcoxon, two-sided, zero_method='zsplit'"


@dataclass(frozen=True)
class MetaConfig:
    """The meta-evaluation's own settings (the evaluation's are an :class:`EvalConfig`).

    Attributes:
        iterations: Iterations of each test (MetaQuantus's ``iterations``).
        perturbations: Noise draws per iteration (MetaQuantus's ``nr_perturbations``, K).
        sigma_minor: σ of the minor test; None = calibrated (module docstring).
        sigma_disruptive: σ of the disruptive test; None = calibrated.
    """

    iterations: int = ITERATIONS
    perturbations: int = PERTURBATIONS
    sigma_minor: float | None = None
    sigma_disruptive: float | None = None

    def __post_init__(self) -> None:
        for name in ("iterations", "perturbations"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"meta-evaluation {name} must be a positive integer, got {v!r}")
        if self.iterations * self.perturbations < 2:
            raise ConfigError("a meta-evaluation needs at least 2 noise draws per test (iterations × perturbations); "
                              "pass --iterations 1 --perturbations 2 or more")
        for name in ("sigma_minor", "sigma_disruptive"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
                                  or v <= 0):
                raise ConfigError(f"--{name.replace('_', '-')} must be a positive number, got {v!r}")
        if (self.sigma_minor is not None and self.sigma_disruptive is not None
                and self.sigma_disruptive <= self.sigma_minor):
            raise ConfigError(f"--sigma-disruptive {self.sigma_disruptive} must be larger than --sigma-minor "
                              f"{self.sigma_minor}")

    @property
    def draws(self) -> int:
        """Noise draws per test and unit."""
        return self.iterations * self.perturbations

    def canonical(self) -> dict[str, Any]:
        """Everything that defines the meta-evaluation beside the evaluation config, as recorded and hashed."""
        def sigma(v: float | None) -> float | str:
            return "calibrated" if v is None else float(v)

        return {
            "version": META_VERSION,
            "iterations": self.iterations,
            "perturbations": self.perturbations,
            "noise": NOISE,
            "sigma_minor": sigma(self.sigma_minor),
            "sigma_disruptive": sigma(self.sigma_disruptive),
            "calibration": {"sigma_grid": list(SIGMA_GRID), "draws": CALIBRATION_DRAWS,
                            "max_changed_minor": MAX_CHANGED_MINOR, "chance_z": CHANCE_Z},
            "statistical_test": STATISTICAL_TEST,
            "seeding": "(seed, meta/<test>/<unit>, draw)",
        }


def meta_hash(evaluation_config_hash: str, meta: Mapping[str, Any]) -> str:
    """sha256 naming a meta result: of the evaluation's config hash and the canonical meta config."""
    blob = json.dumps({"evaluation_config_hash": evaluation_config_hash, "meta": meta}, sort_keys=True,
                      separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def perturbed_copy(model: nn.Module, sigma: float, generator: torch.Generator) -> nn.Module:
    """A copy of ``model`` (on its device) with every parameter multiplied by noise from N(1, σ²).

    Args:
        model: The model; it is not changed.
        sigma: Standard deviation σ of the multiplicative noise.
        generator: CPU generator of the standard normals, drawn parameter by parameter in ``parameters()`` order.

    Returns:
        The perturbed copy (eval mode).
    """
    return _scaled_copy(model, sigma, _normals(model, generator))


def _normals(model: nn.Module, generator: torch.Generator) -> list[Tensor]:
    """One float32 standard normal per parameter element, on the CPU, in ``parameters()`` order."""
    return [torch.randn(tuple(p.shape), generator=generator, dtype=torch.float32) for p in model.parameters()]


def _scaled_copy(model: nn.Module, sigma: float, normals: Sequence[Tensor]) -> nn.Module:
    """A copy of ``model`` whose parameters are multiplied by 1 + σ·z, z from ``normals``."""
    net = copy.deepcopy(model).eval()
    with torch.no_grad():
        for p, z in zip(net.parameters(), normals, strict=True):
            p.mul_((1.0 + sigma * z).to(device=p.device, dtype=p.dtype))
    return net


def draw_units(metrics: Sequence[str]) -> dict[str, list[str]]:
    """Selected metrics grouped by the unit whose perturbed models they share (module docstring), in order."""
    units: dict[str, list[str]] = {}
    for name in metrics:
        unit = METRICS.get(name).shares_draws_with or name
        units.setdefault(unit, []).append(name)
    return units


@dataclass(frozen=True)
class UnitRun:
    """What one evaluation of the meta-evaluation computed (the unperturbed one, or one unit under one draw).

    Attributes:
        predictions: (N,) predicted classes of the (perturbed) model.
        scores: ``{method: {metric: (N,) float64}}`` with NaN kept.
        accuracy: Accuracy on the evaluated images (None when the labels are not the model's classes).
        sigma: σ of the draw (0 for the unperturbed run).
        seconds: Wall time.
    """

    predictions: np.ndarray
    scores: dict[str, dict[str, np.ndarray]]
    accuracy: float | None
    sigma: float
    seconds: float


@dataclass(frozen=True)
class Calibration:
    """The noise levels of the two tests and how they were found.

    Attributes:
        sigma_minor: σ of the minor test.
        sigma_disruptive: σ of the disruptive test.
        minor_given: σ_minor was given, not calibrated.
        disruptive_given: σ_disruptive was given.
        chance_bound: The agreement a disruptive σ must reach (1/C + z·SE).
        rows: One per grid σ tried: ``{"sigma", "changed": [per draw], "agreement_mean", "finite"}``.
    """

    sigma_minor: float
    sigma_disruptive: float
    minor_given: bool
    disruptive_given: bool
    chance_bound: float
    rows: list[dict[str, Any]] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        return {"sigma_minor": self.sigma_minor, "sigma_disruptive": self.sigma_disruptive,
                "minor": "given" if self.minor_given else "calibrated",
                "disruptive": "given" if self.disruptive_given else "calibrated",
                "chance_bound": self.chance_bound, "rows": self.rows}


@torch.no_grad()
def _predictions(model: nn.Module, images: Tensor, batch_size: int, device: torch.device) -> Tensor | None:
    """Predicted classes of ``images`` (CPU), or None when the model returns a NaN/inf logit."""
    out = []
    for i in range(0, len(images), batch_size):
        logits = model(images[i : i + batch_size].to(device)).float()
        if not torch.isfinite(logits).all():
            return None
        out.append(logits.argmax(1).cpu())
    return torch.cat(out)


def chance_bound(num_classes: int, n: int) -> float:
    """1/C + z·sqrt((1/C)(1 − 1/C)/n): the most agreement with the unperturbed predictions a disrupted model may
    keep (chance plus :data:`CHANCE_Z` binomial standard errors)."""
    c = 1.0 / num_classes
    return c + CHANCE_Z * math.sqrt(c * (1 - c) / n)


def calibrate(model: nn.Module, images: Tensor, predictions: Tensor, num_classes: int, seed: int, *,
              device: torch.device, batch_size: int, sigma_minor: float | None = None,
              sigma_disruptive: float | None = None) -> Calibration:
    """Finds σ_minor and σ_disruptive on the evaluated images (module docstring).

    Args:
        model: The unperturbed model (on ``device``).
        images: (N, C, H, W) the evaluated images.
        predictions: (N,) the unperturbed model's predictions.
        num_classes: C.
        seed: Global seed.
        device: Where the model runs.
        batch_size: Images per forward.
        sigma_minor: Given σ_minor (not calibrated), or None.
        sigma_disruptive: Given σ_disruptive, or None.

    Raises:
        ConfigError: no grid σ meets a criterion (the message says which σ to pass instead).
    """
    n = len(images)
    bound = chance_bound(num_classes, n)
    rows: list[dict[str, Any]] = []
    # The standard normals of each calibration draw are drawn once and scaled by every σ (common random numbers:
    # a larger σ moves the weights the same way, further).
    normals = [_normals(model, sample_generator(seed, "meta/calibration", k)) for k in range(CALIBRATION_DRAWS)]
    minor = sigma_minor
    disruptive = sigma_disruptive
    minor_open = sigma_minor is None
    for sigma in SIGMA_GRID:
        if not minor_open and disruptive is not None:
            break
        if minor_open and sigma_disruptive is not None and sigma >= sigma_disruptive:
            break  # a minor σ must stay below the given disruptive one
        if not minor_open and minor is not None and sigma <= minor:
            continue  # only σ above the minor one can be disruptive
        changed: list[float] = []
        for z in normals:
            net = _scaled_copy(model, sigma, z)
            pred = _predictions(net, images, batch_size, device)
            del net
            if pred is None:  # NaN/inf logits: the σ is unusable for either test
                changed = []
                break
            changed.append(float((pred != predictions).float().mean()))
        finite = bool(changed)
        agreement = 1.0 - float(np.mean(changed)) if finite else None
        rows.append({"sigma": sigma, "changed": changed if finite else None, "agreement_mean": agreement,
                     "finite": finite})
        if minor_open:
            if finite and max(changed) <= MAX_CHANGED_MINOR:
                minor = sigma
                continue
            minor_open = False
        if disruptive is None and agreement is not None and agreement <= bound and (minor is None or sigma > minor):
            disruptive = sigma
    if minor is None:
        raise ConfigError(f"even σ = {SIGMA_GRID[0]} changes more than {MAX_CHANGED_MINOR:.0%} of the {n} evaluated "
                          "predictions, so no minor perturbation can be calibrated; pass --sigma-minor (smaller) "
                          "or evaluate more images")
    if disruptive is None:
        raise ConfigError(f"no σ up to {SIGMA_GRID[-1]} brings the model's agreement with its own predictions down "
                          f"to chance ({bound:.3f} for {num_classes} classes and {n} images) with finite logits; "
                          "pass --sigma-disruptive")
    if disruptive <= minor:
        raise ConfigError(f"σ_disruptive {disruptive} is not above σ_minor {minor}; pass --sigma-minor and "
                          "--sigma-disruptive")
    return Calibration(float(minor), float(disruptive), sigma_minor is not None, sigma_disruptive is not None,
                       bound, rows)


@dataclass
class MetaOutput:
    """What a meta-evaluation computed.

    Attributes:
        unperturbed: The plain evaluation's output (its scores are the unperturbed q).
        calibration: The tests' σ.
        units: ``{unit: [metrics]}``.
        draws: ``{test: {unit: [UnitRun per draw]}}``.
        seconds: Wall time per phase (``unperturbed``, ``calibration``, ``minor``, ``disruptive``).
    """

    unperturbed: UnitRun
    targets: np.ndarray
    calibration: Calibration
    units: dict[str, list[str]]
    draws: dict[str, dict[str, list[UnitRun]]]
    seconds: dict[str, float]


def draw_key(test: str, unit: str, draw: int) -> str:
    """The checkpoint key of one (test, unit, draw)."""
    return f"{test}/{unit}/{draw}"


def _unit_run(out: EvalOutput, sigma: float, seconds: float) -> UnitRun:
    acc = out.accuracy["value"]
    return UnitRun(out.predictions.astype(np.int64), out.scores, None if acc is None else float(acc), float(sigma),
                   round(seconds, 4))


def _unit_config(cfg: EvalConfig, metrics: Sequence[str]) -> EvalConfig:
    return cfg.replace(metrics=tuple(metrics),
                       metric_params={k: v for k, v in cfg.metric_params.items() if k in metrics})


def run_meta(model: nn.Module, images: Tensor, labels: Tensor, sample_ids: Tensor, cfg: EvalConfig,
             meta: MetaConfig, *, device: torch.device, num_classes: int, baseline_pool: Tensor | None = None,
             labels_match: bool = True, masks: Tensor | None = None, progress: bool = True,
             done: Mapping[str, Any] | None = None, on_unit: Callable[[str, Any], None] | None = None) -> MetaOutput:
    """The unperturbed evaluation, the calibration and every draw of both tests (computes, no I/O).

    Args:
        model: Eval-mode classifier, [0, 1] pixels → logits.
        images: (N, C, H, W) evaluated images (CPU).
        labels: (N,) true labels.
        sample_ids: (N,) dataset indices.
        cfg: The evaluation config (methods, metrics, target, seed, batch size).
        meta: The meta config.
        device: Where the model runs (perturbed copies are made there).
        num_classes: The model's classes (the calibration's chance level).
        baseline_pool: Training images for ``expected_gradients``.
        labels_match: Whether ``labels`` index the model's logits.
        masks: (N, H, W) ground truth of the images, for the localisation metrics (None when the dataset has none).
        progress: A progress bar over the evaluations.
        done: Finished pieces of an interrupted run: ``"unperturbed"`` → :class:`UnitRun`, ``"calibration"`` →
            :class:`Calibration`, :func:`draw_key` → :class:`UnitRun`.
        on_unit: Called with (key, piece) as each piece is finished (the caller checkpoints it).
    """
    done = dict(done or {})
    units = draw_units(cfg.metrics)
    model = model.eval().to(device)
    seconds: dict[str, float] = {}
    n_pieces = 1 + 2 * meta.draws * len(units)
    bar = tqdm(total=n_pieces, desc="meta-evaluate", unit="eval", disable=not progress, dynamic_ncols=True,
               smoothing=0)

    def finish(key: str, piece: Any) -> None:
        if on_unit is not None:
            on_unit(key, piece)

    t0 = time.perf_counter()
    if "unperturbed" in done:
        unperturbed = done["unperturbed"]
        targets = np.asarray(done["targets"], dtype=np.int64)
    else:
        bar.set_postfix_str("unperturbed")
        out = run_evaluation(model, images, labels, sample_ids, cfg, device=device, baseline_pool=baseline_pool,
                             labels_match=labels_match, progress=False, n_example_maps=0, masks=masks)
        unperturbed = _unit_run(out, 0.0, time.perf_counter() - t0)
        targets = out.targets.astype(np.int64)
        finish("unperturbed", (unperturbed, targets))
    bar.update(1)
    seconds["unperturbed"] = unperturbed.seconds
    t0 = time.perf_counter()
    if "calibration" in done:
        cal = done["calibration"]
    else:
        bar.set_postfix_str("calibration")
        cal = calibrate(model, images, torch.from_numpy(unperturbed.predictions), num_classes, cfg.seed,
                        device=device, batch_size=max(int(cfg.batch_size), 256), sigma_minor=meta.sigma_minor,
                        sigma_disruptive=meta.sigma_disruptive)
        finish("calibration", cal)
    seconds["calibration"] = round(time.perf_counter() - t0, 4)
    target_t = torch.from_numpy(targets)
    draws: dict[str, dict[str, list[UnitRun]]] = {t: {u: [] for u in units} for t in TESTS}
    for test in TESTS:
        sigma = cal.sigma_minor if test == "minor" else cal.sigma_disruptive
        spent = 0.0
        for unit, members in units.items():
            ucfg = _unit_config(cfg, members)
            for d in range(meta.draws):
                key = draw_key(test, unit, d)
                if key in done:
                    draws[test][unit].append(done[key])
                    bar.update(1)
                    continue
                bar.set_postfix_str(f"{test} σ={sigma:g} · {unit} · draw {d + 1}/{meta.draws}")
                t0 = time.perf_counter()
                net = perturbed_copy(model, sigma, sample_generator(cfg.seed, f"meta/{test}/{unit}", d))
                try:
                    out = run_evaluation(net, images, labels, sample_ids, ucfg, device=device,
                                         baseline_pool=baseline_pool, labels_match=labels_match, progress=False,
                                         n_example_maps=0, masks=masks, targets=target_t)
                except ModelLoadError:
                    raise ConfigError(f"draw {d} of the {test} test (σ = {sigma:g}, unit {unit}) makes the model "
                                      f"return NaN/inf logits; pass a smaller --sigma-{test}") from None
                finally:
                    del net
                piece = _unit_run(out, sigma, time.perf_counter() - t0)
                spent += piece.seconds
                draws[test][unit].append(piece)
                finish(key, piece)
                bar.update(1)
        seconds[test] = round(spent, 4)
    bar.close()
    return MetaOutput(unperturbed, targets, cal, units, draws, seconds)


def summarise(output: MetaOutput, meta: MetaConfig) -> dict[str, dict[str, Any]]:
    """IAC, IEC and MC of every selected metric (:func:`sclzoo.evaluator.consistency.consistency`)."""
    out: dict[str, dict[str, Any]] = {}
    methods = list(output.unperturbed.scores)
    for unit, members in output.units.items():
        for metric in members:
            spec = METRICS.get(metric)
            runs = {test: [DrawScores(r.predictions, {m: r.scores[m][metric] for m in methods})
                           for r in output.draws[test][unit]] for test in TESTS}
            res = consistency({m: output.unperturbed.scores[m][metric] for m in methods},
                              output.unperturbed.predictions, runs, spec.higher_is_better, meta.iterations)
            out[metric] = {"family": spec.family, "higher_is_better": spec.higher_is_better, "version": spec.version,
                           "draw_unit": unit, **res}
    return out


def meta_cost(cfg: EvalConfig, meta: MetaConfig, *, n_methods_passes: Mapping[str, int] | None = None
              ) -> dict[str, Any]:
    """Model forwards and explanations of a meta-evaluation, beside the plain evaluation's (:func:`estimate_cost`).

    Returns:
        ``{"plain": {...}, "meta": {"forwards", "explanations"}, "ratio": {...}, "units": [...]}``: the meta
        figures count the unperturbed evaluation, the calibration's forwards (at most the whole grid) and every
        draw of both tests (each unit's explanations and metric work anew under every draw).
    """
    _, metrics = resolve_specs(cfg)
    plain = estimate_cost(cfg)
    n, n_methods = cfg.n_samples, len(cfg.methods)
    units = draw_units(cfg.metrics)
    rows = []
    fw_draws = ex_draws = 0
    for unit, members in units.items():
        f = e = 0
        for m in members:
            p = {k: v for k, v in metrics[m].items() if k != "version"}
            fm, em = metric_cost(m, **p)
            f, e = f + fm, e + em
        if unit not in members:  # it shares the draws of a metric that is not selected: it pays for them
            p0 = {k: v for k, v in metrics[members[0]].items() if k != "version"}
            try:
                fu, eu = metric_cost(unit, **p0)
            except ConfigError:
                fu, eu = metric_cost(unit)
            f, e = f + fu, e + eu
        per_draw_f = f * n_methods * n + n  # the metrics' forwards, and the predictions of the perturbed model
        per_draw_e = (e + 1) * n_methods * n  # the metrics' explanations and the one of each image
        rows.append({"unit": unit, "metrics": members, "forwards_per_draw": per_draw_f,
                     "explanations_per_draw": per_draw_e})
        fw_draws += per_draw_f
        ex_draws += per_draw_e
    calibration_f = len(SIGMA_GRID) * CALIBRATION_DRAWS * n if meta.sigma_minor is None or \
        meta.sigma_disruptive is None else 0
    draws = 2 * meta.draws
    forwards = plain["forwards"] + calibration_f + draws * fw_draws
    explanations = plain["explanations"] + draws * ex_draws
    return {
        "plain": {"forwards": plain["forwards"], "explanations": plain["explanations"]},
        "meta": {"forwards": forwards, "explanations": explanations, "calibration_forwards_at_most": calibration_f,
                 "draws_per_test_and_unit": meta.draws, "units": rows},
        "ratio": {"forwards": round(forwards / max(1, plain["forwards"]), 2),
                  "explanations": round(explanations / max(1, plain["explanations"]), 2)},
    }


# --------------------------------------------------------------------------------------------------------------
# The job: plan, checkpoint, compute, write
# --------------------------------------------------------------------------------------------------------------


@dataclass
class MetaResult:
    """A finished meta-evaluation: its document, where it was written, and (when just computed) the output."""

    data: dict[str, Any]
    path: Path | None
    output: MetaOutput | None = None
    reused: bool = False

    def table(self) -> list[dict[str, Any]]:
        """One row per metric: family, direction, MC and its four parts."""
        rows = []
        for metric, m in self.data["metrics"].items():
            rows.append({"metric": metric, "family": m["family"], "higher_is_better": m["higher_is_better"],
                         "mc": m["mc"], "iac_nr": m["iac_nr"], "iac_ar": m["iac_ar"], "iec_nr": m["iec_nr"],
                         "iec_ar": m["iec_ar"]})
        return rows


def _meta_config(iterations: int | None, perturbations: int | None, sigma_minor: float | None,
                 sigma_disruptive: float | None) -> MetaConfig:
    return MetaConfig(iterations=ITERATIONS if iterations is None else iterations,
                      perturbations=PERTURBATIONS if perturbations is None else perturbations,
                      sigma_minor=sigma_minor, sigma_disruptive=sigma_disruptive)


@dataclass(frozen=True)
class MetaPlan:
    """A meta-evaluation resolved before computing: the evaluation plan, the meta config and its hash, the path."""

    eval_plan: Any  # api.EvalPlan
    cfg: EvalConfig
    meta: MetaConfig
    meta_canonical: dict[str, Any]
    meta_hash: str
    path: Path | None


def meta_plan(model: Any, cfg: EvalConfig, meta: MetaConfig, *, out: str | Path | None, device: torch.device,
              revision: str | None = None) -> MetaPlan:
    """Resolves the model, images and config (:func:`sclzoo.evaluator.api.plan`) and names the meta result."""
    from sclzoo.evaluator.api import plan
    from sclzoo.evaluator.meta_results import meta_path

    resolve_specs(cfg)  # unknown names fail before anything is loaded
    if len(cfg.methods) < 2:
        raise ConfigError(f"a meta-evaluation ranks explanation methods against each other (IEC), so it needs at least "
                          f"two; got {list(cfg.methods)}: pass --methods with two or more")
    ep = plan(model, cfg, device=device, revision=revision)
    canonical = meta.canonical()
    h = meta_hash(ep.config_hash, canonical)
    path = meta_path(out, ep.resolved.repo_id, ep.resolved.commit_sha, h) if out is not None else None
    return MetaPlan(ep, cfg, meta, canonical, h, path)


def meta_evaluate(
    model: Any,
    *,
    out: str | Path | None = "results",
    config: EvalConfig | None = None,
    preset: str | None = None,
    config_file: str | Path | None = None,
    iterations: int | None = None,
    perturbations: int | None = None,
    sigma_minor: float | None = None,
    sigma_disruptive: float | None = None,
    revision: str | None = None,
    force: bool = False,
    resume: bool = False,
    progress: bool = True,
    command: str | None = None,
    provenance_source: str = "local",
    **kwargs: Any,
) -> MetaResult:
    """Meta-evaluates every selected metric on one model: MC, IAC and IEC of the minor and disruptive tests.

    Args:
        model: A model reference as for :func:`sclzoo.evaluate` (folder, zoo alias, ``hf-hub:org/name``, …).
        out: Results root; the meta result goes beside the model's results. None computes without writing.
        config: A ready evaluation config (else built from preset / config_file / kwargs, like ``evaluate``).
        preset: ``quick``, ``standard`` (default) or ``paper``.
        config_file: A TOML evaluation config.
        iterations: Iterations per test (default :data:`ITERATIONS`).
        perturbations: Draws per iteration (default :data:`PERTURBATIONS`).
        sigma_minor: σ of the minor test (default: calibrated).
        sigma_disruptive: σ of the disruptive test (default: calibrated).
        revision: Hub branch, tag or commit.
        force: Recompute even when a meta result of this model commit and meta config exists; discard a checkpoint.
        resume: Continue an interrupted run from its checkpoint (``<meta_hash>.meta.partial/``).
        progress: Show a progress bar.
        command: The command line recorded.
        provenance_source: ``local`` or ``ci``.
        **kwargs: :class:`EvalConfig` fields (n_samples, methods, metrics, seed, device, …).

    Returns:
        The :class:`MetaResult` (``reused=True`` when an existing file was returned).

    Raises:
        ResultError: a checkpoint exists but neither ``resume`` nor ``force`` is given, or it is corrupt.
        ConfigError: bad settings, or no σ could be calibrated.
    """
    from sclzoo.evaluator.api import baseline_pool_for
    from sclzoo.evaluator.meta_results import build_meta_document, meta_checkpointing, read_meta, write_meta
    from sclzoo.evaluator.results import check_resume_force, check_writable, checkpoint_dir, remove_checkpoint
    from sclzoo.zoo.train import resolve_device

    check_resume_force(resume, force)
    cfg = build_config(config, preset if preset or config_file or config else "standard", config_file, **kwargs)
    meta = _meta_config(iterations, perturbations, sigma_minor, sigma_disruptive)
    dev = resolve_device(cfg.device)
    mp = meta_plan(model, cfg, meta, out=out, device=dev, revision=revision)
    ep = mp.eval_plan
    if mp.path is not None and mp.path.is_file() and not force:
        return MetaResult(read_meta(mp.path), mp.path, reused=True)
    if mp.path is not None:
        check_writable(mp.path)
    if cfg.batch_size == "auto":
        from sclzoo.evaluator.runner import auto_batch_size

        cfg = cfg.replace(batch_size=auto_batch_size(ep.loaded.model, ep.images, ep.methods, dev))
    ckpt_meta = {"meta_hash": mp.meta_hash, "config_hash": ep.config_hash, "model_commit": ep.resolved.commit_sha,
                 "n_samples": cfg.n_samples, "indices_sha256": ep.indices_sha, "methods": list(ep.methods),
                 "metrics": list(ep.metrics), "draws": meta.draws}
    done, on_unit = meta_checkpointing(mp.path, ckpt_meta, ep.ids.numpy(), resume=resume, force=force)
    started = datetime.now(timezone.utc)
    t0 = time.time()
    pool = baseline_pool_for(ep.data, ep.loaded, list(ep.methods), cfg.seed)
    with deterministic_algorithms():
        output = run_meta(ep.loaded.model, ep.images, ep.labels, ep.ids, cfg, meta, device=dev,
                          num_classes=ep.loaded.num_classes, baseline_pool=pool, labels_match=ep.data.labels_match,
                          masks=ep.masks, progress=progress, done=done, on_unit=on_unit)
    summary = summarise(output, meta)
    doc, draws_doc = build_meta_document(
        plan=mp, output=output, summary=summary, started=started, duration_s=time.time() - t0, device=dev,
        command=command or " ".join(["sclzoo", *sys.argv[1:]]), provenance_source=provenance_source)
    if mp.path is not None:
        write_meta(mp.path, doc, draws_doc)
        remove_checkpoint(checkpoint_dir(mp.path))
    return MetaResult(doc, mp.path, output)


def meta_dry_run(model: Any, cfg: EvalConfig, meta: MetaConfig, *, out: str | Path | None = "results",
                 revision: str | None = None) -> dict[str, Any]:
    """What :func:`meta_evaluate` would do: the plain evaluation's dry run (its cost and a timed estimate) with
    the meta-evaluation's cost, multiplied, beside it; computes nothing else."""
    from sclzoo.evaluator.api import dry_run
    from sclzoo.zoo.train import resolve_device

    plain = dry_run(model, cfg, out=None, revision=revision)
    mp = meta_plan(model, cfg, meta, out=out, device=resolve_device(cfg.device), revision=revision)
    cost = meta_cost(cfg, meta)
    est = plain["estimate"]["seconds"]
    exp_ratio = cost["ratio"]["explanations"]
    fwd_ratio = cost["ratio"]["forwards"]
    ratio = max(exp_ratio, fwd_ratio) if est else 0.0
    path = mp.path
    return {
        "model": plain["model"],
        "dataset": plain["dataset"],
        "device": plain["device"],
        "config_hash": plain["config_hash"],
        "meta_hash": mp.meta_hash,
        "meta_config": mp.meta_canonical,
        "result": {"path": str(path) if path else None, "exists": bool(path and path.is_file()),
                   "reused_unless_force": bool(path and path.is_file())},
        "cost": cost,
        "estimate": {"plain_seconds": est, "seconds": round(est * ratio, 1),
                     "how": "the plain evaluation's rough estimate times the larger of the forward and explanation "
                            "ratios (the calibration's forwards are cheap; bench/bench_meta.py measures the real "
                            "ratio)"},
    }

