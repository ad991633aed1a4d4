"""Benchmark: what a meta-evaluation costs beside the plain evaluation it is built on (``make bench``).

Runs, each in a fresh subprocess and with ``--force`` so that it computes: ``sclzoo evaluate`` on a bundled model
(the standard preset's methods and metrics, ``--n`` images), then ``sclzoo meta-evaluate`` with the same settings
and the default meta config (docs/protocol.md#meta-evaluation). It records the wall time and the CPU time each
got (the children's user + system time: on a shared machine the CPU-time ratio is the steadier figure), the meta
run's own phase timings (unperturbed evaluation, calibration, minor and disruptive tests; their sum over the
unperturbed phase is the ratio without the commands' start-up, which dominates tiny runs), and the ratio the cost
model predicts (``sclzoo meta-evaluate --dry-run``: forwards and explanations), and writes
``<out>/bench_meta.json``.

Examples::

    .venv/bin/python bench/bench_meta.py --out build/bench                      # 16 images, standard metrics
    .venv/bin/python bench/bench_meta.py --n 8 --metrics sparseness,deletion_auc   # smoke run
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


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _run(cmd: list[str]) -> tuple[dict[str, Any], str]:
    cpu0 = _children_cpu()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    cpu = _children_cpu() - cpu0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[1:3])} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2)}, proc.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=MODEL, help=f"model (default {MODEL})")
    parser.add_argument("--n", type=int, default=16, help="images (default 16; the leaderboard's preset has 64)")
    parser.add_argument("--methods", default=METHODS)
    parser.add_argument("--metrics", default=METRICS)
    parser.add_argument("--threads", type=int, default=None, help="--threads of both runs (default: auto)")
    parser.add_argument("--out", type=Path, default=REPO / "build" / "bench", help="folder for bench_meta.json")
    args = parser.parse_args(argv)
    sclzoo = str(Path(sys.executable).with_name("sclzoo"))
    common = ["--model", args.model, "--n-samples", str(args.n), "--methods", args.methods, "--metrics",
              args.metrics, "--quiet"] + (["--threads", str(args.threads)] if args.threads else [])
    with tempfile.TemporaryDirectory() as tmp:
        plain, _ = _run([sclzoo, "evaluate", *common, "--out", f"{tmp}/plain", "--force"])
        _, text = _run([sclzoo, "meta-evaluate", *common, "--out", f"{tmp}/meta", "--dry-run"])
        cost = json.loads(text)["cost"]
        meta, _ = _run([sclzoo, "meta-evaluate", *common, "--out", f"{tmp}/meta", "--force"])
        (meta_file,) = Path(tmp, "meta").rglob("*.meta.json")
        doc = json.loads(meta_file.read_text())
    phases = doc["run"]["timings_s"]
    ratio = {"phases": round(sum(phases.values()) / phases["unperturbed"], 2),
             "wall": round(meta["wall_s"] / plain["wall_s"], 2), "cpu": round(meta["cpu_s"] / plain["cpu_s"], 2),
             "cost_model_forwards": cost["ratio"]["forwards"],
             "cost_model_explanations": cost["ratio"]["explanations"]}
    report = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "load_average_1min_at_end": round(os.getloadavg()[0], 2)},
              "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "meta_config": doc["meta_config"], "plain": plain, "meta": meta,
              "meta_phases_s": doc["run"]["timings_s"],
              "sigma": {t: doc["tests"][t]["sigma"] for t in ("minor", "disruptive")},
              "ratio": ratio, "cost": cost}
    print(f"{'run':<16} {'wall s':>8} {'CPU s':>8}")
    print(f"{'evaluate':<16} {plain['wall_s']:>8.1f} {plain['cpu_s']:>8.1f}")
    print(f"{'meta-evaluate':<16} {meta['wall_s']:>8.1f} {meta['cpu_s']:>8.1f}")
    print(f"meta / plain: {ratio['phases']:.1f}x inside the meta run (all phases / its unperturbed evaluation), "
          f"{ratio['wall']:.1f}x wall and {ratio['cpu']:.1f}x CPU of the two commands (start-up included); the cost "
          f"model predicts {ratio['cost_model_forwards']:.1f}x forwards and {ratio['cost_model_explanations']:.1f}x "
          "explanations")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_meta.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
