"""Benchmark: every attribution method and every metric against its floor, as ``sclzoo evaluate`` runs them.

A benchmark, not a test (``make bench``). For each bench model (the bundled CE ResNet-8, and ``resnet18_cifar``
from a seeded random init at 1×28×28, loaded as ``timm:resnet18_cifar`` with a safetensors file) it:

1. measures the **pass floor** in this process: the fastest bare forward (eager or channels_last, batch 64/256,
   inference mode) and the fastest bare input-gradient pass (forward + backward of the target logit, eager or
   channels_last, batch 16/64/256) per image; and the **as-run floor**, the same passes in a fresh process under
   the conditions ``sclzoo evaluate`` runs in (OpenMP workers that sleep between parallel regions, the model's
   NCHW layout), so that each ratio splits into the price of those defaults and sclzoo's own overhead
   (``bench/profile_cell.py`` then shows where one cell's time goes); that process also times its first and
   second gradient pass of one batch, the one-time cost of a process's first backward;
2. runs ``sclzoo evaluate`` in a fresh process for every registered method (``--repeats`` times each) and reads the
   method's time from the result's ``run.timings_s``. A method's floor is the passes its definition needs
   (``MethodSpec.passes``: integrated gradients n_steps gradient passes per image, occlusion one forward per window
   position, SmoothGrad nt_samples gradient passes, ...) at the floor's rates;
3. for each of ``--maps`` (default saliency, integrated gradients, Grad-CAM) runs ``sclzoo evaluate`` with every
   registered metric that the dataset can serve (metrics needing a ground-truth mask are listed as not timed;
   they make no model pass) and reads each (method, metric) cell's time. A cell's floor is the metric's F forwards
   and E re-explanations per image (``metric_cost``) at the forward floor and the method's own floor;
4. where Quantus 0.6.0 has the metric, times Quantus on the same images and maps, with the settings of
   ``bench_metrics.py`` (``--quantus-repeats`` times; the explanations it asks for are sclzoo's, as in that bench);
5. records each configuration's peak RSS (the ``sclzoo evaluate`` process's own high-water mark, ``VmHWM``).

Every timing is repeated ``--repeats`` times: the tables show the median and the spread (min–max over the
repeats, as a percentage of the median) so an outlier can be told from noise. The registries are read at run
time, so methods and metrics added later join the tables on their own. Results go to
``DIR/bench_matrix_<model>.json`` and the printed tables.

Examples::

    .venv/bin/python bench/bench_matrix.py --out build/bench                      # both models, 3 repeats
    .venv/bin/python bench/bench_matrix.py --model small --n 16 --repeats 1 --skip-quantus   # smoke run
    .venv/bin/python bench/bench_matrix.py --model resnet18 --maps saliency --methods saliency,occlusion
"""

from __future__ import annotations

import argparse
import copy
import glob
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_metrics import (  # noqa: E402  (the sibling bench; this folder is not a package)
    REPO,
    SMALL_MODEL_DIR,
    SUITE,
    _environment,
    best_rate,
    load_bench_model,
    run_quantus,
    sclzoo_command,
    suite_params,
)

DEFAULT_N = {"small": 64, "resnet18": 8}
DEFAULT_MAPS = ("saliency", "integrated_gradients", "gradcam")


# --------------------------------------------------------------------------------------------------------------
# The pass floor
# --------------------------------------------------------------------------------------------------------------


LAYOUTS = ("eager_nchw", "channels_last")


def input_gradient(net: nn.Module, x: Tensor, target: Tensor) -> Tensor:
    """One bare input-gradient pass: forward, backward of the target logits' sum, d/dx."""
    xi = x.detach().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(net(xi).gather(1, target[:, None]).sum(), xi)
    return g


