"""Robot specs: the single contract for names, limits, scales, observation and action layout.

A spec is a YAML file under ``config/robots/``. The simulator, the observation builder used by
the ROS nodes, the dataset converter and the exported policy all read the same spec, and a
policy records the spec's ``id`` and ``hash`` so a mismatch is caught before it reaches a robot.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import yaml

from droil_ros.errors import SpecError
from droil_ros.resources import data_path

JOINT_SOURCES = ("joint_position", "joint_velocity", "joint_effort")
IMU_SOURCES = (
    "imu_roll", "imu_pitch", "imu_yaw",
    "imu_angular_velocity_x", "imu_angular_velocity_y", "imu_angular_velocity_z",
    "imu_linear_acceleration_x", "imu_linear_acceleration_y", "imu_linear_acceleration_z",
)
REDUCERS = {"mean": np.mean, "sum": np.sum}
REWARD_TERMS = ("alive", "theta", "x", "x_dot_error", "action")
# An observation element beyond +-this (in its own SI unit) is a broken sensor, not a state: the
# default of an element's optional ``low``/``high`` (a policy never saw such values in training).
OBS_BOUND = 1e6


@dataclass(frozen=True)
class SensorReadings:
    """What a JointState and an Imu message carry; quaternion in ROS order (x, y, z, w)."""

    joint_names: tuple[str, ...]
    position: np.ndarray
    velocity: np.ndarray
    effort: np.ndarray
    orientation: np.ndarray
    angular_velocity: np.ndarray
    linear_acceleration: np.ndarray


def quaternion_to_rpy(q_xyzw: np.ndarray) -> tuple[float, float, float]:
    """Roll, pitch, yaw (ZYX convention, as tf2) from a unit quaternion."""
    x, y, z, w = (float(v) for v in q_xyzw)
    roll = math.atan2(2.0 * (w * x + y * z), 1.0 - 2.0 * (x * x + y * y))
    pitch = math.asin(float(np.clip(2.0 * (w * y - z * x), -1.0, 1.0)))  # NaN stays NaN
    yaw = math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))
    return roll, pitch, yaw


@dataclass(frozen=True)
class ObsTerm:
    source: str
    joints: tuple[str, ...] = ()
    reduce: str = "mean"
    scale: float = 1.0


@dataclass(frozen=True)
class ObsElement:
    name: str
    unit: str
    terms: tuple[ObsTerm, ...]
    low: float = -OBS_BOUND  # plausible range: a policy node refuses values outside it
    high: float = OBS_BOUND


@dataclass(frozen=True)
class ActionElement:
    name: str
    unit: str
    low: float
    high: float
    actuators: dict[str, float]


@dataclass(frozen=True)
class Task:
    name: str
    seconds: float
    reward: dict[str, float] | str
    v_ref: float = 0.0
    init_tilt: float = 0.0
    fall_tilt: float = math.inf


@dataclass(frozen=True)
class RobotSpec:
    id: str
    description: str
    control_rate_hz: float
    joints: tuple[str, ...]
    actuators: dict[str, str]  # actuator name -> joint name
    action: tuple[ActionElement, ...]
    tasks: dict[str, Task]
    hash: str
    source: Path
    model_path: Path | None = None
    gymnasium_id: str | None = None
    observation: tuple[ObsElement, ...] = ()
    gymnasium_obs_dim: int = 0
    imu: dict[str, str] = field(default_factory=dict)
    geometry: dict[str, float] = field(default_factory=dict)
    perturbation_targets: dict[str, str] = field(default_factory=dict)

    @property
    def obs_dim(self) -> int:
        return len(self.observation) if self.observation else self.gymnasium_obs_dim

    @property
    def act_dim(self) -> int:
        return len(self.action)

    @cached_property
    def obs_names(self) -> list[str]:
        if self.observation:
            return [e.name for e in self.observation]
        return [f"obs_{i}" for i in range(self.gymnasium_obs_dim)]

    @cached_property
    def action_names(self) -> list[str]:
        return [a.name for a in self.action]

    @cached_property
    def obs_low(self) -> np.ndarray:
        """Plausible range of each observation element (Gymnasium robots: +-OBS_BOUND)."""
        return np.array([e.low for e in self.observation] or [-OBS_BOUND] * self.obs_dim)

    @cached_property
    def obs_high(self) -> np.ndarray:
        return np.array([e.high for e in self.observation] or [OBS_BOUND] * self.obs_dim)

    @cached_property
    def uses_orientation(self) -> bool:
        """The observation reads the IMU's orientation (roll, pitch or yaw)."""
        return any(t.source in IMU_SOURCES[:3] for e in self.observation for t in e.terms)

    @cached_property
    def action_low(self) -> np.ndarray:
        return np.array([a.low for a in self.action])

    @cached_property
    def action_high(self) -> np.ndarray:
        return np.array([a.high for a in self.action])

    @property
    def control_dt(self) -> float:
        return 1.0 / self.control_rate_hz

    @property
    def uses_sensor_observation(self) -> bool:
        """True when the observation is built from JointState + Imu (servable over ROS)."""
        return bool(self.observation)

    def task(self, name: str) -> Task:
        if name not in self.tasks:
            raise SpecError(f"robot '{self.id}' has no task '{name}' (tasks: {', '.join(self.tasks)})")
        return self.tasks[name]

    def clip_action(self, action: np.ndarray) -> np.ndarray:
        """Clip to limits; NaN/Inf become 0 (the safe action) so a command is always finite."""
        a = np.asarray(action, dtype=np.float64).reshape(self.act_dim)
        a = np.where(np.isfinite(a), a, 0.0)
        return np.minimum(np.maximum(a, self.action_low), self.action_high)

    @cached_property
    def action_gains(self) -> np.ndarray:
        """Matrix (n_actuators, act_dim) mapping an action to per-actuator commands."""
        names = list(self.actuators)
        gains = np.zeros((len(names), self.act_dim))
        for j, element in enumerate(self.action):
            for actuator, gain in element.actuators.items():
                gains[names.index(actuator), j] = gain
        return gains

    def action_to_command(self, action: np.ndarray) -> np.ndarray:
        """Clipped action -> one effort per actuator, in the order of ``actuators``."""
        return self.action_gains @ self.clip_action(action)

    @cached_property
    def _command_inverse(self) -> np.ndarray:
        return np.linalg.pinv(self.action_gains)

    def command_to_action(self, effort: np.ndarray) -> np.ndarray:
        """Per-actuator efforts -> the action whose command comes closest (least squares), e.g.
        the mean of the two wheel torques: how a simulator or a bag reads a command."""
        return self._command_inverse @ np.asarray(effort, dtype=np.float64)

    def build_observation(self, readings: SensorReadings) -> np.ndarray:
        """Observation vector from sensor readings, joints looked up by name."""
        if not self.observation:
            raise SpecError(f"robot '{self.id}' observes through Gymnasium, not JointState/Imu")
        index = {name: i for i, name in enumerate(readings.joint_names)}
        rpy = quaternion_to_rpy(readings.orientation)
        imu_values = {
            "imu_roll": rpy[0], "imu_pitch": rpy[1], "imu_yaw": rpy[2],
            **{f"imu_angular_velocity_{a}": readings.angular_velocity[i] for i, a in enumerate("xyz")},
            **{f"imu_linear_acceleration_{a}": readings.linear_acceleration[i]
               for i, a in enumerate("xyz")},
        }
        fields = {
            "joint_position": readings.position,
            "joint_velocity": readings.velocity,
            "joint_effort": readings.effort,
        }
        obs = np.zeros(len(self.observation))
        for k, element in enumerate(self.observation):
            for term in element.terms:
                if term.source in imu_values:
                    value = imu_values[term.source]
                else:
                    values = fields[term.source]
                    missing = [j for j in term.joints if j not in index]
                    if missing:
                        raise ValueError(f"joint state lacks joints {missing} needed for '{element.name}'")
                    picked = [index[j] for j in term.joints]
                    if max(picked) >= len(values):
                        raise ValueError(f"joint state has no {term.source} for '{element.name}'")
                    value = REDUCERS[term.reduce](np.asarray(values)[picked])
                obs[k] += term.scale * value
        return obs


