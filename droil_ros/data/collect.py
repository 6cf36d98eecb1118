"""Collect transition datasets directly in the simulator (no ROS needed)."""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

from droil_ros.data.dataset import TransitionDataset
from droil_ros.errors import DroilError
from droil_ros.sim import human
from droil_ros.sim.envs import RobotEnv, make_env
from droil_ros.sim.rollout import Controller, make_controller


class NoisyController:
    """An expert with Gaussian action noise (std as a fraction of the half range): the
    executed, noisy action is what gets recorded, as for a weaker demonstrator."""

    def __init__(self, expert: Controller, env: RobotEnv, noise: float, seed: int):
        self.expert, self.robot, self.noise = expert, env.robot, noise
        self.half = (env.robot.action_high - env.robot.action_low) / 2
        self.rng = np.random.default_rng(seed)

    def reset(self) -> None:
        if hasattr(self.expert, "reset"):
            self.expert.reset()

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        action = self.expert(obs) + self.rng.normal(0.0, self.noise, self.half.shape) * self.half
        return self.robot.clip_action(action)


class HumanPanel:
    """Several simulated human demonstrators taking turns: session k is demonstrator k mod n.
    What is recorded is the person's own stick command."""

    def __init__(self, env: RobotEnv, n: int, seed: int):
        self.people = [human.HumanDemonstrator(env.robot, params, v_ref=env.task.v_ref, seed=seed + k)
                       for k, params in enumerate(human.demonstrators(n, seed))]
        self.session = -1

    @property
    def current(self) -> human.HumanDemonstrator:
        return self.people[self.session % len(self.people)]

    def reset(self) -> None:
        self.session += 1
        self.current.reset()

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return self.current(obs)


def make_expert(name: str, env: RobotEnv, noise: float, seed: int,
                demonstrators: int = 1) -> tuple[Controller, str]:
    """(controller, quality tag) for ``lqr``, ``noisy_lqr``, ``human`` or a path to an ONNX policy."""
    if name == "human":
        return HumanPanel(env, demonstrators, seed), "other"
    if name == "lqr":
        return make_controller("lqr", env), "expert"
    if name == "noisy_lqr":
        return NoisyController(make_controller("lqr", env), env, noise, seed), "other"
    if name.endswith(".onnx"):
        return make_controller(name, env), "expert"
    raise DroilError(f"unknown expert '{name}' (lqr, noisy_lqr, human or a .onnx policy)")


def collect(robot: str, expert: str, episodes: int, seed: int = 0, perturb=None,
            task: str | None = None, seconds: float | None = None, noise: float = 0.3,
            domain: str = "target", progress: bool = True, demonstrators: int = 1) -> TransitionDataset:
    """``episodes`` episodes from random initial tilts; a ``human`` session starts near upright
    (within START_TILT), as a person lets go of a robot held upright."""
    env = make_env(robot, task, perturb)
    controller, quality = make_expert(expert, env, noise, seed, demonstrators)
    starts = np.random.default_rng(seed).uniform(-human.START_TILT, human.START_TILT, episodes)
    max_steps = env.max_steps if seconds is None else int(round(seconds * env.robot.control_rate_hz))
    rows: dict[str, list] = {k: [] for k in ("observations", "actions", "next_observations",
                                             "rewards", "terminals", "timeouts", "episode_starts")}
    for episode in tqdm(range(episodes), desc=f"collect {expert}", disable=not progress, leave=False):
        options = {"tilt": starts[episode]} if expert == "human" else None
        obs, _ = env.reset(seed=seed + episode, options=options)
        if hasattr(controller, "reset"):
            controller.reset()
        for step in range(max_steps):
            action = env.robot.clip_action(controller(obs))
            next_obs, reward, terminated, truncated, _ = env.step(action)
            timeout = (truncated or step == max_steps - 1) and not terminated
            for key, value in (("observations", obs), ("actions", action),
                               ("next_observations", next_obs), ("rewards", reward),
                               ("terminals", terminated), ("timeouts", timeout),
                               ("episode_starts", step == 0)):
                rows[key].append(value)
            obs = next_obs
            if terminated or timeout:
                break
    who = f" demonstrators={demonstrators}" if expert == "human" else ""
    source = f"collect expert={expert}{who} episodes={episodes} seed={seed} perturb={env.perturbation}"
    data = TransitionDataset.from_arrays(env.robot, source, **rows).with_tags(domain, quality)
    return data.observe(env.robot.task_spec(env.task.name))  # the expert saw all; the task's policy sees this
