"""Thread counts from the cores actually available (sclzoo/threads.py), and pools that sleep instead of spinning."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sclzoo.errors import ConfigError
from sclzoo.threads import (
    ThreadChoice,
    available_cpus,
    cgroup_cpu_limit,
    choose_threads,
    configure,
    passive_openmp,
)


# ------------------------------------------------------------------------------------------------ choose_threads
def test_the_first_source_that_is_set_wins() -> None:
    env = {"SCLZOO_THREADS": "3", "OMP_NUM_THREADS": "5"}
    assert choose_threads(2, env, available=8) == ThreadChoice(2, "requested", 8)
    assert choose_threads("4", env, available=8) == ThreadChoice(4, "requested", 8)
    assert choose_threads(None, env, available=8) == ThreadChoice(3, "SCLZOO_THREADS", 8)
    assert choose_threads(None, {"OMP_NUM_THREADS": "5"}, available=8) == ThreadChoice(5, "OMP_NUM_THREADS", 8)
    assert choose_threads(None, {"OMP_NUM_THREADS": "4,2"}, available=8).n == 4  # nested: the outer pool
    assert choose_threads(None, {"SCLZOO_THREADS": " "}, available=8) == ThreadChoice(8, "available", 8)
    assert choose_threads(None, {}, available=6) == ThreadChoice(6, "available", 6)


@pytest.mark.parametrize("bad", ["0", "-2", "two", "1.5"])
def test_a_bad_count_is_a_config_error_naming_its_source(bad: str) -> None:
    with pytest.raises(ConfigError, match=f"SCLZOO_THREADS must be a positive integer, got '{bad}'"):
        choose_threads(None, {"SCLZOO_THREADS": bad}, available=2)
    with pytest.raises(ConfigError, match="--threads must be a positive integer"):
        choose_threads(bad, {}, available=2)


# ---------------------------------------------------------------------------------------------- available cores
def test_available_is_affinity_capped_by_the_quota_rounded_down() -> None:
    assert available_cpus(affinity=8, quota=None, read_quota=False) == 8
    assert available_cpus(affinity=8, quota=2.5) == 2
    assert available_cpus(affinity=2, quota=4.0) == 2
    assert available_cpus(affinity=8, quota=0.5) == 1  # never 0
    assert 1 <= available_cpus() <= len(os.sched_getaffinity(0))


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_quota_is_the_tightest_on_the_path_to_the_root(tmp_path: Path) -> None:
    _write(tmp_path / "cpu.max", "max 100000\n")
    _write(tmp_path / "jobs" / "cpu.max", "100000 100000\n")  # 1 CPU for every job …
    _write(tmp_path / "jobs" / "one" / "cpu.max", "400000 100000\n")  # … whatever the job itself says
    assert cgroup_cpu_limit(tmp_path, "0::/jobs/one\n") == 1.0
    _write(tmp_path / "jobs" / "cpu.max", "max 100000\n")
    assert cgroup_cpu_limit(tmp_path, "0::/jobs/one\n") == 4.0
    _write(tmp_path / "jobs" / "one" / "cpu.max", "150000 100000\n")
    assert cgroup_cpu_limit(tmp_path, "0::/jobs/one\n") == 1.5
    _write(tmp_path / "jobs" / "one" / "cpu.max", "max 100000\n")
    assert cgroup_cpu_limit(tmp_path, "0::/jobs/one\n") is None


def test_cgroup_v2_root_of_a_container_namespace(tmp_path: Path) -> None:
    _write(tmp_path / "cpu.max", "200000 100000\n")
    assert cgroup_cpu_limit(tmp_path, "0::/\n") == 2.0
    assert cgroup_cpu_limit(tmp_path, "") == 2.0  # /proc/self/cgroup unreadable: the mounted root still counts


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    _write(tmp_path / "cpu" / "cpu.cfs_quota_us", "-1\n")
    _write(tmp_path / "cpu" / "cpu.cfs_period_us", "100000\n")
    assert cgroup_cpu_limit(tmp_path, "4:cpu:/\n") is None
    _write(tmp_path / "cpu" / "cpu.cfs_quota_us", "250000\n")
    assert cgroup_cpu_limit(tmp_path, "4:cpu:/\n") == 2.5
    assert cgroup_cpu_limit(tmp_path / "nothing-here", "0::/\n") is None


# -------------------------------------------------------------------------------------------------- configure
def test_configure_before_torch_sets_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "torch")  # as if torch were not imported yet (restored afterwards)
    env: dict[str, str] = {"SCLZOO_THREADS": "1"}
    assert configure(environ=env) == ThreadChoice(1, "SCLZOO_THREADS", available_cpus())
    assert env["OMP_NUM_THREADS"] == "1" and env["OMP_WAIT_POLICY"] == "PASSIVE"
    env = {"OMP_NUM_THREADS": "3", "OMP_WAIT_POLICY": "ACTIVE"}
    assert configure(environ=env).n == 3
    assert env == {"OMP_NUM_THREADS": "3", "OMP_WAIT_POLICY": "ACTIVE"}  # the user's settings stay
    assert not passive_openmp({"GOMP_SPINCOUNT": "1000"})


def test_configure_after_torch_sets_torch_threads() -> None:
    before = torch.get_num_threads()
    try:
        assert configure(environ={"SCLZOO_THREADS": "1"}).n == 1
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert not passive_openmp({})  # too late: OpenMP has read its environment


def test_importing_sclzoo_makes_openmp_passive() -> None:
    code = "import os, sclzoo, torch; print(os.environ.get('OMP_WAIT_POLICY'))"
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "PASSIVE"


def test_onnxruntime_sessions_do_not_spin(bundled: dict[str, Path]) -> None:
    from sclzoo.zoo.onnx_export import onnx_session

    opts = onnx_session(bundled["ce"] / "onnx" / "model.onnx", "cpu", threads=1).get_session_options()
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert opts.intra_op_num_threads == 1 and opts.inter_op_num_threads == 1
