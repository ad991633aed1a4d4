"""Per-sample draws are a pure function of (seed, name, sample id, draw index): exact, whatever the batch, the
shard, the block size or the backend that computes them (docs/protocol.md#seeding)."""

from __future__ import annotations

import hashlib
import math

import pytest
import torch
from torch import nn

from sclzoo.evaluator import seeding
from sclzoo.evaluator.attributions import attribute
from sclzoo.evaluator.metrics import METRICS, MetricContext, compute
from sclzoo.evaluator.seeding import draw_words, normal, randint, random_subsets, uniform

M64 = (1 << 64) - 1


def reference_word(seed: int, name: str, sample_id: int, t: int) -> int:
    """word(i, t) of the module docstring, in Python's unbounded integers (masked to 64 bits)."""

    def mix(z: int) -> int:
        z &= M64
        z ^= z >> 30
        z = (z * 0xBF58476D1CE4E5B9) & M64
        z ^= z >> 27
        z = (z * 0x94D049BB133111EB) & M64
        return z ^ (z >> 31)

    k = int.from_bytes(hashlib.sha256(f"{seed}\x1f{name}".encode()).digest()[:8], "little")
    state = mix(k + (sample_id + 1) * 0x9E3779B97F4A7C15)
    return mix(state + (t + 1) * 0x9E3779B97F4A7C15)


IDS = torch.tensor([0, 5, 17, 2**40 + 3, 2**62])


@pytest.mark.parametrize("use_numpy", [True, False])
def test_words_follow_the_documented_definition_on_both_backends(use_numpy: bool) -> None:
    got = torch.empty(len(IDS), 9, dtype=torch.long)
    for rows, cols, w in seeding._word_blocks(7, "infidelity", IDS, 9, "cpu", use_numpy=use_numpy):
        got[rows, cols] = w
    for a, i in enumerate(IDS.tolist()):
        assert [v & M64 for v in got[a].tolist()] == [reference_word(7, "infidelity", i, t) for t in range(9)]


def test_draws_are_a_function_of_the_key_only(monkeypatch: pytest.MonkeyPatch) -> None:
    shape = (3, 5, 7)
    together = normal(1, "m", IDS, shape)
    for order in ([4, 2, 0, 1, 3], [3], [1, 1, 2]):  # any batch composition, order or repetition
        torch.testing.assert_close(normal(1, "m", IDS[order], shape), together[order], rtol=0, atol=0)
    # draw j is the same whatever else is drawn with it: a longer draw starts with the shorter one
    assert torch.equal(uniform(1, "m", IDS, (40,))[:, :15], uniform(1, "m", IDS, (15,)))
    assert torch.equal(randint(1, "m", IDS, (40,), 9)[:, :15], randint(1, "m", IDS, (15,), 9))
    # and the same whatever block size computes it (blocks of 7 words: every block boundary inside a sample)
    monkeypatch.setattr(seeding, "_BLOCK_WORDS_CPU", 7)
    assert torch.equal(normal(1, "m", IDS, shape), together)
    subsets = random_subsets(1, "s", IDS, 4, 3, 11)
    monkeypatch.setattr(seeding, "_BLOCK_WORDS_CPU", 1 << 16)
    assert torch.equal(random_subsets(1, "s", IDS, 4, 3, 11), subsets)
    # every key component matters
    for other in (normal(2, "m", IDS, shape), normal(1, "m2", IDS, shape), normal(1, "m", IDS + 1, shape)):
        assert not torch.isclose(other, together).any()


