"""The simulated human demonstrator: seeded, within limits, mediocre but balancing, worse than LQR."""

import numpy as np

from droil_ros.data.collect import collect
from droil_ros.robots import load_spec
from droil_ros.sim.envs import make_env
from droil_ros.sim.human import HumanDemonstrator, HumanParams, demonstrators
from droil_ros.sim.lqr import LQRController
from droil_ros.sim.rollout import run_episode

SECONDS = 10.0


def _episode(controller, seed: int, task: str = "stand"):
    env = make_env("wheel_legged", task)
    return run_episode(env, controller, seed, max_seconds=SECONDS)


def test_demonstrators_and_their_actions_are_deterministic_given_the_seed():
    spec = load_spec("wheel_legged")
    assert demonstrators(3, seed=5) == demonstrators(3, seed=5)
    assert demonstrators(3, seed=5) != demonstrators(3, seed=6)

    def actions(seed: int) -> np.ndarray:
        env = make_env(spec, "stand")
        person = HumanDemonstrator(spec, demonstrators(1, seed)[0], seed=seed)
        obs, _ = env.reset(seed=0, options={"tilt": 0.02})
        out = []
        for _ in range(400):
            out.append(person(obs))
            obs, *_ = env.step(out[-1])
        return np.array(out)

    np.testing.assert_array_equal(actions(1), actions(1))
    assert not np.array_equal(actions(1), actions(2))


def test_actions_are_joystick_commands_within_limits():
    spec = load_spec("wheel_legged")
    person = HumanDemonstrator(spec, HumanParams(), seed=0)
    u_max = spec.action_high[0]
    rng = np.random.default_rng(0)
    actions = np.array([person(rng.normal(0, [0.5, 1.0, 5.0, 2.0])) for _ in range(400)])
    assert np.all(actions >= spec.action_low) and np.all(actions <= spec.action_high)
    levels = actions / (u_max / 127)
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-9)  # 8-bit stick steps
    reads = actions[:, 0].reshape(-1, person.hold_steps)
    assert np.all(reads == reads[:, :1])  # 50 Hz stick: each read held for 4 control steps
    assert np.all((actions == 0) | (np.abs(actions) >= 0.05 * u_max))  # dead zone


def test_balances_mediocrely_and_worse_than_the_lqr():
    """10 s episodes from the task's random tilts (30 s sessions: docs/results/human_demonstrator);
    driving costs the person most, its speed error weighing 5x."""
    spec = load_spec("wheel_legged")
    for task, low, high in (("stand", 0.8, 0.95), ("drive", 0.45, 0.85)):
        v_ref = spec.task(task).v_ref
        lqr = _episode(LQRController(spec, v_ref=v_ref), seed=0, task=task)
        person = _episode(HumanDemonstrator(spec, HumanParams(), v_ref=v_ref, seed=0), 0, task)
        assert not person.fell, task
        assert low * lqr.ret <= person.ret <= high * lqr.ret, (task, person.ret, lqr.ret)


def test_collect_records_the_persons_command_from_near_upright():
    data = collect("wheel_legged", "human", episodes=2, seconds=2.0, demonstrators=2, progress=False)
    assert len(data) == 800 and data.n_episodes == 2
    assert np.all(np.abs(data.observations[data.episode_starts, 0]) <= 0.05)
    lqr = LQRController(load_spec("wheel_legged"))
    lqr_actions = np.array([lqr(o) for o in data.observations])
    assert np.abs(data.actions - lqr_actions).mean() > 0.05  # not the LQR's torques
    assert data.meta["source"].startswith("collect expert=human demonstrators=2")
