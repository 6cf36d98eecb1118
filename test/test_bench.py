"""Benchmarks run end to end (long: behind the ``slow`` marker, ``pytest -m slow``)."""

import json

import pytest
from conftest import run_droil


@pytest.mark.slow
def test_robustness_bench_tiny(tmp_path):
    args = ("bench", "robustness", "--robot", "wheel_legged", "--quick", "--steps", "200", "--seeds", "2",
            "--episodes", "1", "--lr-decay", "0.9", "--select-every", "100", "--select-episodes", "1",
            "--out", str(tmp_path))
    proc = run_droil(*args, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    kept = sorted((tmp_path / "robustness_wheel_legged_quick").glob("*.eval.json"))
    written = [p.stat().st_mtime_ns for p in kept]
    assert len(kept) == 11  # the expert, and each learner's last and best checkpoints
    assert run_droil(*args, timeout=1200).returncode == 0  # all kept: nothing trained or evaluated
    assert [p.stat().st_mtime_ns for p in kept] == written
    result = json.loads((tmp_path / "robustness_wheel_legged_quick.json").read_text())
    learners = ("bc", "drbc", "drbc_faithful", "be_droil", "be_droil_nu0")
    assert set(result["table"]) == {"expert", *learners, *(k + "@best" for k in learners)}
    assert "minus_bc" in result["table"]["be_droil@best"] and "minus_bc" not in result["table"]["expert"]
    assert all(set(v["best"]["steps"]) <= {100, 200} for v in result["training"].values())
    assert (tmp_path / "robustness_wheel_legged_quick" / "eval.png").is_file()


@pytest.mark.slow
def test_training_speed_bench(tmp_path):
    proc = run_droil("bench", "training-speed", "--quick", "--threads", "1", "--out", str(tmp_path),
                     timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "training_speed_t1.json").read_text())
    assert result["results"]["bc"]["batched"] > 0
