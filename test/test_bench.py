"""Benchmarks run end to end (long: behind the ``slow`` marker, ``pytest -m slow``)."""

import json

import pytest
from conftest import run_droil


@pytest.mark.slow
def test_robustness_bench_tiny(tmp_path):
    proc = run_droil("bench", "robustness", "--robot", "wheel_legged", "--quick", "--steps", "50",
                     "--seeds", "2", "--episodes", "1", "--out", str(tmp_path), timeout=1200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "robustness_wheel_legged_quick.json").read_text())
    assert set(result["table"]) == {"bc", "drbc", "be_droil", "be_droil_nu0"}
    assert (tmp_path / "robustness_wheel_legged_quick" / "eval.png").is_file()


@pytest.mark.slow
def test_training_speed_bench(tmp_path):
    proc = run_droil("bench", "training-speed", "--quick", "--threads", "1", "--out", str(tmp_path),
                     timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "training_speed_t1.json").read_text())
    assert result["results"]["bc"]["batched"] > 0
