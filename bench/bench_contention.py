"""Benchmark: one evaluation alone and beside one competing CPU-bound process (``make bench``).

A shared machine (a laptop, a CI runner) rarely gives an evaluation all its cores. This script runs the same
``sclzoo evaluate`` (a bundled model, the demo's methods and metrics, ``--n`` images, ``--force`` so it computes)
twice in a subprocess: alone, then beside one competing process that spins one core for the whole run. For each
run it records the wall time and the CPU time the evaluation got (its children's user + system time), and prints

- the slowdown: wall time beside the competitor / wall time alone;
- the CPU share lost: 1 − (cores the evaluation used beside / cores it used alone), cores = CPU time / wall time;
- the proportional slowdown that share implies, 1 / (1 − share lost): a slowdown above it means the evaluation's
  own threads fight each other or the competitor (spinning thread pools), not just that it has less CPU;
- the evaluation's peak resident memory (the demo's per-model evaluation at the default ``--n 64``).

Examples::

    .venv/bin/python bench/bench_contention.py --out build/bench
    .venv/bin/python bench/bench_contention.py --n 8 --metrics sparseness,deletion_auc   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
MODEL = "zoo/models/resnet8_cifar.ce_mnist5k"
METHODS = "saliency,integrated_gradients,gradcam"
METRICS = ("faithfulness_correlation,deletion_auc,insertion_auc,sparseness,complexity,effective_complexity,"
           "max_sensitivity,avg_sensitivity")
SPIN = "import time\nend = time.time() + {seconds}\nwhile time.time() < end:\n    pass\n"


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_once(args: argparse.Namespace, out: Path, competing: bool) -> dict[str, Any]:
    """One evaluation; with ``competing``, beside a process that spins one core until the evaluation ends."""
    cmd = [str(Path(sys.executable).with_name("sclzoo")), "evaluate", "--model", args.model, "--n-samples",
           str(args.n), "--methods", args.methods, "--metrics", args.metrics, "--out", str(out), "--force",
           "--quiet"]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    spinner = None
    if competing:  # spins far longer than needed; killed as soon as the evaluation ends
        spinner = subprocess.Popen([sys.executable, "-c", SPIN.format(seconds=3600)])
        time.sleep(0.5)
    cpu0 = _children_cpu()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    cpu = _children_cpu() - cpu0
    if spinner is not None:
        spinner.kill()
        spinner.wait()
    if proc.returncode != 0:
        raise SystemExit(f"evaluation failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    # ru_maxrss of the children is the largest peak of any child so far: the evaluation, not the small spinner
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"competing": competing, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "cores_used": round(cpu / wall, 3), "peak_rss_mb": round(peak_mb)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=MODEL, help=f"model to evaluate (default {MODEL})")
    parser.add_argument("--n", type=int, default=64, help="images (default 64, as make demo)")
    parser.add_argument("--methods", default=METHODS)
    parser.add_argument("--metrics", default=METRICS)
    parser.add_argument("--threads", type=int, default=None, help="--threads of the evaluation (default: auto)")
    parser.add_argument("--out", type=Path, default=REPO / "build" / "bench", help="folder for contention.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        alone = run_once(args, Path(tmp) / "alone", competing=False)
        beside = run_once(args, Path(tmp) / "beside", competing=True)
    slowdown = beside["wall_s"] / alone["wall_s"]
    share_lost = max(0.0, 1 - beside["cores_used"] / alone["cores_used"])
    proportional = 1 / (1 - share_lost) if share_lost < 1 else float("inf")
    report = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
              "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "alone": alone, "with_one_competing_process": beside, "slowdown": round(slowdown, 3),
              "cpu_share_lost": round(share_lost, 3), "proportional_slowdown": round(proportional, 3),
              "slowdown_over_proportional": round(slowdown / proportional, 3)}
    print(f"{'run':<30} {'wall s':>8} {'CPU s':>8} {'cores':>6} {'peak RSS MB':>12}")
    for label, r in (("alone", alone), ("with one competing process", beside)):
        print(f"{label:<30} {r['wall_s']:>8.1f} {r['cpu_s']:>8.1f} {r['cores_used']:>6.2f} {r['peak_rss_mb']:>12}")
    print(f"slowdown {slowdown:.2f}x; CPU share lost {100 * share_lost:.0f} %, which alone would explain "
          f"{proportional:.2f}x; slowdown / proportional = {slowdown / proportional:.2f}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "contention.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
