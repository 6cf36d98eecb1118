"""A task that sees part of the robot's observation (the DMIL paper drives its wheel-legged robot
on (theta, theta_dot, x_dot), without x): its data, its policies, and the simulator, the nodes'
runtime and the evaluation feeding such a policy the robot's whole observation."""

import numpy as np
import pytest
import yaml

from droil_ros.data.collect import collect
from droil_ros.errors import DroilError, SpecError
from droil_ros.pipeline import train_and_export
from droil_ros.policy import OnnxPolicy
from droil_ros.policy.vetting import vet
from droil_ros.robots import load_spec
from droil_ros.sim.envs import make_env
from droil_ros.sim.rollout import run_episode

DRIVE = ["theta", "theta_dot", "x_dot"]


def spec_with_drive_observation(tmp_path, observation=DRIVE):
    raw = yaml.safe_load(load_spec("wheel_legged").text)
    raw["tasks"]["drive"]["observation"] = observation
    path = tmp_path / "robot.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_spec(path)


def test_a_task_observation_is_a_named_subset_of_the_robots(tmp_path):
    spec = spec_with_drive_observation(tmp_path)
    drive = spec.task_spec("drive")
    assert drive.obs_names == DRIVE and drive.obs_dim == 3 and drive.hash == spec.hash
    assert spec.task_spec("stand") is spec and "x" in spec.obs_names
    for bad in (["theta", "z"], ["theta", "theta"]):
        with pytest.raises(SpecError, match="task 'drive': .*not a subset") as err:
            spec_with_drive_observation(tmp_path, bad)
        assert "\n" not in str(err.value)


def test_data_and_policies_of_the_task_never_see_what_it_hides(tmp_path):
    spec = spec_with_drive_observation(tmp_path)
    data = collect(str(spec.source), "lqr", episodes=2, seconds=1.0, task="drive", progress=False)
    assert data.meta["obs_names"] == DRIVE and data.observations.shape[1] == 3
    assert data.robot_spec().obs_names == DRIVE  # trains without --robot
    path = tmp_path / "drive.onnx"
    train_and_export("bc", data, path, robot=spec, steps=50, preset="fast", progress=False)
    alone = OnnxPolicy(path)  # as trained: three inputs
    assert alone.metadata["obs_names"] == DRIVE and alone.obs_dim == 3
    served = OnnxPolicy(path, spec)  # as the nodes and the evaluation load it: the whole observation
    assert served.obs_dim == spec.obs_dim
    obs = np.random.default_rng(0).normal(size=(8, spec.obs_dim))
    seen = [spec.obs_names.index(n) for n in DRIVE]
    np.testing.assert_array_equal(served(obs), alone(obs[:, seen]))
    np.testing.assert_array_equal(served.act(obs[0]), alone(obs[0, seen]))
    moved = obs.copy()
    moved[:, spec.obs_names.index("x")] += 5.0  # x is not an input of the drive policy
    np.testing.assert_array_equal(served(moved), served(obs))
    verdict = vet(path.read_bytes(), spec, period=1.0, max_fraction=1.0, label="drive.onnx")
    assert verdict.ok, verdict.reason  # the policy node's vetting feeds it the whole observation
    episode = run_episode(make_env(spec, "drive"), served, seed=0, max_seconds=0.5)
    assert episode.seconds == pytest.approx(0.5)
    with pytest.raises(DroilError, match="dataset has no observation"):
        data.observe(spec)  # a subset cannot grow back