def task_rewards(robot: RobotSpec, task: Task, next_obs: np.ndarray, actions: np.ndarray,
                 times: np.ndarray) -> np.ndarray:
    """The task reward for many transitions (s', a, time of s' since the reset):
    alive - sum_k w_k * term_k^2; NaN where the task has no such reward."""
    names = robot.obs_names
    if not isinstance(task.reward, dict) or not {"theta", "x", "x_dot"} <= set(names):
        return np.full(len(next_obs), np.nan)
    w = task.reward
    theta, x, x_dot = (next_obs[:, names.index(n)] for n in ("theta", "x", "x_dot"))
    x_ref = task.v_ref * times
    effort = np.sum((actions / robot.action_high) ** 2, axis=1)
    return (w.get("alive", 0.0) - w.get("theta", 0.0) * theta**2 - w.get("x", 0.0) * (x - x_ref) ** 2
            - w.get("x_dot_error", 0.0) * (x_dot - task.v_ref) ** 2 - w.get("action", 0.0) * effort)


def _require(raw: dict, key: str, where: str):
    if key not in raw:
        raise SpecError(f"{where}: missing '{key}'")
    return raw[key]


def _parse_observation(raw, joints: tuple[str, ...], where: str):
    if isinstance(raw, dict) and raw.get("source") == "gymnasium":
        dim = raw.get("dim")
        if not isinstance(dim, int) or dim <= 0:
            raise SpecError(f"{where}: gymnasium observation needs a positive integer 'dim'")
        return (), dim
    if not isinstance(raw, list) or not raw:
        raise SpecError(f"{where}: 'observation' must be a non-empty list or {{source: gymnasium}}")
    elements = []
    for item in raw:
        name = _require(item, "name", f"{where}: observation element")
        terms = []
        for t in _require(item, "terms", f"{where}: observation '{name}'"):
            source = _require(t, "source", f"{where}: observation '{name}' term")
            term_joints = tuple(t.get("joints", ()))
            if source in JOINT_SOURCES:
                if not term_joints:
                    raise SpecError(f"{where}: observation '{name}': {source} needs 'joints'")
                unknown = [j for j in term_joints if j not in joints]
                if unknown:
                    raise SpecError(f"{where}: observation '{name}' names unknown joints {unknown}")
            elif source not in IMU_SOURCES:
                raise SpecError(f"{where}: observation '{name}': unknown source '{source}'")
            reduce = t.get("reduce", "mean")
            if reduce not in REDUCERS:
                raise SpecError(f"{where}: observation '{name}': unknown reduce '{reduce}'")
            terms.append(ObsTerm(source, term_joints, reduce, float(t.get("scale", 1.0))))
        low, high = float(item.get("low", -OBS_BOUND)), float(item.get("high", OBS_BOUND))
        if not low < high:
            raise SpecError(f"{where}: observation '{name}': low must be below high")
        elements.append(ObsElement(name, str(item.get("unit", "")), tuple(terms), low, high))
    return tuple(elements), 0


