"""Agreement of sclzoo's meta-evaluation with MetaQuantus 0.0.5 (docs/protocol.md#meta-evaluation).

The small case: the bundled CE model (zoo/models/resnet8_cifar.ce_mnist5k), its first 16 MNIST-5k test images (one
batch, so every score is computed in the same order both ways), saliency and input × gradient (maps that are never
all zero, so no score is NaN: sclzoo counts NaN where MetaQuantus lets it spread), sparseness (higher is better) and
deletion AUC (lower is better), 2 iterations × 2 draws per test, calibrated σ. Two checks, each to :data:`TOLERANCE`
(both sides compute the same float64 numbers with the same scipy):

- **same score arrays**: sclzoo's stored per-draw scores, predictions and kept samples are handed to MetaQuantus's
  own analysis (``run_intra_analysis``, ``run_inter_analysis``, ``run_meta_consistency_analysis``), which must
  give sclzoo's IAC, IEC, MC and MC std;
- **same perturbed models**: MetaQuantus's whole ``MetaEvaluation`` runs, with its ``ModelPerturbationTest``
  drawing sclzoo's seeded weight-noise copies (Quantus's ``PyTorchModel.sample`` patched to return them, in
  MetaQuantus's order) and sclzoo's attribution methods and metrics behind its explain function and estimator;
  it must reproduce sclzoo's predictions, kept samples and every IAC, IEC and MC.

MetaQuantus takes the metric direction as ``score_direction`` and tests it for truth (evaluator/consistency.py):
it gets ``False`` for a higher-is-better metric and ``True`` for a lower-is-better one.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from sclzoo.evaluator.attributions import attribute
from sclzoo.evaluator.meta import meta_evaluate, perturbed_copy
from sclzoo.evaluator.meta_results import read_draws
from sclzoo.evaluator.metrics import METRICS, MetricContext, compute
from sclzoo.evaluator.seeding import deterministic_algorithms, sample_generator

metaquantus = pytest.importorskip("metaquantus")
quantus = pytest.importorskip("quantus")
from quantus.helpers.model.pytorch_model import PyTorchModel  # noqa: E402

pytestmark = [pytest.mark.reference, pytest.mark.usefixtures("one_thread")]

TOLERANCE = 1e-12
METHODS = ("saliency", "input_x_gradient")
METRIC_NAMES = ("sparseness", "deletion_auc")
ITERATIONS, PERTURBATIONS = 2, 2
TESTS = {"minor": "Model Resilience Test", "disruptive": "Model Adversary Test"}
PARTS = {"iac_nr": "IAC_{NR} mean", "iac_ar": "IAC_{AR} mean", "iec_nr": "IEC_{NR} mean", "iec_ar": "IEC_{AR} mean"}


@pytest.fixture(scope="module")
def computed(tmp_path_factory: pytest.TempPathFactory, bundled: dict[str, Path]) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("meta")
    res = meta_evaluate(str(bundled["ce"]), out=out, n_samples=16, methods=list(METHODS),
                        metrics=list(METRIC_NAMES), iterations=ITERATIONS, perturbations=PERTURBATIONS,
                        progress=False, device="cpu")
    assert res.path is not None
    return {"result": res, "draws": read_draws(res.path), "model": str(bundled["ce"])}


def _meta_evaluation(sigma_minor: float, sigma_disruptive: float) -> Any:
    suite = {TESTS["minor"]: metaquantus.ModelPerturbationTest(type="Resilience", noise_type="multiplicative",
                                                               mean=1.0, std=sigma_minor),
             TESTS["disruptive"]: metaquantus.ModelPerturbationTest(type="Adversary", noise_type="multiplicative",
                                                                    mean=1.0, std=sigma_disruptive)}
    return metaquantus.MetaEvaluation(test_suite=suite, xai_methods={m: {} for m in METHODS},
                                      iterations=ITERATIONS, nr_perturbations=PERTURBATIONS, write_to_file=False)


def _assert_same(ours: dict[str, Any], mq: Any, metric: str) -> None:
    got = mq.results_meta_consistency_scores["Model"]
    for part, key in PARTS.items():
        assert abs(ours[part] - got["consistency_results"][key]) <= TOLERANCE, (metric, part)
    assert abs(ours["mc"] - got["MC_mean"]) <= TOLERANCE, metric
    assert abs(ours["mc_std"] - got["MC_std"]) <= TOLERANCE, metric
    for test, name in TESTS.items():  # every draw's IAC, method by method
        for method in METHODS:
            theirs = np.asarray(mq.results_intra_scores[name][method]).reshape(-1)
            mine = [d["iac"][method] for d in ours["draws"][test]]
            np.testing.assert_allclose(mine, theirs, rtol=0, atol=TOLERANCE)
        np.testing.assert_allclose([d["iec"] for d in ours["draws"][test]],
                                   np.asarray(mq.results_inter_scores[name]).reshape(-1), rtol=0, atol=TOLERANCE)


def test_same_score_arrays(computed: dict[str, Any]) -> None:
    doc, draws = computed["result"].data, computed["draws"]
    pred0 = np.asarray(draws["unperturbed"]["predictions"])
    for metric in METRIC_NAMES:
        ours = doc["metrics"][metric]
        unit = ours["draw_unit"]
        mq = _meta_evaluation(doc["tests"]["minor"]["sigma"], doc["tests"]["disruptive"]["sigma"])
        mq.results_y_preds = pred0
        for test, name in TESTS.items():
            runs = draws["draws"][test][unit]
            mq.results_eval_scores[name] = {m: np.asarray(draws["unperturbed"]["scores"][m][metric], dtype=float)
                                            for m in METHODS}
            mq.results_eval_scores_perturbed[name] = {}
            mq.results_indices_perturbed[name] = {}
            for i in range(ITERATIONS):
                chunk = runs[i * PERTURBATIONS:(i + 1) * PERTURBATIONS]
                mq.results_eval_scores_perturbed[name][i] = {
                    m: np.array([r["scores"][m][metric] for r in chunk], dtype=float) for m in METHODS}
                preds = np.array([r["predictions"] for r in chunk])
                mq.results_indices_perturbed[name][i] = preds == pred0 if test == "minor" else preds != pred0
        mq.run_intra_analysis()
        mq.run_inter_analysis(score_direction=not METRICS.get(metric).higher_is_better)
        mq.run_meta_consistency_analysis()
        _assert_same(ours, mq, metric)


class _Estimator:
    """A Quantus-style estimator that scores with sclzoo's metric (maps handed over as they are)."""

    abs = False
    normalise = False
    normalise_func = None
    normalise_func_kwargs = None

    def __init__(self, metric: str, ids: torch.Tensor) -> None:
        self.metric, self.ids = metric, ids

    def __call__(self, model: nn.Module, x_batch: np.ndarray, y_batch: np.ndarray, a_batch: np.ndarray,
                 **_: Any) -> list[float]:
        ctx = MetricContext(model=model.eval(), x=torch.as_tensor(x_batch), target=torch.as_tensor(y_batch).long(),
                            attributions=torch.as_tensor(a_batch), sample_ids=self.ids, seed=0, batch_size=64)
        return compute(self.metric, ctx).tolist()


