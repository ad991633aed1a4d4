"""Per-sample draws are a pure function of (seed, name, sample id): exact, whatever the batch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sclzoo.evaluator.attributions import attribute
from sclzoo.evaluator.metrics import METRICS, MetricContext, compute
from sclzoo.evaluator.seeding import per_sample_draws


def test_per_sample_draws_do_not_depend_on_the_other_samples() -> None:
    ids = torch.tensor([5, 17, 3])

    def draw(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.rand(2, 3, generator=g), torch.randint(10, (4,), generator=g)

    together = per_sample_draws(0, "m", ids, draw, "cpu")
    alone = [per_sample_draws(0, "m", ids[i : i + 1], draw, "cpu") for i in range(3)]
    for k in range(2):
        assert torch.equal(together[k], torch.cat([a[k] for a in alone]))
    assert not torch.equal(together[0][0], per_sample_draws(1, "m", ids[:1], draw, "cpu")[0][0])
    assert not torch.equal(together[0][0], per_sample_draws(0, "other", ids[:1], draw, "cpu")[0][0])


@pytest.mark.parametrize("name", [n for n in METRICS.names() if n != "mprt_last"])
def test_float64_scores_are_exactly_batch_independent(name: str) -> None:
    """In float64 the kernels' rounding is negligible, so any batch dependence of the draws would show."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5)).double().eval()
    x = torch.rand(5, 3, 8, 8, dtype=torch.float64)
    target = torch.tensor([0, 1, 2, 3, 4])
    ids = torch.arange(40, 45)

    def explain(xx: torch.Tensor, t: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        return attribute("smoothgrad", model, xx, t, sample_ids=i, seed=1, nt_samples=3)

    small = {"faithfulness_correlation": {"n_draws": 8}, "region_perturbation_aopc": {"n_regions": 4},
             "continuity": {"max_shift": 2}}.get(name, {})
    small |= {k: 4 for k in ("n_perturbations", "steps") if k in METRICS.get(name).defaults}

    def scores(splits: list[int], batch_size: int) -> torch.Tensor:
        out, start = [], 0
        for size in splits:
            sl = slice(start, start + size)
            start += size
            ctx = MetricContext(model=model, x=x[sl], target=target[sl], attributions=explain(x[sl], target[sl], ids[sl]),
                                explain=explain, sample_ids=ids[sl], seed=1, batch_size=batch_size)
            out.append(compute(name, ctx, **small))
        return torch.cat(out)

    full = scores([5], 64)
    torch.testing.assert_close(scores([1] * 5, 64), full, rtol=0, atol=1e-12, equal_nan=True)
    torch.testing.assert_close(scores([3, 2], 2), full, rtol=0, atol=1e-12, equal_nan=True)
