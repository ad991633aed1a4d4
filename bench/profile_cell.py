"""Profile of one (method, metric) cell of the bench matrix: where its time goes, under one OpenMP wait policy.

``bench/bench_matrix.py`` says how far each cell is from its pass floor; this script says why, for one cell, in
one fresh process (OpenMP reads its wait policy once, when torch loads it, so each policy needs its own process):

- **the pass floor under this process's policy**: the fastest bare forward and input-gradient pass, NCHW (the
  layout ``sclzoo evaluate --runtime torch`` runs in) and channels_last;
- **the method and the metric as ``sclzoo evaluate`` computes them** (``attribute`` and ``compute`` on a fresh
  ``MetricContext``, as ``evaluator/runner.py`` does, with one run's ``shared`` store, so the first call pays
  what a run pays once, e.g. ``mprt_last``'s randomised model): the first call and the median of ``--repeats``
  further ones, each with the CPU time the process got (user + system, from ``getrusage``), the cores that amounts to,
  and the voluntary context switches (a sleeping OpenMP worker woken for a parallel region costs one);
- **the same passes back to back**: the bare forwards and input-gradient passes the cell's floor counts, run as
  one loop in chunks of ``--batch-size`` rows on freshly allocated inputs, on the model the cell uses (``--layout``),
  timed in rounds interleaved with the method's and the metric's warm calls. The floor above is the fastest *single* call of
  each pass; a cell is a sum of many calls, and on a machine whose calls vary (a shared VM) the typical call is
  slower than the fastest. The ratio of a cell to this loop, round by round, is sclzoo's own overhead on the same
  passes, with the machine's call-to-call variation taken out;
- **a PyTorch profile of one warm metric call**: the operators with the most self CPU time, and how much of the
  call's wall time the operators account for (the rest is Python, captum and the metric's own bookkeeping).

``--policy passive`` is what ``sclzoo evaluate`` runs with (``OMP_WAIT_POLICY=PASSIVE``, sclzoo/threads.py),
``spin`` is libgomp's default (``GOMP_SPINCOUNT=300000``); run both and compare. Examples::

    .venv/bin/python bench/profile_cell.py --model small --method saliency --metric deletion_auc --policy passive
    .venv/bin/python bench/profile_cell.py --model small --method saliency --metric deletion_auc --policy spin
    .venv/bin/python bench/profile_cell.py --model resnet18 --n 8 --method saliency --metric max_sensitivity
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

POLICIES = {"passive": {"OMP_WAIT_POLICY": "PASSIVE"}, "spin": {"GOMP_SPINCOUNT": "300000"}}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.split("Examples::")[1:]))
    parser.add_argument("--model", choices=["small", "resnet18"], default="small")
    parser.add_argument("--n", type=int, default=None, help="images (default 64 for small, 8 for resnet18)")
    parser.add_argument("--method", default="saliency")
    parser.add_argument("--metric", default="deletion_auc")
    parser.add_argument("--policy", choices=sorted(POLICIES), default="passive",
                        help="OpenMP wait policy of this process (default passive, as sclzoo evaluate)")
    parser.add_argument("--layout", choices=["nchw", "channels_last"], default="nchw",
                        help="layout of the model the method and the metric use (and the bare loop): nchw as "
                             "--runtime torch (default), channels_last as --runtime onnx explains on a CPU (forwards "
                             "stay in PyTorch here)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="warm calls timed after the first (default 3)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="interleaved rounds of (bare loop, method, metric) for the back-to-back ratio (default 5)")
    parser.add_argument("--top", type=int, default=12, help="operators listed in the profile (default 12)")
    parser.add_argument("--min-time", type=float, default=0.5, help="seconds per floor configuration")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    return parser.parse_args(argv)


def _usage() -> tuple[float, float, int]:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), ru.ru_utime + ru.ru_stime, ru.ru_nvcsw


def measured(fn: Callable[[], Any]) -> dict[str, float]:
    """Wall seconds, CPU seconds (all threads), cores used and voluntary context switches of one call."""
    w0, c0, v0 = _usage()
    fn()
    w1, c1, v1 = _usage()
    wall = w1 - w0
    return {"wall_s": wall, "cpu_s": c1 - c0, "cores": (c1 - c0) / wall if wall > 0 else 0.0,
            "voluntary_switches": v1 - v0}


def cold_and_warm(fn: Callable[[], Any], repeats: int) -> dict[str, Any]:
    first = measured(fn)
    warm = [measured(fn) for _ in range(repeats)]
    med = {k: statistics.median(w[k] for w in warm) for k in warm[0]}
    return {"first": first, "warm_median": med, "warm_wall_s": [w["wall_s"] for w in warm]}


def back_to_back(forward: Callable[[Any], Any], gradient: Callable[[Any, Any], Any], x: Any, target: Any,
                 forwards: int, gradients: int, batch_size: int) -> Callable[[], None]:
    """A loop of ``forwards`` bare forward rows and ``gradients`` bare input-gradient rows of ``x``'s images (tiled),
    ``batch_size`` rows per pass, each chunk a freshly allocated tensor as a metric's perturbed inputs are."""
    n = x.shape[0]

    def rows(count: int) -> list[tuple[Any, Any]]:
        chunks = []
        for start in range(0, count, batch_size):
            idx = [(start + i) % n for i in range(min(batch_size, count - start))]
            chunks.append((x[idx], target[idx]))
        return chunks

    fwd_chunks, grad_chunks = rows(forwards), rows(gradients)

    def loop() -> None:
        for xb, _ in fwd_chunks:
            forward(xb + 0.0)
        for xb, yb in grad_chunks:
            gradient(xb + 0.0, yb)

    return loop


