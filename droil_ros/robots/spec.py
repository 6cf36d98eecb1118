"""Robot specs: the single contract for names, limits, scales, observation and action layout.

A spec is a YAML file under ``config/robots/`` or in a folder of ``DROIL_ROBOT_PATH``. The
simulator, the observation builder used by the ROS nodes, the dataset converter and the exported
policy all read the same spec; datasets and policies record the spec's ``id``, ``hash`` and YAML
text, so a mismatch is caught before it reaches a robot and a user's robot travels with its data.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field, fields, replace
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
TOPIC_SOURCE = "topic"  # a field of any message: topic, type and field path in the term
REDUCERS = {"mean": np.mean, "sum": np.sum}
REWARD_TERMS = ("alive", "theta", "x", "x_dot_error", "action")
SPEC_KEYS = ("id", "description", "model", "gymnasium_id", "control_rate_hz", "geometry", "joints",
             "imu", "actuators", "observation", "action", "perturbation_targets", "tasks", "ros")
ROBOT_PATH_ENV = "DROIL_ROBOT_PATH"
MESSAGE_TYPE = re.compile(r"[A-Za-z]\w*/msg/[A-Za-z]\w*")
FIELD_PATH = re.compile(r"[A-Za-z]\w*(\[\d+\])*(\.[A-Za-z]\w*(\[\d+\])*)*")
TOPIC_NAME = re.compile(r"/?[A-Za-z_]\w*(/[A-Za-z_]\w*)*")  # absolute, or relative to a namespace
COMMAND_KINDS = ("effort", "velocity", "position")
JOINT_ORDERS = ("by_name", "by_index")
# An observation element beyond +-this (in its own SI unit) is a broken sensor, not a state: the
# default of an element's optional ``low``/``high`` (a policy never saw such values in training).
OBS_BOUND = 1e6
PAIRINGS = ("answer", "hold")
SYNCS = ("nearest", "interpolate_imu", "interpolate_joints")


@dataclass(frozen=True)
class SensorReadings:
    """What a JointState and an Imu message carry; quaternion in ROS order (x, y, z, w).
    ``messages``: the latest message of each topic that ``source: topic`` terms read."""

    joint_names: tuple[str, ...]
    position: np.ndarray
    velocity: np.ndarray
    effort: np.ndarray
    orientation: np.ndarray
    angular_velocity: np.ndarray
    linear_acceleration: np.ndarray
    messages: dict = field(default_factory=dict)


@functools.lru_cache(maxsize=256)
def field_path_parts(path: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """``points[0].velocities`` -> (("points", (0,)), ("velocities", ())), parsed once per path
    (the nodes read and write fields at every tick)."""
    return tuple((name, tuple(int(i) for i in re.findall(r"\d+", indexes)))
                 for name, indexes in re.findall(r"(\w+)((?:\[\d+\])*)", path))


def columns(names, within) -> list[int]:
    """Where each of ``names`` sits in ``within``: the observation columns a task's view picks
    (``RobotSpec.with_observation``); ValueError naming those ``within`` lacks."""
    where = {name: k for k, name in enumerate(within)}
    missing = [n for n in names if n not in where]
    if missing:
        raise ValueError(f"no observation {missing} (there are {list(within)})")
    return [where[n] for n in names]


def message_field(msg, path: str) -> np.ndarray:
    """The numbers at a field path (``points[0].velocities``) of a decoded message, flattened."""
    value = msg
    for name, indexes in field_path_parts(path):
        value = getattr(value, name)
        for i in indexes:
            value = value[i]
    return np.asarray(value, np.float64).ravel()


def quaternion_to_rpy(q_xyzw: np.ndarray) -> tuple[float, float, float]:
    """Roll, pitch, yaw (ZYX convention, as tf2) from a unit quaternion."""
    x, y, z, w = (float(v) for v in q_xyzw)
    roll = math.atan2(2.0 * (w * x + y * z), 1.0 - 2.0 * (x * x + y * y))
    pitch = math.asin(min(max(2.0 * (w * y - z * x), -1.0), 1.0))  # NaN stays NaN (it comes first)
    yaw = math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))
    return roll, pitch, yaw


@dataclass(frozen=True)
class ObsTerm:
    """``scale * (reduce(values) + offset)``; ``unwrap``: an angle that wraps at +-pi is followed
    across the wrap (each joint's value before the reduction), which needs the previous message:
    see ``ObservationBuilder``. ``source: topic`` reads ``field`` of the ``type`` messages on
    ``topic`` (the bag converter and the nodes read the latest one)."""

    source: str
    joints: tuple[str, ...] = ()
    reduce: str = "mean"
    scale: float = 1.0
    offset: float = 0.0
    unwrap: bool = False
    topic: str = ""
    type: str = ""
    field: str = ""

    @property
    def linear(self) -> bool:
        """A fixed weighting of values of one JointState + Imu (mean and sum are linear): what
        ``RobotSpec``'s observation plan computes as one product; topic and unwrap terms are not."""
        return self.source != TOPIC_SOURCE and not self.unwrap


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
    observation: tuple[str, ...] = ()  # what a policy for this task sees; (): all of it


@dataclass(frozen=True)
class RosInterface:
    """The robot's ROS interface (spec section ``ros``; defaults: what sim_bridge speaks), read by
    the nodes and the bag converter. Topics are ROS names as written: a relative one resolves in a
    node's namespace (a bag's topics are absolute: there it resolves at the root); remapping with
    ``--ros-args -r`` applies on top. ``joints: by_index`` reads JointStates
    without names, their values in the order of the spec's ``joints``. ``command_type`` is any
    ``pkg/msg/Type`` (a bag carries the definitions of its types); ``command_field`` is the field
    path, or one path per actuator, holding the actuators' values (``data``, ``velocity``,
    ``points[0].velocities``). ``pairing``: ``answer`` (the command computed from a state) or
    ``hold`` (the setpoint in force at a state); ``sync``: a state is a JointState with the
    ``nearest`` Imu, with the Imu interpolated to its stamp (``interpolate_imu``), or an Imu
    with the JointStates interpolated to its stamp (``interpolate_joints``)."""

    state_topic: str = "joint_states"
    imu_topic: str = "imu/data"
    command_topic: str = "effort_controller/commands"
    command_type: str = "std_msgs/msg/Float64MultiArray"
    command_field: tuple[str, ...] = ("data",)
    command_kind: str = "effort"
    joints: str = "by_name"
    pairing: str = "answer"
    sync: str = "nearest"


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
    ros: RosInterface = field(default_factory=RosInterface)
    text: str = ""  # the YAML as written: datasets and policies carry it

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
    def uses_imu(self) -> bool:
        return any(t.source in IMU_SOURCES for e in self.observation for t in e.terms)

    @cached_property
    def topic_inputs(self) -> dict[str, str]:
        """Topic -> message type of the ``source: topic`` terms."""
        return {t.topic: t.type for e in self.observation for t in e.terms if t.source == TOPIC_SOURCE}

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

    def require_model(self) -> Path:
        """The MJCF file, or why the simulator cannot run this robot (one line)."""
        if self.model_path is None:
            raise SpecError(f"robot '{self.id}' has no model: the simulator needs 'model:' (MJCF) in "
                            f"its spec ({self.source})")
        if not self.model_path.is_file():
            raise SpecError(f"robot '{self.id}': model file not found: {self.model_path}")
        return self.model_path

    @property
    def default_task(self) -> str:
        """The task every command uses when none is named: the spec's first."""
        return next(iter(self.tasks))

    def task(self, name: str) -> Task:
        if name not in self.tasks:
            raise SpecError(f"robot '{self.id}' has no task '{name}' (tasks: {', '.join(self.tasks)})")
        return self.tasks[name]

    def with_observation(self, names) -> RobotSpec:
        """This robot observed through ``names``, a subset of its observation in any order (a task
        that must not see some elements: driving without the position x). Same id and hash: data
        and policies made with it carry these names, and a policy picks them by name from the
        whole observation the simulator and the nodes build."""
        names = list(names)
        if names == self.obs_names:
            return self
        by_name = {e.name: e for e in self.observation}
        unknown = [n for n in names if n not in by_name]
        if unknown or not names or len(set(names)) != len(names):
            raise SpecError(f"robot '{self.id}': observation {names} is not a subset of its observation "
                            f"{self.obs_names}")
        return replace(self, observation=tuple(by_name[n] for n in names))

    def task_spec(self, name: str) -> RobotSpec:
        """The robot as a policy for task ``name`` observes it (the task's ``observation``)."""
        task = self.task(name)
        return self.with_observation(task.observation) if task.observation else self

    def clip_action(self, action: np.ndarray) -> np.ndarray:
        """Clip to limits; NaN/Inf become 0 (the safe action) so a command is always finite."""
        a = np.asarray(action, dtype=np.float64).reshape(self.act_dim)
        finite = np.isfinite(a)
        if not finite.all():
            a = np.where(finite, a, 0.0)
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
        """Observation vector from one message's sensor readings, joints looked up by name. Terms
        with ``unwrap`` take the angle as read (within +-pi): following it across the wrap needs
        the messages before, which ``observation_builder()`` keeps."""
        return self._observe(readings, None)

    def observation_builder(self) -> ObservationBuilder:
        """A builder that unwraps ``unwrap`` terms along a stream of readings (one per stream)."""
        return ObservationBuilder(self)

    def _observe(self, readings: SensorReadings, history: dict | None) -> np.ndarray:
        if not self.observation:
            raise SpecError(f"robot '{self.id}' observes through Gymnasium, not JointState/Imu")
        plan = self._plan(readings)
        if self.uses_orientation:
            rpy = quaternion_to_rpy(readings.orientation)
        else:
            rpy = (0.0, 0.0, 0.0)
        raw = np.concatenate((readings.position, readings.velocity, readings.effort, rpy,
                              readings.angular_velocity, readings.linear_acceleration))
        obs = plan.weights @ raw[plan.columns] + self._obs_offsets
        for k, n, term, element in self._stream_terms:
            if term.source == TOPIC_SOURCE:
                values = _topic_values(readings, term, element.name)
            else:
                values = raw[plan.stream_columns[(k, n)]]
            if term.unwrap and history is not None:
                values = _unwrap(history, (k, n), values)
            obs[k] += term.scale * (REDUCERS[term.reduce](values) + term.offset)
        return obs

    @cached_property
    def _stream_terms(self) -> tuple:
        """The terms outside the linear plan: those that read a topic or unwrap an angle."""
        return tuple((k, n, term, element) for k, element in enumerate(self.observation)
                     for n, term in enumerate(element.terms) if not term.linear)

    @cached_property
    def _obs_offsets(self) -> np.ndarray:
        return np.array([sum(t.scale * t.offset for t in e.terms if t.linear) for e in self.observation])

    @cached_property
    def _plans(self) -> dict:
        return {}

    def _plan(self, readings: SensorReadings) -> _ObservationPlan:
        """The plan for this JointState layout (names and field lengths), made once per layout:
        a tick then does one gather and one small matrix product, no per-joint lookups."""
        key = (tuple(readings.joint_names), len(readings.position), len(readings.velocity),
               len(readings.effort))
        plan = self._plans.get(key)
        if plan is None:
            plan = _ObservationPlan(self.observation, *key)
            if len(self._plans) >= 16:  # a peer cycling joint orders cannot grow it without bound
                self._plans.clear()
            self._plans[key] = plan
        return plan


def _topic_values(readings: SensorReadings, term: ObsTerm, name: str) -> np.ndarray:
    if term.topic not in readings.messages:
        raise ValueError(f"no message on {term.topic} for '{name}'")
    try:
        values = message_field(readings.messages[term.topic], term.field)
    except (AttributeError, IndexError, TypeError, ValueError) as exc:
        raise ValueError(f"{term.topic} has no usable {term.field} for '{name}' "
                         f"({type(exc).__name__})") from None
    if not values.size:
        raise ValueError(f"{term.topic} has no {term.field} for '{name}'")
    return values


class _ObservationPlan:
    """Where each observation element's values sit in the readings laid out as one vector
    (positions, velocities, efforts, roll-pitch-yaw, angular velocity, linear acceleration):
    the linear terms (mean and sum are linear) as weights on the columns they read, the others
    as their columns. Only read columns enter, so a NaN on a joint the robot does not observe
    stays out of the observation. ValueError, with the element, when the layout lacks a joint or
    a field a term needs."""

    def __init__(self, observation: tuple[ObsElement, ...], names: tuple[str, ...],
                 n_position: int, n_velocity: int, n_effort: int):
        index = {name: i for i, name in enumerate(names)}
        base = {"joint_position": 0, "joint_velocity": n_position, "joint_effort": n_position + n_velocity}
        size = {"joint_position": n_position, "joint_velocity": n_velocity, "joint_effort": n_effort}
        imu_base = n_position + n_velocity + n_effort
        weights: dict[int, np.ndarray] = {}
        self.stream_columns: dict[tuple[int, int], np.ndarray] = {}
        for k, element in enumerate(observation):
            for n, term in enumerate(element.terms):
                if term.source == TOPIC_SOURCE:
                    continue
                if term.source in IMU_SOURCES:
                    columns = [imu_base + IMU_SOURCES.index(term.source)]
                else:
                    missing = [j for j in term.joints if j not in index]
                    if missing:
                        raise ValueError(f"joint state lacks joints {missing} needed for '{element.name}'")
                    picked = [index[j] for j in term.joints]
                    if max(picked) >= size[term.source]:
                        raise ValueError(f"joint state has no {term.source} for '{element.name}'")
                    columns = [base[term.source] + i for i in picked]
                if not term.linear:  # an unwrap term: its columns, for the caller
                    self.stream_columns[(k, n)] = np.array(columns)
                    continue
                share = term.scale / (len(columns) if term.reduce == "mean" else 1.0)
                for column in columns:
                    weights.setdefault(column, np.zeros(len(observation)))[k] += share
        self.columns = np.array(sorted(weights), dtype=np.intp)
        self.weights = (np.stack([weights[c] for c in self.columns], axis=1) if weights
                        else np.zeros((len(observation), 0)))


def _unwrap(history: dict, key, values: np.ndarray) -> np.ndarray:
    """Follow angles across +-pi: each step is the wrapped difference to the previous reading."""
    out = values
    if key in history:
        raw, unwrapped = history[key]
        step = np.mod(values - raw + math.pi, 2 * math.pi) - math.pi
        out = np.where(np.isfinite(step), unwrapped + step, values)  # after a NaN: starts over
    history[key] = (values, out)
    return out


class ObservationBuilder:
    """``RobotSpec.build_observation`` for a stream of readings, ``unwrap`` terms followed across
    the wrap from the first reading on. The bag converter uses one per recording; a node serving
    a spec with ``unwrap`` terms needs one per sensor stream (restarted on a reset), so that the
    policy sees what the dataset holds."""

    def __init__(self, robot: RobotSpec):
        self.robot = robot
        self.history: dict = {}

    def __call__(self, readings: SensorReadings) -> np.ndarray:
        return self.robot._observe(readings, self.history)


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
            elif source == TOPIC_SOURCE:
                topic, msgtype, path = (str(t.get(k, "")).strip() for k in ("topic", "type", "field"))
                if not (TOPIC_NAME.fullmatch(topic) and MESSAGE_TYPE.fullmatch(msgtype)
                        and FIELD_PATH.fullmatch(path)):
                    raise SpecError(f"{where}: observation '{name}': source topic needs 'topic', "
                                    f"'type' (pkg/msg/Type) and 'field' (a field path)")
            elif source not in IMU_SOURCES:
                raise SpecError(f"{where}: observation '{name}': unknown source '{source}'")
            reduce = t.get("reduce", "mean")
            if reduce not in REDUCERS:
                raise SpecError(f"{where}: observation '{name}': unknown reduce '{reduce}'")
            _refuse_unknown(t, [f.name for f in fields(ObsTerm)], f"{where}: observation '{name}' term")
            terms.append(ObsTerm(source, term_joints, reduce, float(t.get("scale", 1.0)),
                                 float(t.get("offset", 0.0)), bool(t.get("unwrap", False)),
                                 *(str(t.get(k, "")) for k in ("topic", "type", "field"))))
        low, high = float(item.get("low", -OBS_BOUND)), float(item.get("high", OBS_BOUND))
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise SpecError(f"{where}: observation '{name}': low and high must be finite, low below high")
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
        observation = t.get("observation") or ()
        if not isinstance(observation, list | tuple) or not all(isinstance(n, str) for n in observation):
            raise SpecError(f"{where}: task '{name}': observation must be a list of observation names")
        tasks[name] = Task(
            name=name, seconds=seconds, reward=reward, v_ref=float(t.get("v_ref", 0.0)),
            init_tilt=float(t.get("init_tilt", 0.0)), fall_tilt=float(t.get("fall_tilt", math.inf)),
            observation=tuple(observation),
        )
    return tasks


def robot_dirs() -> list[Path]:
    """Folders searched for ``<id>.yaml``: the shipped config/robots, then each folder of
    ``DROIL_ROBOT_PATH`` (colon-separated), which adds robots and never hides a shipped one."""
    dirs = [data_path("config", "robots")]
    for entry in os.environ.get(ROBOT_PATH_ENV, "").split(os.pathsep):
        if not entry:
            continue
        folder = Path(entry).expanduser()
        if not folder.is_dir():
            raise SpecError(f"{ROBOT_PATH_ENV} names a folder that does not exist: {folder}")
        if folder.resolve() not in {d.resolve() for d in dirs}:
            dirs.append(folder)
    return dirs


def _spec_files() -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    for folder in robot_dirs():
        for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
            found.setdefault(path.stem, []).append(path)
    return found


def available_robots() -> list[str]:
    return sorted(_spec_files())


def resolve_spec_path(name_or_path: str | Path) -> Path:
    """A YAML path as given, or the one file of that id on the search path. An id in two files is
    refused rather than picked: policies and datasets name their robot by id."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise SpecError(f"robot spec file not found: {path}")
        return path
    files = _spec_files()
    matches = files.get(str(name_or_path), [])
    if not matches:
        raise SpecError(f"unknown robot '{name_or_path}' (available: {', '.join(sorted(files))}; "
                        f"add your spec's folder to {ROBOT_PATH_ENV} or give its YAML path)")
    if len(matches) > 1:
        raise SpecError(f"robot '{name_or_path}' is ambiguous: {matches[0]} and {matches[1]} "
                        f"(ids must be unique across config/robots and {ROBOT_PATH_ENV})")
    return matches[0]


def load_spec(name_or_path: str | Path) -> RobotSpec:
    """Load and validate a robot spec by id (``wheel_legged``, on the search path) or YAML path."""
    path = resolve_spec_path(name_or_path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot read ({exc.__class__.__name__})") from None
    spec = parse_spec(text, path)
    if path != Path(name_or_path) and spec.id != str(name_or_path):
        raise SpecError(f"{path}: its id is '{spec.id}'; a spec found by id must be named <id>.yaml")
    return spec


def parse_spec(text: str, source: Path, where: str | None = None, check_model: bool = True) -> RobotSpec:
    """A spec from its YAML ``text``; ``source`` is where it was written (a relative model resolves
    beside it). A copy embedded in a dataset or policy is parsed with ``check_model=False``: its
    model need not exist on this machine until a simulator needs it."""
    where = where or str(source)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"{where}: not valid YAML ({exc.__class__.__name__})") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: a robot spec must be a YAML mapping")
    try:
        return _parse_spec(raw, source, where, text, check_model)
    except (TypeError, ValueError, AttributeError) as exc:
        raise SpecError(f"{where}: malformed spec ({exc})") from None


def _refuse_unknown(raw: dict, known, where: str) -> None:
    unknown = [str(k) for k in raw if k not in known]
    if unknown:
        raise SpecError(f"{where}: unknown key{'s' if len(unknown) > 1 else ''} "
                        f"{', '.join(repr(k) for k in unknown)} (known: {', '.join(known)})")


def _parse_ros(raw, where: str) -> RosInterface:
    if raw is None:
        return RosInterface()
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: 'ros' must be a mapping")
    _refuse_unknown(raw, [f.name for f in fields(RosInterface)], f"{where}: ros")
    values = {k: str(v).strip() for k, v in raw.items() if k != "command_field"}
    if "command_field" in raw:
        paths = raw["command_field"]
        paths = tuple(str(p).strip() for p in (paths if isinstance(paths, list) else [paths]))
        bad = [p for p in paths if not FIELD_PATH.fullmatch(p)]
        if bad or not paths:
            raise SpecError(f"{where}: ros.command_field {bad[0] if bad else '[]'!r} is not a field "
                            f"path (e.g. data, velocity, points[0].velocities)")
        values["command_field"] = paths
    for key in ("state_topic", "imu_topic", "command_topic"):
        if key in values and not TOPIC_NAME.fullmatch(values[key]):
            raise SpecError(f"{where}: ros.{key} '{values[key]}' is not a topic name")
    if "command_type" in values:
        package, _, name = values["command_type"].rpartition("/")
        if not package.endswith("/msg"):  # ROS 1 style std_msgs/Float64MultiArray
            values["command_type"] = f"{package}/msg/{name}"
    ros = RosInterface(**values)
    if not MESSAGE_TYPE.fullmatch(ros.command_type):
        raise SpecError(f"{where}: ros.command_type '{raw['command_type']}' is not a message type "
                        f"(pkg/msg/Type)")
    for key, choices in (("command_kind", COMMAND_KINDS), ("joints", JOINT_ORDERS),
                         ("pairing", PAIRINGS), ("sync", SYNCS)):
        if getattr(ros, key) not in choices:
            raise SpecError(f"{where}: ros.{key} '{raw[key]}' is not supported (one of: "
                            f"{', '.join(choices)})")
    return ros


def _resolve_model(model: str, source: Path, where: str, check: bool) -> Path:
    """Relative to the spec's folder, else to the package's share (the shipped specs, and copies
    of them, name ``models/robots/<id>.xml``)."""
    path = Path(model).expanduser()
    if path.is_absolute():
        candidates = [path]
    else:
        candidates = [source.parent / path, data_path(model)]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    if check:
        raise SpecError(f"{where}: model file not found: {' or '.join(map(str, candidates))}")
    return candidates[0]


def _parse_spec(raw: dict, path: Path, where: str, text: str, check_model: bool) -> RobotSpec:
    _refuse_unknown(raw, SPEC_KEYS, where)
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
    if model_path is not None and gymnasium_id is not None:
        raise SpecError(f"{where}: give 'model' (MJCF) or 'gymnasium_id', not both")
    if model_path is not None:
        model_path = _resolve_model(str(model_path), path, where, check_model)
    rate = float(_require(raw, "control_rate_hz", where))
    if not rate > 0:
        raise SpecError(f"{where}: control_rate_hz must be positive")
    canonical = json.dumps(raw, sort_keys=True, default=str).encode()
    spec = RobotSpec(
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
        ros=_parse_ros(raw.get("ros"), where),
        text=text,
    )
    for name in spec.tasks:
        try:
            spec.task_spec(name)
        except SpecError as exc:
            raise SpecError(f"{where}: task '{name}': {exc}") from None
    return spec
