"""The wheel-legged robot: physically plausible, falls without control, LQR balances and drives."""

import numpy as np
import pytest

from droil_ros.robots import load_spec
from droil_ros.sim.envs import make_env
from droil_ros.sim.lqr import LQRController, linearise
from droil_ros.sim.rollout import make_controller, run_episode, summarise


def test_model_is_plausible():
    env = make_env("wheel_legged")
    model = env.unwrapped.model
    total_mass = float(model.body_subtreemass[1])
    assert 2.0 < total_mass < 10.0
    assert np.all(model.actuator_ctrlrange[:, 1] <= 5.0)  # small hub motors, N m
    obs, _ = env.reset(seed=0, options={"tilt": 0.0})
    # centre of mass above the axle: an inverted pendulum
    com_height = env.unwrapped.data.subtree_com[1][2] - model.body_pos[1][2]
    assert 0.1 < com_height < 0.3


def test_falls_without_control():
    env = make_env("wheel_legged")
    episode = run_episode(env, make_controller("zero", env), seed=1)
    assert episode.fell and episode.seconds < 3.0 and episode.max_tilt > 0.7


def test_observation_comes_from_the_sensor_path():
    env = make_env("wheel_legged")
    obs, _ = env.reset(seed=0, options={"tilt": 0.2})
    for _ in range(20):
        obs, *_ = env.step(np.array([0.5]))
    inner = env.unwrapped
    np.testing.assert_array_equal(obs, inner.robot.build_observation(inner.readings()))
    data = inner.data
    assert obs[0] == pytest.approx(2 * np.arcsin(data.qpos[5]), abs=1e-3)  # pitch from the quat
    assert obs[3] == pytest.approx(data.qvel[0], abs=2e-3)  # wheel odometry ~ axle speed


def test_linearisation_is_unstable_and_lqr_stabilises_it():
    spec = load_spec("wheel_legged")
    a, b = linearise(spec)
    assert np.max(np.abs(np.linalg.eigvals(a))) > 1.0
    controller = LQRController(spec)
    assert controller.closed_loop_radius < 1.0


def test_lqr_stands_from_random_tilts():
    env = make_env("wheel_legged", "stand")
    controller = make_controller("lqr", env)
    episodes = [run_episode(env, controller, seed, max_seconds=5.0) for seed in range(8)]
    assert not any(e.fell for e in episodes)
    assert max(abs(e.max_tilt) for e in episodes) <= env.task.init_tilt + 0.05


def test_lqr_drives_at_the_reference_speed():
    env = make_env("wheel_legged", "drive")
    episode = run_episode(env, make_controller("lqr", env), seed=0, max_seconds=10.0)
    assert not episode.fell
    assert episode.mean_speed == pytest.approx(env.task.v_ref, rel=0.10)


def test_summary_counts_falls():
    env = make_env("wheel_legged")
    zero = make_controller("zero", env)
    summary = summarise([run_episode(env, zero, s, max_seconds=2.0) for s in range(3)])
    assert summary["fall_rate"] == 1.0 and summary["fell"]