def interleaved_rounds(calls: dict[str, Callable[[], Any]], rounds: int) -> dict[str, Any]:
    """Wall seconds of each call in ``rounds`` rounds (one call of each per round, in order), and the round-by-round
    ratio of every call to the first one (the bare loop), so a slow stretch of the machine hits both."""
    seconds: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(rounds):
        for k, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            seconds[k].append(time.perf_counter() - t0)
    base = next(iter(calls))
    out: dict[str, Any] = {"seconds": seconds, "median_s": {k: statistics.median(v) for k, v in seconds.items()}}
    out["ratio_to_loop"] = {}
    for k, v in seconds.items():
        if k != base:
            ratios = [a / b for a, b in zip(v, seconds[base], strict=True)]
            out["ratio_to_loop"][k] = {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if "torch" in sys.modules:  # pragma: no cover - only when imported by another script
        raise SystemExit("profile_cell.py must set the OpenMP policy before torch loads; run it as a script")
    for var in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        os.environ.pop(var, None)
    os.environ.update(POLICIES[args.policy])
    os.environ["OMP_NUM_THREADS"] = str(args.threads)

    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_matrix import DEFAULT_N, input_gradient, pass_floor  # noqa: E402  (the sibling benches; not a package)
    from bench_metrics import load_bench_model  # noqa: E402

    from sclzoo.evaluator.attributions import METHODS, attribute
    from sclzoo.evaluator.metrics import METRICS, MetricContext, compute, metric_cost
    from sclzoo.zoo.data import load_dataset

    torch.set_num_threads(args.threads)
    METHODS.get(args.method)
    METRICS.get(args.metric)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    model, desc = load_bench_model(args.model, args.seed)
    n = args.n or DEFAULT_N[args.model]
    x = load_dataset("mnist5k", "test").images[:n].contiguous()
    with torch.no_grad():
        target = model(x).argmax(dim=1)
    ids = torch.arange(n)
    shape = tuple(int(v) for v in x.shape[1:])
    floor = pass_floor(model, x, target, args.min_time, log)
    nchw = {k: max(r["images_per_s"] for r in floor["rows"] if r["pass"] == k and r["layout"] == "eager_nchw")
            for k in ("forward", "gradient")}

    from sclzoo.evaluator.runner import channels_last_on_cpu

    explainer = channels_last_on_cpu(model) if args.layout == "channels_last" else model

    def explain_with(net: torch.nn.Module, xs: torch.Tensor, ys: torch.Tensor, sid: torch.Tensor) -> torch.Tensor:
        return attribute(args.method, net, xs, ys, sample_ids=sid, seed=args.seed)

    def explain(xs: torch.Tensor, ys: torch.Tensor, sid: torch.Tensor) -> torch.Tensor:
        return explain_with(explainer, xs, ys, sid)

    maps: dict[str, torch.Tensor] = {}
    method = cold_and_warm(lambda: maps.__setitem__("a", explain(x, target, ids)), args.repeats)

    shared: dict[Any, Any] = {}  # one run's shared work, as evaluator/runner.py keeps it across batches

    def metric_call() -> torch.Tensor:
        ctx = MetricContext(model=explainer, x=x, target=target, attributions=maps["a"], explain=explain,
                            sample_ids=ids, seed=args.seed, batch_size=args.batch_size,
                            explain_with=explain_with, shared=shared)
        return compute(args.metric, ctx)

    metric = cold_and_warm(metric_call, args.repeats)

    f_m, g_m = METHODS.get(args.method).passes(METHODS.get(args.method).defaults, shape)
    f_k, e_k = metric_cost(args.metric)

    def bare_forward(xb: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return explainer(xb)

    def bare_loop(forwards: float, gradients: float) -> Callable[[], None]:
        return back_to_back(bare_forward, lambda xb, yb: input_gradient(explainer, xb, yb), x, target,
                            round(n * forwards), round(n * gradients), args.batch_size)

    counts = {"method": (f_m, g_m), "metric": (f_k + e_k * f_m, e_k * g_m)}
    calls = {"method": lambda: explain(x, target, ids), "metric": metric_call}
    rounds: dict[str, Any] = {  # a cell without model passes (complexity metrics) has no loop to compare with
        which: interleaved_rounds({"bare loop": bare_loop(*counts[which]), which: calls[which]}, args.rounds)
        if sum(counts[which]) > 0 else None for which in ("method", "metric")}

    from torch.profiler import ProfilerActivity, profile

    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        metric_call()
    profiled_wall = time.perf_counter() - t0
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    ops_s = sum(e.self_cpu_time_total for e in events) / 1e6
    top = [{"op": e.key, "calls": e.count, "self_cpu_s": e.self_cpu_time_total / 1e6} for e in events[:args.top]]

    def floor_s(fwd: float, grad: float) -> tuple[float, float]:
        per_method = f_m / fwd + g_m / grad
        return n * per_method, n * (f_k / fwd + e_k * per_method)

    best = (floor["best"]["forward"]["images_per_s"], floor["best"]["gradient"]["images_per_s"])
    m_best, k_best = floor_s(*best)
    m_nchw, k_nchw = floor_s(nchw["forward"], nchw["gradient"])
    res = {"model": args.model, "model_description": desc, "n_images": n, "method": args.method,
           "metric": args.metric, "layout": args.layout, "policy": args.policy, "environment": POLICIES[args.policy],
           "threads": args.threads, "torch": torch.__version__, "floor": floor, "nchw_rates": nchw,
           "method_timing": method, "metric_timing": metric,
           "method_floor_s": {"best": m_best, "nchw": m_nchw}, "metric_floor_s": {"best": k_best, "nchw": k_nchw},
           "back_to_back": {"rounds": args.rounds, "batch_size": args.batch_size, **rounds},
           "profile": {"wall_s": profiled_wall, "operators_self_cpu_s": ops_s, "top": top}}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    print(report(res))
    return 0


def _ratio(seconds: float, floor: float) -> str:
    """``seconds / floor``, or a dash for work without model passes (complexity metrics: no floor)."""
    return f"{seconds / floor:.2f}" if floor > 0 else "—"


def report(r: dict[str, Any]) -> str:
    fb = r["floor"]["best"]
    lines = [f"{r['model']} ({r['model_description']}), {r['n_images']} images, {r['threads']} threads, OpenMP "
             f"{r['policy']} ({', '.join(f'{k}={v}' for k, v in r['environment'].items())}), torch {r['torch']}",
             f"pass floor here: forward {fb['forward']['images_per_s']:.0f} img/s ({fb['forward']['layout']}, batch "
             f"{fb['forward']['batch_size']}), gradient {fb['gradient']['images_per_s']:.0f} img/s "
             f"({fb['gradient']['layout']}, batch {fb['gradient']['batch_size']}); NCHW: forward "
             f"{r['nchw_rates']['forward']:.0f}, gradient {r['nchw_rates']['gradient']:.0f} img/s", ""]
    head = (f"{'call':<34}{'wall s':>9}{'cores':>7}{'vol. sw.':>10}{'floor s':>9}{'ratio':>7}{'NCHW floor s':>14}"
            f"{'ratio':>7}")
    lines += [head, "-" * len(head)]
    for label, timing, fl in ((f"method {r['method']}", r["method_timing"], r["method_floor_s"]),
                              (f"metric {r['metric']} on {r['method']}", r["metric_timing"], r["metric_floor_s"])):
        for which in ("first", "warm_median"):
            t = timing[which]
            name = f"{label} ({'first' if which == 'first' else 'warm'})"
            lines.append(f"{name[:33]:<34}{t['wall_s']:>9.3f}{t['cores']:>7.2f}{t['voluntary_switches']:>10.0f}"
                         f"{fl['best']:>9.3f}{_ratio(t['wall_s'], fl['best']):>7}{fl['nchw']:>14.3f}"
                         f"{_ratio(t['wall_s'], fl['nchw']):>7}")
    b2b = r["back_to_back"]
    lines += ["", f"the same passes back to back ({r['layout']} explanations, {b2b['batch_size']} rows per pass, fresh inputs), "
                  f"{b2b['rounds']} rounds interleaved with the calls:",
              f"{'call':<34}{'loop s':>9}{'loop / floor':>14}{'call s':>9}{'call / loop: median':>21}{'min':>7}"
              f"{'max':>7}"]
    for which, label in (("method", f"method {r['method']}"), ("metric", f"metric {r['metric']}")):
        rr = b2b[which]
        if rr is None:
            lines.append(f"{label[:33]:<34}{'—':>9}  (no model passes)")
            continue
        q = rr["ratio_to_loop"][which]
        loop_s = rr["median_s"]["bare loop"]
        floor = r[f"{which}_floor_s"]["best"]
        lines.append(f"{label[:33]:<34}{loop_s:>9.3f}{_ratio(loop_s, floor):>14}{rr['median_s'][which]:>9.3f}"
                     f"{q['median']:>21.2f}{q['min']:>7.2f}{q['max']:>7.2f}")
    p = r["profile"]
    lines += ["", f"profile of one warm metric call: {p['wall_s']:.3f} s wall (with the profiler), operators' self "
                  f"CPU {p['operators_self_cpu_s']:.3f} s",
              f"{'operator':<44}{'calls':>8}{'self CPU s':>12}"]
    lines += [f"{t['op'][:43]:<44}{t['calls']:>8}{t['self_cpu_s']:>12.4f}" for t in p["top"]]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