def test_same_perturbed_models(computed: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from sclzoo.evaluator.api import plan
    from sclzoo.evaluator.config import build_config

    # MetaQuantus runs gc.collect() around every explanation (seconds each in a process holding torch); it frees
    # memory and changes no number, so it is skipped here to keep the test in the reference tier's time limit.
    monkeypatch.setattr(gc, "collect", lambda *_: 0)
    res = computed["result"]
    doc = res.data
    cfg = build_config(None, "standard", n_samples=16, methods=list(METHODS), metrics=list(METRIC_NAMES))
    ep = plan(computed["model"], cfg)
    assert ep.config_hash == doc["evaluation"]["config_hash"]
    sigma = {test: doc["tests"][test]["sigma"] for test in TESTS}
    x = ep.images.numpy()

    def explain(model: nn.Module, inputs: np.ndarray, targets: np.ndarray, method: str, **_: Any) -> np.ndarray:
        params = {k: v for k, v in ep.methods[method].items() if k != "version"}  # recorded, not passed
        a = attribute(method, model, torch.as_tensor(inputs), torch.as_tensor(targets).long(), sample_ids=ep.ids,
                      seed=0, **params)
        return a.detach().numpy()

    for metric in METRIC_NAMES:
        unit = doc["metrics"][metric]["draw_unit"]
        counters = {"minor": 0, "disruptive": 0}

        def sample(self: Any, mean: float, std: float, noise_type: str = "multiplicative",
                   _unit: str = unit, _counters: dict[str, int] = counters) -> nn.Module:
            assert (mean, noise_type) == (1.0, "multiplicative")
            test = "minor" if std == sigma["minor"] else "disruptive"
            d = _counters[test]
            _counters[test] += 1
            return perturbed_copy(self.model, std, sample_generator(0, f"meta/{test}/{_unit}", d))

        monkeypatch.setattr(PyTorchModel, "sample", sample)
        mq = _meta_evaluation(sigma["minor"], sigma["disruptive"])
        mq.explain_func = explain
        with deterministic_algorithms():
            mq(estimator=_Estimator(metric, ep.ids), model=ep.loaded.model.eval(), x_batch=x,
               y_batch=ep.labels.numpy(), channel_first=True, softmax=False, device="cpu",
               score_direction=not METRICS.get(metric).higher_is_better)
        assert counters == {"minor": ITERATIONS * PERTURBATIONS, "disruptive": ITERATIONS * PERTURBATIONS}
        np.testing.assert_array_equal(mq.results_y_preds, computed["draws"]["unperturbed"]["predictions"])
        _assert_same(doc["metrics"][metric], mq, metric)
