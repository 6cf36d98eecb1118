"""Perturbations: each one changes the dynamics, and restoring gives back the nominal exactly."""

import mujoco
import numpy as np
import pytest

from droil_ros.errors import PerturbationError
from droil_ros.sim.envs import make_env
from droil_ros.sim.perturb import KINDS, parse_perturbation

# a value per perturbation that must visibly change a short open-loop trajectory
CHANGES = {
    "gravity": 1.5, "mass": 1.5, "payload": 2.0, "friction": 0.05, "damping": 50.0,
    "stiffness": 20.0, "frictionloss": 0.5, "gear": 0.5, "actuator_range": 0.5,
    "action_noise": 0.2, "obs_noise": 0.05, "latency": 2, "springref": 0.5,
}
WITH = {"springref": {"stiffness": 20.0}}  # a rest angle acts through a spring: compared with it alone
ROBOTS = ["wheel_legged", "hopper", "walker2d", "halfcheetah", "ant"]


def model_arrays(model: mujoco.MjModel) -> dict[str, np.ndarray]:
    arrays = {name: np.array(getattr(model, name)) for name in dir(model)
              if not name.startswith("_") and isinstance(getattr(model, name), np.ndarray)}
    arrays["opt.gravity"] = np.array(model.opt.gravity)
    return arrays


def trajectory(env, steps=60, seed=3):
    """Observations under a fixed, large, alternating action sequence."""
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (steps, env.robot.act_dim)) * env.robot.action_high
    out = [obs]
    for a in actions:
        obs, *_ = env.step(a)
        out.append(obs)
    return np.array(out)


def test_every_kind_is_covered():
    assert set(CHANGES) == set(KINDS)


@pytest.mark.parametrize("robot", ROBOTS)
@pytest.mark.parametrize("name", sorted(CHANGES))
def test_perturbation_changes_dynamics_and_restores_exactly(robot, name):
    env = make_env(robot)
    nominal_model = model_arrays(env.unwrapped.model)
    nominal = trajectory(env)
    np.testing.assert_array_equal(nominal, trajectory(env))  # deterministic

    if name in WITH:
        env.set_perturbation(WITH[name])
        nominal = trajectory(env)
    env.set_perturbation({**WITH.get(name, {}), name: CHANGES[name]})
    perturbed = trajectory(env)
    assert np.max(np.abs(perturbed - nominal)) > 1e-6, f"{name} did not change {robot}"

    env.set_perturbation(None)
    restored = model_arrays(env.unwrapped.model)
    for field, value in nominal_model.items():
        np.testing.assert_array_equal(restored[field], value, err_msg=field)
    env.set_perturbation(WITH.get(name))
    np.testing.assert_array_equal(trajectory(env), nominal)


def test_perturbations_do_not_accumulate_or_leak_between_envs():
    a, b = make_env("wheel_legged"), make_env("wheel_legged")
    mass = a.unwrapped.model.body_mass.copy()
    a.set_perturbation("mass=2")
    a.set_perturbation("mass=2")
    np.testing.assert_allclose(a.unwrapped.model.body_mass, mass * 2)
    np.testing.assert_array_equal(b.unwrapped.model.body_mass, mass)


def test_targets_are_resolved_by_name():
    env = make_env("hopper")
    model = env.unwrapped.model
    env.set_perturbation("stiffness@thigh_joint=20")
    thigh = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, "thigh_joint")
    assert model.jnt_stiffness[thigh] == 20.0
    assert np.count_nonzero(model.jnt_stiffness) == 1
    env.set_perturbation("payload@foot=1.5")
    foot = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "foot")
    assert model.body_mass[foot] == pytest.approx(env.perturber.nominal.body_mass[foot] + 1.5)
    with pytest.raises(PerturbationError, match="no joint named 'knee'"):
        env.set_perturbation("damping@knee=2")


def test_parse_string_mapping_and_yaml(tmp_path):
    text = parse_perturbation("mass=1.5, friction=0.3,latency=2")
    assert str(text) == "mass=1.5,friction=0.3,latency=2"
    assert parse_perturbation({"mass": 1.5, "friction": 0.3, "latency": 2}) == text
    path = tmp_path / "p.yaml"
    path.write_text("mass: 1.5\nfriction: 0.3\nlatency: 2\n")
    assert parse_perturbation(str(path)) == text
    assert str(parse_perturbation("")) == "nominal" and not parse_perturbation("nominal")


@pytest.mark.parametrize("text, message", [
    ("warp=2", "unknown perturbation 'warp'"),
    ("mass", "not of the form name=value"),
    ("mass=heavy", "not a number"),
    ("mass=-1", "must be >= 0"),
    ("latency=1.5", "must be an integer"),
    ("gravity@torso=2", "takes no targets"),
    ("friction=nan", "must be >= 0"),
    ("missing.yaml", "file not found"),
])
def test_bad_perturbations_fail_clearly(text, message):
    with pytest.raises(PerturbationError, match=message):
        parse_perturbation(text)


def test_latency_delays_actions_by_whole_steps():
    env = make_env("wheel_legged", perturb="latency=3")
    env.reset(seed=0)
    applied = []
    for k in range(6):
        env.step(np.array([0.1 * (k + 1)]))
        applied.append(float(env.unwrapped.data.ctrl[0]))
    np.testing.assert_allclose(applied, [0, 0, 0, 0.1, 0.2, 0.3])
