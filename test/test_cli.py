"""The ``droil`` command: results as JSON, bad input as one line with exit code 2."""

import json

import pytest
from conftest import run_droil


def test_sim_writes_json(tmp_path):
    out = tmp_path / "result.json"
    proc = run_droil("sim", "--robot", "wheel_legged", "--controller", "lqr", "--seconds", "3",
                     "--task", "drive", "--perturb", "mass=1.5", "--seed", "4", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["fell"] is False
    assert result["seconds"] == pytest.approx(3.0)
    assert result["perturbation"] == "mass=1.5" and result["seed"] == 4
    assert {"return", "max_tilt", "mean_speed", "episodes"} <= set(result)
    assert "falls 0" in proc.stdout


def test_sim_reports_a_fall():
    proc = run_droil("sim", "--controller", "zero", "--seconds", "3")
    assert proc.returncode == 0
    assert "falls 1" in proc.stdout


@pytest.mark.parametrize("args, message", [
    (["--robot", "rover"], "unknown robot 'rover'"),
    (["--perturb", "warp=2"], "unknown perturbation 'warp'"),
    (["--seconds", "-1"], "must be > 0"),
    (["--seed", "-3"], "must be >= 0"),
    (["--task", "fly"], "no task 'fly'"),
    (["--controller", "pid"], "unknown controller 'pid'"),
    (["--robot", "hopper", "--controller", "lqr"], "LQR needs a wheel balancing robot"),
])
def test_bad_input_is_one_line_exit_2(args, message):
    proc = run_droil("sim", *args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr


def test_malformed_spec_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: broken\njoints: [a]\n")
    proc = run_droil("sim", "--robot", str(bad))
    assert proc.returncode == 2 and "missing 'actuators'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_the_parser_lists_every_registered_learner():
    from droil_ros import algos
    from droil_ros.cli import LEARNERS

    assert sorted(LEARNERS) == sorted(algos.available())
