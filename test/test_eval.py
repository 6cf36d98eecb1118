"""Robustness grids: shipped grids are valid, bad ones fail clearly, evaluation is reproducible."""

import contextlib
import json

import numpy as np
import pytest

from droil_ros.errors import DroilError
from droil_ros.eval.grid import available_grids, evaluate, load_grid, plot, summary_table
from droil_ros.sim.envs import make_env
from droil_ros.sim.perturb import MODEL_FIELDS
from droil_ros.sim.rollout import make_controller

ROBOTS = ["wheel_legged", "hopper", "walker2d", "halfcheetah", "ant"]
TINY = """\
robot: wheel_legged
task: stand
episodes: 2
seconds: 1.5
perturbations:
  mass: {x: [1.0, 2.0], perturb: "mass={x}"}
  latency: {x: [0, 2], perturb: ["nominal", "latency=2"]}
  gravity: {x: [1.0, 1.3], perturb: "gravity={x}"}
heldout: [latency]
beyond: [gravity]
"""


def model_fields(env) -> dict[str, np.ndarray]:
    model = env.unwrapped.model
    return {"gravity": np.array(model.opt.gravity),
            **{name: np.array(getattr(model, name)) for name in MODEL_FIELDS}}


def test_every_robot_has_a_grid():
    assert available_grids() == sorted(ROBOTS)


@pytest.mark.parametrize("robot", ROBOTS)
def test_shipped_grid_applies_to_its_robot_and_restores(robot):
    grid = load_grid(robot)
    assert grid.robot == robot and set(grid.heldout) <= set(grid.perturbations)
    assert grid.source == f"config/grids/{robot}.yaml"  # results name it, not this machine's path
    env = make_env(robot, grid.task)
    nominal = model_fields(env)
    for name, sweep in grid.perturbations.items():
        assert 4 <= len(sweep.x) <= 7 and len(sweep.perturb) == len(sweep.x), name
        for text in sweep.perturb:
            env.set_perturbation(text)
        env.set_perturbation(None)
        for field, value in model_fields(env).items():
            np.testing.assert_array_equal(value, nominal[field], err_msg=f"{name}: {field}")


@pytest.mark.parametrize("text, message", [
    ("robot: [", "not valid YAML"),
    ("- a list", "must be a YAML mapping"),
    ("robot: rover\nperturbations: {g: {x: [1], perturb: 'gravity={x}'}}", "unknown robot 'rover'"),
    ("robot: hopper\ntask: fly\nperturbations: {}", "no task 'fly'"),
    ("robot: hopper\nepisode: 3", "unknown key(s) episode"),
    ("robot: hopper\nepisodes: 0\nperturbations: {}", "'episodes' must be an integer >= 1"),
    ("robot: hopper\nperturbations: {}", "'perturbations' must be a non-empty mapping"),
    ("robot: hopper\nperturbations: {g: {x: [], perturb: 'gravity={x}'}}", "non-empty list of numbers"),
    ("robot: hopper\nperturbations: {g: {x: [1, 2], perturb: 'gravity=2'}}", "has no {x}"),
    ("robot: hopper\nperturbations: {g: {x: [1, 2], perturb: ['gravity=1']}}", "a list of 2 strings"),
    ("robot: hopper\nperturbations: {g: {x: [1], perturb: 'warp={x}'}}", "unknown perturbation 'warp'"),
    ("robot: hopper\nperturbations: {k: {x: [1], perturb: 'stiffness@knee={x}'}}",
     "perturbation 'k': 'stiffness@knee=1': robot 'hopper' has no joint named 'knee'"),
    ("robot: hopper\nperturbations: {g: {x: [1], perturb: 'gravity={x}'}}\nheldout: [mass]",
     "'heldout' must list perturbation names"),
    ("robot: hopper\nperturbations: {g: {x: [1], perturb: 'gravity={x}'}}\nheldout: [g]\nbeyond: [g]",
     "'beyond' must list perturbation names of this grid not held out"),
    ("robot: hopper\nperturbations: {grid_average: {x: [1], perturb: 'gravity={x}'}}", "reserved"),
])
def test_bad_grid_fails_with_one_line(tmp_path, text, message):
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    with pytest.raises(DroilError) as error:
        load_grid(path)
    assert message in str(error.value)
    assert str(error.value).startswith(str(path)) and "\n" not in str(error.value)


@pytest.mark.parametrize("name, message", [("rover", "no grid for robot 'rover' (shipped: ant,"),
                                           ("missing.yaml", "grid file not found: missing.yaml")])
def test_unknown_grid(name, message):
    with pytest.raises(DroilError) as error:
        load_grid(name)
    assert message in str(error.value)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("eval")
    (folder / "tiny.yaml").write_text(TINY)
    with contextlib.chdir(folder):
        grid = load_grid(folder / "tiny.yaml")
        env = make_env("wheel_legged", "stand")
        policies = {"lqr": make_controller("lqr", env), "zero": make_controller("zero", env)}
        yield grid, policies, evaluate(policies, grid, seed=3, progress=False)


def test_evaluate_ranks_lqr_above_zero(tiny):
    grid, policies, result = tiny
    json.dumps(result)
    assert (result["robot"], result["task"], result["episodes"], result["seed"]) == (
        "wheel_legged", "stand", 2, 3)
    for name, sweep in grid.perturbations.items():
        lqr, zero = result["results"]["lqr"][name], result["results"]["zero"][name]
        assert [p["x"] for p in lqr] == list(sweep.x) and [p["perturb"] for p in lqr] == list(sweep.perturb)
        for a, b in zip(lqr, zero, strict=True):
            assert len(a["returns"]) == 2 and a["fall_rate"] == 0.0
            assert a["mean"] > b["mean"] and b["fall_rate"] > 0
    summary = result["summary"]["lqr"]
    assert summary["grid_average"] == summary["mass"]
    assert summary["heldout_average"] == summary["latency"]
    assert summary["beyond_average"] == summary["gravity"]  # not in the grid average either


def test_evaluate_is_reproducible_and_seeded(tiny):
    grid, policies, result = tiny
    assert evaluate(policies, grid, seed=3, progress=False) == result
    other = evaluate({"lqr": policies["lqr"]}, grid, seed=4, progress=False)
    assert other["results"]["lqr"]["mass"][0]["returns"] != result["results"]["lqr"]["mass"][0]["returns"]


def test_workers_give_the_same_result_and_need_picklable_policies(tiny):
    grid, policies, result = tiny
    parallel = evaluate({"lqr": policies["lqr"]}, grid, seed=3, workers=2, progress=False)
    assert parallel["results"]["lqr"] == result["results"]["lqr"]
    with pytest.raises(DroilError, match="workers > 1 needs picklable policies"):
        evaluate({"zero": policies["zero"]}, grid, workers=2, progress=False)


def test_plot_and_summary_table(tiny, tmp_path):
    _, _, result = tiny
    out = plot(result, tmp_path / "plots" / "grid.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = summary_table(result)
    assert "| lqr |" in table and "| zero |" in table
    assert "latency (held out)" in table and "grid average" in table and "held-out average" in table
    assert "gravity (beyond)" in table and "beyond average" in table