def test_tensor_backend_gives_the_numpy_backends_floats(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA path computes its words with int64 tensor operations; on the CPU they must match numpy's."""
    expected = {f: getattr(seeding, f)(3, "x", IDS, (6, 5)) for f in ("uniform", "normal")}
    real = seeding._word_blocks

    def tensor_backend(*args, **kwargs):  # type: ignore[no-untyped-def]
        return real(*args, **{**kwargs, "use_numpy": False})

    monkeypatch.setattr(seeding, "_word_blocks", tensor_backend)
    for f, want in expected.items():
        assert torch.equal(getattr(seeding, f)(3, "x", IDS, (6, 5)), want), f


def test_distributions() -> None:
    ids = torch.arange(10)
    u = uniform(0, "u", ids, (10_000,))  # 1e5 draws
    assert u.dtype == torch.float32 and 0 <= float(u.min()) and float(u.max()) < 1
    assert abs(float(u.mean()) - 0.5) < 0.005 and abs(float(u.std()) - math.sqrt(1 / 12)) < 0.003
    u64 = uniform(0, "u", ids, (10_000,), dtype=torch.float64)
    assert u64.dtype == torch.float64 and abs(float(u64.mean()) - 0.5) < 0.005
    z = normal(0, "z", ids, (10_001,)).double()  # odd: the last word's second value is dropped
    assert z.shape == (10, 10_001) and torch.isfinite(z).all()
    assert abs(float(z.mean())) < 0.01 and abs(float(z.std()) - 1) < 0.01
    assert abs(float((z**4).mean()) - 3) < 0.1  # kurtosis of a normal
    assert abs(float((z.abs() < 1).double().mean()) - 0.6827) < 0.005
    # the two values of a word are independent: no correlation between even and odd draws
    assert abs(float(torch.corrcoef(torch.stack([z[:, 0:-1:2].flatten(), z[:, 1::2].flatten()]))[0, 1])) < 0.015
    k = randint(0, "k", ids, (10_000,), 7)
    counts = torch.bincount(k.flatten(), minlength=7).double()
    assert counts.shape == (7,) and ((counts - 1e5 / 7).abs() < 5 * math.sqrt(1e5 / 7)).all()
    s = random_subsets(0, "s", ids, 1000, 5, 20)  # 5-subsets of 20 positions
    assert s.shape == (10, 1000, 5) and int(s.min()) >= 0 and int(s.max()) < 20
    assert (s.sort(dim=2).values.diff(dim=2) > 0).all()  # no position twice in a subset
    inclusion = torch.bincount(s.flatten(), minlength=20).double() / (10 * 1000)
    assert ((inclusion - 0.25).abs() < 0.02).all()


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="high"):
        randint(0, "k", IDS, (2,), 0)
    with pytest.raises(ValueError, match="size"):
        random_subsets(0, "s", IDS, 2, 21, 20)
    with pytest.raises(ValueError, match="1-d"):
        uniform(0, "u", IDS[None], (2,))
    with pytest.raises(ValueError, match="float32 or float64"):
        uniform(0, "u", IDS, (2,), dtype=torch.float16)


def test_draw_words_keeps_the_global_rng_alone() -> None:
    state = torch.get_rng_state()
    draw_words(0, "w", IDS, (4,))
    normal(0, "w", IDS, (4,))
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_draws_are_the_cpu_words_and_reproducible() -> None:
    """Integer words are bit-identical on the GPU; floats agree to float32 rounding of log/cos."""
    ids = torch.arange(64) * 7 + 3
    cuda_ids = ids.cuda()
    assert torch.equal(draw_words(5, "w", cuda_ids, (2, 1000)).cpu(), draw_words(5, "w", ids, (2, 1000)))
    assert torch.equal(randint(5, "w", cuda_ids, (999,), 13).cpu(), randint(5, "w", ids, (999,), 13))
    assert torch.equal(random_subsets(5, "w", cuda_ids, 3, 7, 784).cpu(), random_subsets(5, "w", ids, 3, 7, 784))
    for f in (uniform, normal):
        on_gpu = f(5, "w", cuda_ids, (16, 3, 32, 32))
        assert on_gpu.device.type == "cuda"
        assert torch.equal(on_gpu, f(5, "w", cuda_ids, (16, 3, 32, 32)))  # reproducible on the device
        torch.testing.assert_close(on_gpu.cpu(), f(5, "w", ids, (16, 3, 32, 32)), rtol=0, atol=1e-5)


# --------------------------------------------------------------------------------------------------------------
# Scores: independent of the batch size and of the sharding, exactly (float64)
# --------------------------------------------------------------------------------------------------------------


