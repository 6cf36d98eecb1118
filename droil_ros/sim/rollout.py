"""Closed-loop episodes in the simulator and their summary statistics."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from droil_ros.errors import DroilError
from droil_ros.sim.envs import RobotEnv
from droil_ros.sim.human import HumanDemonstrator
from droil_ros.sim.lqr import LQRController

Controller = Callable[[np.ndarray], np.ndarray]
SPEED_SETTLE_SECONDS = 5.0  # speed tracking is judged after this much time


@dataclass
class Episode:
    seed: int
    fell: bool
    ret: float
    seconds: float
    max_tilt: float | None
    mean_speed: float | None  # mean x_dot after SPEED_SETTLE_SECONDS, where the robot has one

    def to_dict(self) -> dict:
        d = asdict(self)
        d["return"] = d.pop("ret")
        return d


def make_controller(name: str, env: RobotEnv) -> Controller:
    """``lqr`` (tracks the task's speed), ``human`` (the nominal simulated person), ``zero`` (no
    torque) or a path to an ONNX policy."""
    if name.endswith(".onnx"):
        from droil_ros.policy.runtime import OnnxPolicy

        return OnnxPolicy(name, env.robot)
    if name == "lqr":
        return LQRController(env.robot, v_ref=env.task.v_ref)
    if name == "human":
        return HumanDemonstrator(env.robot, v_ref=env.task.v_ref)
    if name == "zero":
        return lambda obs: np.zeros(env.robot.act_dim)
    raise DroilError(f"unknown controller '{name}' (known: lqr, human, zero, PATH.onnx)")


def run_episode(env: RobotEnv, controller: Controller, seed: int,
                max_seconds: float | None = None, options: dict | None = None) -> Episode:
    """One episode from ``env.reset(seed, options)`` (e.g. ``{"tilt": 0.02}``)."""
    names = env.robot.obs_names
    tilt_i = names.index("theta") if "theta" in names else None
    speed_i = names.index("x_dot") if "x_dot" in names else None
    obs, _ = env.reset(seed=seed, options=options)
    if hasattr(controller, "reset"):
        controller.reset()
    dt = env.robot.control_dt
    max_steps = env.max_steps if max_seconds is None else int(round(max_seconds / dt))
    total, steps, fell, max_tilt, speeds = 0.0, 0, False, 0.0, []
    while steps < max_steps:
        obs, reward, terminated, truncated, _ = env.step(controller(obs))
        total += reward
        steps += 1
        if tilt_i is not None:
            max_tilt = max(max_tilt, abs(float(obs[tilt_i])))
        if speed_i is not None and steps * dt > SPEED_SETTLE_SECONDS:
            speeds.append(float(obs[speed_i]))
        if terminated:
            fell = True
            break
        if truncated:
            break
    return Episode(
        seed=seed, fell=fell, ret=total, seconds=steps * dt,
        max_tilt=max_tilt if tilt_i is not None else None,
        mean_speed=float(np.mean(speeds)) if speeds else None,
    )


def summarise(episodes: list[Episode]) -> dict:
    returns = np.array([e.ret for e in episodes])
    tilts = [e.max_tilt for e in episodes if e.max_tilt is not None]
    speeds = [e.mean_speed for e in episodes if e.mean_speed is not None]
    return {
        "episodes_run": len(episodes),
        "fell": any(e.fell for e in episodes),
        "fall_rate": float(np.mean([e.fell for e in episodes])),
        "return": float(returns.mean()),
        "return_std": float(returns.std()),
        "seconds": float(np.mean([e.seconds for e in episodes])),
        "max_tilt": max(tilts) if tilts else None,
        "mean_speed": float(np.mean(speeds)) if speeds else None,
    }