def _parse_tasks(raw: dict, where: str) -> dict[str, Task]:
    if not isinstance(raw, dict) or not raw:
        raise SpecError(f"{where}: 'tasks' must be a non-empty mapping")
    tasks = {}
    for name, t in raw.items():
        reward = _require(t, "reward", f"{where}: task '{name}'")
        if isinstance(reward, dict):
            unknown = set(reward) - set(REWARD_TERMS)
            if unknown:
                raise SpecError(f"{where}: task '{name}': unknown reward terms {sorted(unknown)}")
        elif reward != "gymnasium":
            raise SpecError(f"{where}: task '{name}': reward must be a mapping or 'gymnasium'")
        seconds = float(_require(t, "seconds", f"{where}: task '{name}'"))
        tasks[name] = Task(
            name=name, seconds=seconds, reward=reward, v_ref=float(t.get("v_ref", 0.0)),
            init_tilt=float(t.get("init_tilt", 0.0)), fall_tilt=float(t.get("fall_tilt", math.inf)),
        )
    return tasks


def available_robots() -> list[str]:
    return sorted(p.stem for p in data_path("config", "robots").glob("*.yaml"))


def resolve_spec_path(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise SpecError(f"robot spec file not found: {path}")
        return path
    candidate = data_path("config", "robots", f"{name_or_path}.yaml")
    if not candidate.is_file():
        raise SpecError(
            f"unknown robot '{name_or_path}' (available: {', '.join(available_robots())})"
        )
    return candidate


def load_spec(name_or_path: str | Path) -> RobotSpec:
    """Load and validate a robot spec by id (``wheel_legged``) or by YAML path."""
    path = resolve_spec_path(name_or_path)
    where = str(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SpecError(f"{where}: not valid YAML ({exc.__class__.__name__})") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: a robot spec must be a YAML mapping")
    try:
        return _parse_spec(raw, path)
    except (TypeError, ValueError, AttributeError) as exc:
        raise SpecError(f"{where}: malformed spec ({exc})") from None


def _parse_spec(raw: dict, path: Path) -> RobotSpec:
    where = str(path)
    spec_id = str(_require(raw, "id", where))
    joints = tuple(_require(raw, "joints", where))
    actuators = {}
    for a in _require(raw, "actuators", where):
        joint = _require(a, "joint", f"{where}: actuator")
        if joint not in joints:
            raise SpecError(f"{where}: actuator '{a.get('name')}' drives unknown joint '{joint}'")
        actuators[str(_require(a, "name", f"{where}: actuator"))] = joint
    action = []
    for a in _require(raw, "action", where):
        name = _require(a, "name", f"{where}: action element")
        low, high = float(_require(a, "low", f"{where}: action '{name}'")), float(a.get("high"))
        if not low < high:
            raise SpecError(f"{where}: action '{name}': low must be below high")
        gains = {str(k): float(v) for k, v in _require(a, "actuators", f"{where}: action '{name}'").items()}
        unknown = set(gains) - set(actuators)
        if unknown:
            raise SpecError(f"{where}: action '{name}' drives unknown actuators {sorted(unknown)}")
        action.append(ActionElement(name, str(a.get("unit", "")), low, high, gains))
    observation, gym_dim = _parse_observation(_require(raw, "observation", where), joints, where)
    model_path = raw.get("model")
    gymnasium_id = raw.get("gymnasium_id")
    if (model_path is None) == (gymnasium_id is None):
        raise SpecError(f"{where}: give exactly one of 'model' (MJCF) or 'gymnasium_id'")
    if model_path is not None:
        model_path = data_path(model_path)
        if not model_path.is_file():
            raise SpecError(f"{where}: model file not found: {model_path}")
    rate = float(_require(raw, "control_rate_hz", where))
    if not rate > 0:
        raise SpecError(f"{where}: control_rate_hz must be positive")
    canonical = json.dumps(raw, sort_keys=True, default=str).encode()
    return RobotSpec(
        id=spec_id,
        description=str(raw.get("description", "")).strip(),
        control_rate_hz=rate,
        joints=joints,
        actuators=actuators,
        action=tuple(action),
        tasks=_parse_tasks(_require(raw, "tasks", where), where),
        hash=hashlib.sha256(canonical).hexdigest()[:16],
        source=path,
        model_path=model_path,
        gymnasium_id=gymnasium_id,
        observation=observation,
        gymnasium_obs_dim=gym_dim,
        imu=dict(raw.get("imu") or {}),
        geometry={k: float(v) for k, v in (raw.get("geometry") or {}).items()},
        perturbation_targets=dict(raw.get("perturbation_targets") or {}),
    )