SMALL_PARAMS = {"faithfulness_correlation": {"n_draws": 8}, "region_perturbation_aopc": {"n_regions": 4},
                "continuity": {"max_shift": 2}, "single_deletion": {"grid": 2}}


def _float64_setup() -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5)).double().eval()
    x = torch.rand(5, 3, 8, 8, dtype=torch.float64)
    return model, x, torch.tensor([0, 1, 2, 3, 4]), torch.arange(40, 45)


@pytest.mark.parametrize("name", [n for n in METRICS.names() if n != "mprt_last"])
def test_float64_scores_are_exactly_batch_and_shard_independent(name: str) -> None:
    """In float64 the kernels' rounding is negligible, so any batch or shard dependence of the draws would show."""
    model, x, target, ids = _float64_setup()
    mask = torch.zeros(5, 8, 8, dtype=torch.bool)
    mask[:, 2:6, 1:5] = True

    def explain(xx: torch.Tensor, t: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        return attribute("smoothgrad", model, xx, t, sample_ids=i, seed=1, nt_samples=3)

    small = dict(SMALL_PARAMS.get(name, {}))
    small |= {k: 4 for k in ("n_perturbations", "steps") if k in METRICS.get(name).defaults}

    def scores(parts: list[list[int]], batch_size: int) -> torch.Tensor:
        out = torch.full((5,), math.nan, dtype=torch.float64)
        for part in parts:
            ctx = MetricContext(model=model, x=x[part], target=target[part],
                                attributions=explain(x[part], target[part], ids[part]), explain=explain,
                                sample_ids=ids[part], seed=1, batch_size=batch_size, mask=mask[part])
            out[part] = compute(name, ctx, **small)
        return out

    full = scores([[0, 1, 2, 3, 4]], 64)
    torch.testing.assert_close(scores([[i] for i in range(5)], 64), full, rtol=0, atol=1e-12, equal_nan=True)
    torch.testing.assert_close(scores([[0, 1, 2], [3, 4]], 2), full, rtol=0, atol=1e-12, equal_nan=True)
    # two shards of a torchrun job (every other sample), in reverse order
    torch.testing.assert_close(scores([[4, 2, 0], [3, 1]], 3), full, rtol=0, atol=1e-12, equal_nan=True)


@pytest.mark.integration  # every method x every metric: ~16 s on a 2-core CPU
def test_scores_do_not_depend_on_filling_unwritten_memory() -> None:
    """The evaluation runs without deterministic mode's NaN fill of new tensors (evaluator/seeding.py); every
    method and every metric must give the same scores bit for bit with the fill on, i.e. read no unwritten memory."""
    import numpy as np
    import torch.utils.deterministic as deterministic
    from helpers import conv_net, images

    from sclzoo.evaluator.attributions import METHODS
    from sclzoo.evaluator.config import EvalConfig
    from sclzoo.evaluator.runner import run_evaluation

    metrics = tuple(k for k in METRICS.names() if not METRICS.get(k).needs_mask)
    cfg = EvalConfig(n_samples=4, methods=tuple(METHODS.names()), metrics=metrics, batch_size=2, seed=2)
    x, y, ids = images(4, seed=3), torch.tensor([0, 1, 2, 0]), torch.arange(4)
    before = deterministic.fill_uninitialized_memory

    def run(fill: bool) -> dict[str, dict[str, np.ndarray]]:
        with seeding.deterministic_algorithms():
            assert deterministic.fill_uninitialized_memory is False and torch.are_deterministic_algorithms_enabled()
            deterministic.fill_uninitialized_memory = fill
            out = run_evaluation(conv_net(), x, y, ids, cfg, device=torch.device("cpu"), progress=False,
                                 baseline_pool=images(8, seed=4))
        assert deterministic.fill_uninitialized_memory == before  # the caller's settings come back
        return out.scores

    filled, unfilled = run(True), run(False)
    assert set(filled) == set(METHODS.names()) and all(set(v) == set(metrics) for v in filled.values())
    for method, per in filled.items():
        for metric, scores in per.items():
            assert np.isfinite(scores).any(), (method, metric)
            assert np.array_equal(scores, unfilled[method][metric], equal_nan=True), (method, metric)
