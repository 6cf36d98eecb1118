"""Environments for every robot, built from the robot spec, with perturbations attached."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from droil_ros.robots.spec import RobotSpec, load_spec
from droil_ros.sim.perturb import ModelPerturber, Perturbation, SignalPerturber, parse_perturbation
from droil_ros.sim.wheel_legged import WheelLeggedEnv


class RobotEnv(gym.Wrapper):
    """One robot and task: time limit from the task, perturbations, ``info['fell']``."""

    def __init__(self, env: gym.Env, robot: RobotSpec, task_name: str):
        super().__init__(env)
        self.robot = robot
        self.task = robot.task(task_name)
        self.max_steps = int(round(self.task.seconds * robot.control_rate_hz))
        self.perturber = ModelPerturber(env.unwrapped.model, robot)
        self.signals = SignalPerturber(Perturbation(), robot.action_low, robot.action_high)
        self._perturbation = Perturbation()
        self.steps = 0

    @property
    def perturbation(self) -> Perturbation:
        return self._perturbation

    def set_perturbation(self, perturbation) -> Perturbation:
        """Replace the active perturbation (model and signals); returns the parsed one."""
        parsed = parse_perturbation(perturbation)
        self.perturber.apply(parsed)
        self.signals = SignalPerturber(parsed, self.robot.action_low, self.robot.action_high)
        self._perturbation = parsed
        return parsed

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self.signals.reset(seed)
        self.steps = 0
        return self.signals.observation(np.asarray(obs, dtype=np.float64)), info

    def step(self, action):
        action = self.signals.action(np.asarray(action, dtype=np.float64))
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.steps += 1
        truncated = bool(truncated or self.steps >= self.max_steps)
        info = dict(info, fell=bool(terminated))
        obs = self.signals.observation(np.asarray(obs, dtype=np.float64))
        return obs, float(reward), bool(terminated), truncated, info


def make_env(robot: str | RobotSpec, task: str | None = None, perturb=None) -> RobotEnv:
    """Environment for ``robot`` (id, path or spec) on ``task`` (default: the spec's first)."""
    spec = robot if isinstance(robot, RobotSpec) else load_spec(robot)
    task_name = task or spec.default_task
    if spec.gymnasium_id:
        inner = gym.make(spec.gymnasium_id, disable_env_checker=True).unwrapped
    else:
        inner = WheelLeggedEnv(spec, spec.task(task_name))
    env = RobotEnv(inner, spec, task_name)
    env.set_perturbation(perturb)
    return env