def pass_floor(model: nn.Module, x: Tensor, target: Tensor, min_time: float,
               log: Callable[[str], None], layouts: tuple[str, ...] = LAYOUTS) -> dict[str, Any]:
    """Seconds per image of the fastest bare forward and the fastest bare input-gradient pass (over ``layouts``)."""
    model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)

    def tile(t: Tensor, b: int) -> Tensor:
        reps = -(-b // t.shape[0])
        return t.repeat(reps, *([1] * (t.ndim - 1)))[:b].contiguous()

    rows: list[dict[str, Any]] = []
    for kind, batches in (("forward", (64, 256)), ("gradient", (16, 64, 256))):
        for b in batches:
            xb, yb = tile(x, b), tile(target, b)
            for layout, net, inp in (("eager_nchw", model, xb),
                                     ("channels_last", model_cl, xb.contiguous(memory_format=torch.channels_last))):
                if layout not in layouts:
                    continue
                if kind == "forward":
                    def fn(net: nn.Module = net, inp: Tensor = inp) -> Any:
                        with torch.inference_mode():
                            return net(inp)
                else:
                    def fn(net: nn.Module = net, inp: Tensor = inp, yb: Tensor = yb) -> Any:
                        return input_gradient(net, inp, yb)
                rate = best_rate(fn, b, min_time)
                rows.append({"pass": kind, "layout": layout, "batch_size": b, "images_per_s": rate})
                log(f"  floor {kind:<8} {layout:<14} batch {b:>4}: {rate:10.1f} img/s")
    best = {k: max((r for r in rows if r["pass"] == k), key=lambda r: r["images_per_s"])
            for k in ("forward", "gradient")}
    return {"rows": rows, "best": best, "seconds_per_forward": 1.0 / best["forward"]["images_per_s"],
            "seconds_per_gradient": 1.0 / best["gradient"]["images_per_s"]}


def first_gradient_passes(model: nn.Module, x: Tensor, target: Tensor) -> dict[str, Any]:
    """Wall seconds of the first and the second bare input-gradient pass of one batch in this process (NCHW, as
    loaded), made right after its first forwards, as in ``sclzoo evaluate`` (accuracy, then explanations).

    The first backward through a network in a process pays one-time costs no warm floor contains (the backward
    kernels' set-up, memory for the gradients); a method that makes one gradient pass per batch (saliency,
    input x gradient, guided backprop) pays them in its own time, visible on small runs.
    """
    seconds = []
    for _ in range(2):
        t0 = time.perf_counter()
        input_gradient(model, x, target)
        seconds.append(time.perf_counter() - t0)
    return {"batch_size": int(x.shape[0]), "first_s": seconds[0], "second_s": seconds[1],
            "extra_s": seconds[0] - seconds[1]}


def openmp_policy(env: dict[str, str] | os._Environ[str]) -> str:
    """The OpenMP wait policy a process started with ``env`` gets (libgomp reads it once, when torch loads it)."""
    if env.get("OMP_WAIT_POLICY"):
        return f"OMP_WAIT_POLICY={env['OMP_WAIT_POLICY']}"
    if env.get("GOMP_SPINCOUNT"):
        return f"GOMP_SPINCOUNT={env['GOMP_SPINCOUNT']}"
    return "libgomp default (spinning)"


def as_run_floor(which: str, n: int, args: argparse.Namespace, work: Path, log: Callable[[str], None]
                 ) -> dict[str, Any]:
    """The pass floor under the conditions ``sclzoo evaluate`` runs in, measured in a fresh process: OpenMP workers
    that sleep between parallel regions (the child's environment gets what :func:`sclzoo.threads.passive_openmp`
    gives ``sclzoo evaluate``; a policy set by the user is kept) and the layout of ``--runtime torch`` (the model
    as loaded, NCHW). The machine floor (:func:`pass_floor` in this process) takes the fastest policy and layout;
    sclzoo / machine floor = (as-run floor / machine floor) x (sclzoo / as-run floor): the price of the defaults
    times sclzoo's own overhead."""
    env = dict(os.environ)
    if not (env.get("OMP_WAIT_POLICY") or env.get("GOMP_SPINCOUNT")):
        # what sclzoo.threads.passive_openmp does for sclzoo evaluate; not called here, because it declines once
        # torch is loaded in *this* process, which says nothing about the child's environment
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    layouts = ("eager_nchw",) if args.runtime == "torch" else LAYOUTS
    path = work / f"as_run_floor_{which}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--model", which, "--n", str(n), "--threads",
           str(args.threads), "--min-time", str(args.min_time), "--seed", str(args.seed), "--floor-json", str(path),
           "--floor-layouts", ",".join(layouts)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    floor = json.loads(path.read_text())
    floor["openmp"] = openmp_policy(env)
    floor["layouts"] = list(layouts)
    cold = floor["first_gradient_passes"]
    log(f"  as-run floor ({floor['openmp']}, {'/'.join(layouts)}): forward "
        f"{1 / floor['seconds_per_forward']:.0f} img/s, gradient {1 / floor['seconds_per_gradient']:.0f} img/s; "
        f"the process's first gradient pass (batch {cold['batch_size']}) {cold['first_s']:.3f} s, the second "
        f"{cold['second_s']:.3f} s")
    return floor


# --------------------------------------------------------------------------------------------------------------
# sclzoo evaluate in a fresh process
# --------------------------------------------------------------------------------------------------------------


def _hwm_bytes(pid: int) -> int | None:
    """The process's peak resident set since its exec (``VmHWM`` in /proc/PID/status), None when unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def run_child(cmd: list[str], log_path: Path) -> tuple[int, float, int]:
    """(exit status, wall seconds, peak RSS in bytes) of ``cmd``, its output in ``log_path``.

    The peak is the child's own ``VmHWM``, read every 20 ms while it runs (the last reading before it exits; the
    high-water mark only grows). Not ``ru_maxrss`` from ``wait4``: Linux carries the forking process's peak over
    ``exec`` into it, so every child would report at least this bench's own RSS. Where /proc is missing,
    ``ru_maxrss`` is what there is.
    """
    t0 = time.perf_counter()
    peak: int | None = None
    with open(log_path, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            hwm = _hwm_bytes(proc.pid)
            if hwm is not None:
                peak = max(peak or 0, hwm)
            time.sleep(0.02)
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter() - t0
    return proc.returncode, wall, peak if peak is not None else int(usage.ru_maxrss) * 1024


def evaluate_once(model_args: list[str], method: str, metrics: list[str], n: int, args: argparse.Namespace,
                  work: Path, tag: str) -> dict[str, Any]:
    """One ``sclzoo evaluate`` of ``method`` × ``metrics`` on the first n test images; its timings and peak RSS."""
    out = work / f"r_{tag}"
    cmd = [*sclzoo_command(), "evaluate", *model_args, "--dataset", "mnist5k", "--n-samples", str(n),
           "--methods", method, "--metrics", ",".join(metrics), "--batch-size", str(args.batch_size),
           "--device", "cpu", "--runtime", args.runtime, "--threads", str(args.threads), "--out", str(out),
           "--force", "--quiet"]
    rc, wall, rss = run_child(cmd, work / f"log_{tag}.txt")
    if rc != 0:
        raise SystemExit(f"{' '.join(cmd)} failed (exit {rc}):\n{(work / f'log_{tag}.txt').read_text()[-3000:]}")
    files = [p for p in glob.glob(str(out / "**" / "*.json"), recursive=True) if not p.endswith(".meta.json")]
    if len(files) != 1:
        raise SystemExit(f"expected one result under {out}, found {files}")
    result = json.loads(Path(files[0]).read_text())
    return {"timings_s": result["run"]["timings_s"], "metric_params": result["config"]["metrics"],
            "wall_s": wall, "peak_rss_bytes": rss}


def model_arguments(which: str, model: nn.Module, work: Path) -> list[str]:
    """``sclzoo evaluate`` arguments that load the bench model: the bundled folder, or the seeded ResNet-18 saved
    as safetensors and loaded as a timm architecture (28×28 grey input, no normalisation, as in this process)."""
    if which == "small":
        return ["--model", str(SMALL_MODEL_DIR)]
    from safetensors.torch import save_file

    weights = work / "resnet18_cifar.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    return ["--model", "timm:resnet18_cifar", "--weights", str(weights), "--num-classes", "10", "--in-chans", "1",
            "--input-size", "1,28,28", "--mean", "0", "--std", "1", "--model-id", "bench/resnet18_cifar"]


# --------------------------------------------------------------------------------------------------------------
# One model
# --------------------------------------------------------------------------------------------------------------


def _stats(values: list[float]) -> dict[str, float]:
    med = statistics.median(values)
    return {"median": med, "min": min(values), "max": max(values),
            "spread_pct": 100.0 * (max(values) - min(values)) / med if med > 0 else 0.0}


def selection(methods: list[str] | None, maps: list[str], metrics: list[str] | None
              ) -> tuple[list[str], list[str], list[str], list[str]]:
    """(methods, maps, metrics, metrics not timed) from the registries: by default every registered method, and
    every registered metric that needs no ground-truth mask (the bench data has none); the maps methods are
    among the methods."""
    from sclzoo.evaluator.attributions import METHODS
    from sclzoo.evaluator.metrics import METRICS

    for m in [*(methods or []), *maps]:
        METHODS.get(m)  # an unknown name fails here, with the registry's "did you mean"
    for k in metrics or []:
        METRICS.get(k)
    chosen = methods or list(METHODS.names())
    chosen += [m for m in maps if m not in chosen]
    timed = metrics or [k for k in METRICS.names() if not METRICS.get(k).needs_mask]
    untimed = [k for k in METRICS.names() if k not in timed]
    return chosen, list(maps), timed, untimed


def bench_model(which: str, args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    from sclzoo.evaluator.attributions import METHODS, attribute
    from sclzoo.evaluator.metrics import METRICS, metric_cost
    from sclzoo.evaluator.runner import call_params
    from sclzoo.zoo.data import load_dataset

    model, desc = load_bench_model(which, args.seed)
    n = args.n or DEFAULT_N[which]
    x = load_dataset("mnist5k", "test").images[:n].contiguous()
    with torch.no_grad():
        target = model(x).argmax(dim=1)
    shape = tuple(int(v) for v in x.shape[1:])
    methods, maps, metrics, untimed = selection(args.methods, args.maps, args.metrics)
    log(f"== {which}: {desc}, N={n}, {args.threads} threads, batch {args.batch_size}, runtime {args.runtime}, "
        f"{args.repeats} repeats")
    floor = pass_floor(model, x, target, args.min_time, log)
    floor["openmp"] = openmp_policy(os.environ)
    t_fwd, t_grad = floor["seconds_per_forward"], floor["seconds_per_gradient"]

    method_floor: dict[str, float] = {}
    run_method_floor: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="sclzoo-bench-matrix-") as tmp:
        work = Path(tmp)
        run_floor = as_run_floor(which, n, args, work, log)
        for m in methods:
            f, g = METHODS.get(m).passes(METHODS.get(m).defaults, shape)
            method_floor[m] = f * t_fwd + g * t_grad
            run_method_floor[m] = f * run_floor["seconds_per_forward"] + g * run_floor["seconds_per_gradient"]
        margs = model_arguments(which, model, work)
        runs: dict[str, list[dict[str, Any]]] = {}
        for m in methods:
            wanted = metrics if m in maps else ["sparseness"]  # the method's own time needs only a cheap metric
            runs[m] = []
            for r in range(args.repeats):
                run = evaluate_once(margs, m, wanted, n, args, work, f"{m}_{r}")
                runs[m].append(run)
                log(f"  {m:<22} run {r + 1}/{args.repeats}: {run['wall_s']:6.1f} s wall, method "
                    f"{run['timings_s'][m]:.3f} s, peak RSS {run['peak_rss_bytes'] / 2**30:.2f} GB")

    method_rows = []
    for m in methods:
        f, g = METHODS.get(m).passes(METHODS.get(m).defaults, shape)
        st = _stats([run["timings_s"][m] for run in runs[m]])
        fl, rfl = n * method_floor[m], n * run_method_floor[m]
        method_rows.append({"method": m, "forwards_per_image": f, "gradients_per_image": g, "sclzoo_s": st,
                            "floor_s": fl, "ratio": st["median"] / fl if fl > 0 else None,
                            "as_run_floor_s": rfl, "as_run_ratio": st["median"] / rfl if rfl > 0 else None,
                            "peak_rss_bytes": max(run["peak_rss_bytes"] for run in runs[m])})

    cells = []
    for m in maps:
        params = runs[m][0]["metric_params"]
        quantus_times: dict[str, list[float]] = {}
        if not args.skip_quantus:
            a = attribute(m, model, x, target, sample_ids=torch.arange(n), seed=args.seed)
            qm = tuple(k for k in SUITE if k in metrics)
            for _ in range(args.quantus_repeats):
                res = run_quantus(model, x, target, a, m, suite_params(*shape[1:]), args.batch_size, args.seed,
                                  args.quantus_timeout, log, qm)
                for k, (t, _) in res.items():
                    if t is not None:
                        quantus_times.setdefault(k, []).append(t)
        for k in metrics:
            f, e = metric_cost(k, **call_params(params[k]))
            st = _stats([run["timings_s"][f"{m}/{k}"] for run in runs[m]])
            fl = n * (f * t_fwd + e * method_floor[m])
            rfl = n * (f * run_floor["seconds_per_forward"] + e * run_method_floor[m])
            q = statistics.median(quantus_times[k]) if k in quantus_times else None
            cells.append({"method": m, "metric": k, "family": METRICS.get(k).family, "forwards_per_image": f,
                          "explanations_per_image": e, "sclzoo_s": st, "floor_s": fl,
                          "ratio": st["median"] / fl if fl > 0 else None, "as_run_floor_s": rfl,
                          "as_run_ratio": st["median"] / rfl if rfl > 0 else None, "quantus_s": q,
                          "quantus_over_sclzoo": q / st["median"] if q is not None and st["median"] > 0 else None})
    suites = {}
    for m in maps:
        mine = [c for c in cells if c["method"] == m]
        t_s = sum(c["sclzoo_s"]["median"] for c in mine)
        t_f = sum(c["floor_s"] for c in mine)
        t_r = sum(c["as_run_floor_s"] for c in mine)
        suites[m] = {"sclzoo_s": t_s, "floor_s": t_f, "ratio": t_s / t_f if t_f > 0 else None,
                     "as_run_floor_s": t_r, "as_run_ratio": t_s / t_r if t_r > 0 else None,
                     "peak_rss_bytes": max(run["peak_rss_bytes"] for run in runs[m])}
    return {"model": which, "model_description": desc, "n_images": n, "image_shape": list(shape),
            "threads": args.threads, "batch_size": args.batch_size, "runtime": args.runtime,
            "repeats": args.repeats, "quantus_repeats": 0 if args.skip_quantus else args.quantus_repeats,
            "floor": floor, "as_run_floor": run_floor, "methods": method_rows, "cells": cells, "suites": suites,
            "not_timed": {k: ("needs a ground-truth mask; no model pass" if METRICS.get(k).needs_mask
                              else "not selected") for k in untimed}}


# --------------------------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------------------------


def _num(v: float | None, fmt: str) -> str:
    return "—" if v is None or not math.isfinite(v) else format(v, fmt)


def format_tables(res: dict[str, Any]) -> str:
    fl = res["floor"]["best"]
    lines = [f"{res['model']}: {res['model_description']} — N={res['n_images']}, {res['threads']} threads, "
             f"batch {res['batch_size']}, --runtime {res['runtime']}, {res['repeats']} repeats (median, spread "
             f"= (max−min)/median)",
             f"pass floor: forward {fl['forward']['images_per_s']:.0f} img/s ({fl['forward']['layout']}, batch "
             f"{fl['forward']['batch_size']}); gradient {fl['gradient']['images_per_s']:.0f} img/s "
             f"({fl['gradient']['layout']}, batch {fl['gradient']['batch_size']}); OpenMP "
             f"{res['floor'].get('openmp', '?')}"]
    rf = res.get("as_run_floor")
    if rf:
        lines.append(f"as-run floor (as sclzoo evaluate runs: OpenMP {rf['openmp']}, {'/'.join(rf['layouts'])}): "
                     f"forward {rf['best']['forward']['images_per_s']:.0f} img/s, gradient "
                     f"{rf['best']['gradient']['images_per_s']:.0f} img/s; 'as-run' = sclzoo / as-run floor")
        cold = rf.get("first_gradient_passes")
        if cold:
            lines.append(f"  its process's first gradient pass (batch {cold['batch_size']}): {cold['first_s']:.3f} s, "
                         f"the second {cold['second_s']:.3f} s (a one-time cost single-pass methods pay in "
                         f"their own time)")
    lines.append("")
    head = (f"{'method':<22}{'F/img':>6}{'G/img':>6}{'sclzoo s':>10}{'spread':>8}{'floor s':>10}{'ratio':>7}"
            f"{'as-run':>8}{'RSS GB':>8}")
    lines += [head, "-" * len(head)]
    for r in res["methods"]:
        lines.append(f"{r['method']:<22}{r['forwards_per_image']:>6}{r['gradients_per_image']:>6}"
                     f"{r['sclzoo_s']['median']:>10.3f}{r['sclzoo_s']['spread_pct']:>7.0f}%{r['floor_s']:>10.3f}"
                     f"{_num(r['ratio'], '.2f'):>7}{_num(r.get('as_run_ratio'), '.2f'):>8}"
                     f"{r['peak_rss_bytes'] / 2**30:>8.2f}")
    maps = list(res["suites"])
    if not maps:
        return "\n".join(lines)
    lines += ["", "metric × maps: sclzoo / floor (spread %) [sclzoo / as-run floor]; Quantus / sclzoo where Quantus "
                  "has the metric"]
    w = 34
    head = f"{'metric':<26}{'F':>4}{'E':>4}" + "".join(f"{m[:w - 2]:>{w}}" for m in maps)
    lines += [head, "-" * len(head)]
    metrics = list(dict.fromkeys(c["metric"] for c in res["cells"]))
    by = {(c["method"], c["metric"]): c for c in res["cells"]}
    for k in metrics:
        c0 = by[(maps[0], k)]
        row = f"{k:<26}{c0['forwards_per_image']:>4}{c0['explanations_per_image']:>4}"
        for m in maps:
            c = by[(m, k)]
            q = f" Q {c['quantus_over_sclzoo']:.1f}" if c["quantus_over_sclzoo"] is not None else ""
            ar = f" [{_num(c['as_run_ratio'], '.2f')}]" if c.get("as_run_ratio") is not None else ""
            cell = f"{_num(c['ratio'], '.2f')} ({c['sclzoo_s']['spread_pct']:.0f}%){ar}{q}"
            row += f"{cell:>{w}}"
        lines.append(row)
    lines.append("-" * len(head))
    suite = {m: f"{_num(res['suites'][m]['ratio'], '.2f')} [{_num(res['suites'][m].get('as_run_ratio'), '.2f')}]"
             for m in maps}
    lines.append(f"{'suite (model-bound cells)':<34}" + "".join(f"{suite[m]:>{w}}" for m in maps))
    lines.append(f"{'peak RSS of the evaluation':<34}" + "".join(
        f"{res['suites'][m]['peak_rss_bytes'] / 2**30:>{w - 3}.2f} GB" for m in maps))
    if res["not_timed"]:
        lines.append("not timed: " + "; ".join(f"{k} ({why})" for k, why in res["not_timed"].items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog="\n".join(
                                         __doc__.split("Examples::")[1:]))
    split = lambda s: [v.strip() for v in s.split(",") if v.strip()]  # noqa: E731
    parser.add_argument("--model", choices=["small", "resnet18", "all"], default="all")
    parser.add_argument("--n", type=int, default=None, help="images (default 64 for small, 8 for resnet18)")
    parser.add_argument("--methods", type=split, default=None, help="methods (default: every registered one)")
    parser.add_argument("--maps", type=split, default=list(DEFAULT_MAPS),
                        help="methods whose maps every metric scores (default saliency,integrated_gradients,gradcam)")
    parser.add_argument("--metrics", type=split, default=None,
                        help="metrics (default: every registered one the dataset can serve)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each configuration (default 3)")
    parser.add_argument("--quantus-repeats", type=int, default=1, help="Quantus runs per metric (default 1)")
    parser.add_argument("--skip-quantus", action="store_true")
    parser.add_argument("--quantus-timeout", type=float, default=600.0, help="seconds per Quantus metric")
    parser.add_argument("--threads", type=int, default=2, help="torch threads here and in sclzoo (default 2)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--runtime", choices=["torch", "onnx"], default="torch",
                        help="sclzoo's --runtime (default torch; onnx only for the bundled model)")
    parser.add_argument("--min-time", type=float, default=0.5, help="seconds per floor configuration")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "build" / "bench")
    parser.add_argument("--floor-json", type=Path, default=None, help=argparse.SUPPRESS)  # as_run_floor's child
    parser.add_argument("--floor-layouts", type=split, default=list(LAYOUTS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.quantus_repeats < 1:
        parser.error("--repeats and --quantus-repeats must be at least 1")
    torch.set_num_threads(args.threads)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    if args.floor_json is not None:  # only the pass floor, in this process's OpenMP policy (see as_run_floor)
        from sclzoo.zoo.data import load_dataset

        model, _ = load_bench_model(args.model, args.seed)
        x = load_dataset("mnist5k", "test").images[:args.n or DEFAULT_N[args.model]].contiguous()
        with torch.no_grad():
            target = model(x).argmax(dim=1)
        cold = first_gradient_passes(model, x[:args.batch_size], target[:args.batch_size])
        floor = pass_floor(model, x, target, args.min_time, log, tuple(args.floor_layouts))
        floor["first_gradient_passes"] = cold
        args.floor_json.write_text(json.dumps(floor, indent=2) + "\n")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)

    for which in (["small", "resnet18"] if args.model == "all" else [args.model]):
        if which == "resnet18" and args.runtime == "onnx":
            log("resnet18: no ONNX file for a timm architecture; --runtime torch")
        res = bench_model(which, argparse.Namespace(**{**vars(args), "runtime": "torch"})
                          if which == "resnet18" else args, log)
        res["environment"] = _environment(args.threads, torch.device("cpu"))
        res["command"] = " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])])
        path = args.out / f"bench_matrix_{which}.json"
        path.write_text(json.dumps(res, indent=2) + "\n")
        print(format_tables(res) + f"\nwrote {path}\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
