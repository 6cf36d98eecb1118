"""Dynamics and signal perturbations, one module for every robot.

A perturbation is a list of ``name=value`` items, optionally restricted to named joints or
bodies with ``name@target+target=value``; it comes from a string (``mass=1.5,friction=0.3``),
a mapping, or a YAML file. Model perturbations edit one environment's ``MjModel`` (other
environments compile their own) and are undone exactly from a snapshot of the nominal model;
signal perturbations (noise, latency) act in the environment wrapper.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np
import yaml

from droil_ros.errors import PerturbationError
from droil_ros.robots.spec import RobotSpec


@dataclass(frozen=True)
class Kind:
    doc: str
    nominal: float
    signal: bool = False  # applied by the environment wrapper, not to the model
    targets: str = ""  # "joint", "body" or "" (no target selection)
    integer: bool = False
    minimum: float = 0.0


KINDS: dict[str, Kind] = {
    "gravity": Kind("scale of the gravity vector", 1.0),
    "mass": Kind("scale of body masses and inertias", 1.0, targets="body"),
    "payload": Kind("kg added at the payload body's centre of mass", 0.0, targets="body"),
    "friction": Kind("scale of sliding friction of all geoms", 1.0),
    "damping": Kind("scale of actuated joints' damping", 1.0, targets="joint"),
    "stiffness": Kind("spring stiffness on actuated joints (N m/rad)", 0.0, targets="joint"),
    # DRBC sets the rest angle with the stiffness; the nominal is the model's (0 on Hopper)
    "springref": Kind("rest angle of actuated joints' springs (rad)", 0.0, targets="joint",
                      minimum=-math.pi),
    "frictionloss": Kind("dry friction on actuated joints (N m)", 0.0, targets="joint"),
    "gear": Kind("scale of actuator strength (gear)", 1.0, targets="joint"),
    "actuator_range": Kind("scale of actuator control range", 1.0, targets="joint", minimum=1e-6),
    "action_noise": Kind("Gaussian action noise, std as a fraction of the half range", 0.0,
                         signal=True),
    "obs_noise": Kind("Gaussian observation noise, std in observation units", 0.0, signal=True),
    "latency": Kind("actuation delay in control steps", 0.0, signal=True, integer=True),
}

# fields a model perturbation may touch; restored from the nominal snapshot
MODEL_FIELDS = ("body_mass", "body_inertia", "geom_friction", "dof_damping", "jnt_stiffness",
                "qpos_spring", "dof_frictionloss", "actuator_gear", "actuator_ctrlrange")


@dataclass(frozen=True)
class Item:
    name: str
    value: float
    targets: tuple[str, ...] = ()

    def __str__(self) -> str:
        where = "@" + "+".join(self.targets) if self.targets else ""
        return f"{self.name}{where}={self.value:g}"


@dataclass(frozen=True)
class Perturbation:
    items: tuple[Item, ...] = ()

    def __str__(self) -> str:
        return ",".join(str(i) for i in self.items) or "nominal"

    def __bool__(self) -> bool:
        return bool(self.items)

    def model_items(self) -> tuple[Item, ...]:
        return tuple(i for i in self.items if not KINDS[i.name].signal)

    def signal(self, name: str) -> float:
        values = [i.value for i in self.items if i.name == name]
        return values[-1] if values else KINDS[name].nominal


def _item(name: str, value, targets: tuple[str, ...] = ()) -> Item:
    name = name.strip()
    if name not in KINDS:
        raise PerturbationError(f"unknown perturbation '{name}' (known: {', '.join(KINDS)})")
    kind = KINDS[name]
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise PerturbationError(f"perturbation '{name}': value '{value}' is not a number") from None
    if not math.isfinite(number) or number < kind.minimum:
        raise PerturbationError(f"perturbation '{name}': value {value} must be >= {kind.minimum:g}")
    if kind.integer and number != int(number):
        raise PerturbationError(f"perturbation '{name}': value {value} must be an integer")
    if targets and not kind.targets:
        raise PerturbationError(f"perturbation '{name}' takes no targets")
    return Item(name, number, targets)


def parse_perturbation(spec: str | dict | Path | Perturbation | None) -> Perturbation:
    """Parse ``"mass=1.5,friction@left_wheel=0.3"``, a mapping, or a YAML file path."""
    if spec is None or isinstance(spec, Perturbation):
        return spec or Perturbation()
    if isinstance(spec, Path) or (isinstance(spec, str) and spec.endswith((".yaml", ".yml"))):
        path = Path(spec)
        if not path.is_file():
            raise PerturbationError(f"perturbation file not found: {path}")
        spec = yaml.safe_load(path.read_text()) or {}
        if not isinstance(spec, dict):
            raise PerturbationError(f"{path}: a perturbation file must be a mapping name: value")
    if isinstance(spec, dict):
        items = []
        for key, value in spec.items():
            name, _, where = str(key).partition("@")
            items.append(_item(name, value, tuple(t for t in where.split("+") if t)))
        return Perturbation(tuple(items))
    items = []
    for part in (p.strip() for p in str(spec).split(",")):
        if not part or part == "nominal":
            continue
        key, sep, value = part.partition("=")
        if not sep:
            raise PerturbationError(f"perturbation '{part}' is not of the form name=value")
        name, _, where = key.partition("@")
        items.append(_item(name, value.strip(), tuple(t for t in where.split("+") if t)))
    return Perturbation(tuple(items))


class ModelPerturber:
    """Applies model perturbations to one MjModel and restores it exactly to nominal."""

    def __init__(self, model: mujoco.MjModel, robot: RobotSpec):
        self.model = model
        self.robot = robot
        self.nominal = copy.deepcopy(model)
        actuated = set(robot.actuators.values())
        self._actuated_joints = [j for j in robot.joints if j in actuated]

    def _ids(self, kind: mujoco.mjtObj, names) -> list[int]:
        ids = []
        for name in names:
            index = mujoco.mj_name2id(self.model, kind, name)
            if index < 0:
                what = "joint" if kind == mujoco.mjtObj.mjOBJ_JOINT else "body"
                raise PerturbationError(f"robot '{self.robot.id}' has no {what} named '{name}'")
            ids.append(index)
        return ids

    def _joints(self, item: Item) -> list[int]:
        return self._ids(mujoco.mjtObj.mjOBJ_JOINT, item.targets or self._actuated_joints)

    def _dofs(self, item: Item) -> list[int]:
        return [int(self.model.jnt_dofadr[j]) for j in self._joints(item)]

    def _actuators(self, item: Item) -> list[int]:
        joints = set(self._joints(item))
        return [a for a in range(self.model.nu) if self.model.actuator_trnid[a, 0] in joints]

    def _bodies(self, item: Item) -> list[int]:
        if item.targets:
            return self._ids(mujoco.mjtObj.mjOBJ_BODY, item.targets)
        if item.name == "payload":
            target = self.robot.perturbation_targets.get("payload_body")
            if not target:
                raise PerturbationError(f"robot '{self.robot.id}' names no payload_body")
            return self._ids(mujoco.mjtObj.mjOBJ_BODY, [target])
        return list(range(1, self.model.nbody))

    def restore(self) -> None:
        m, nominal = self.model, self.nominal
        m.opt.gravity[:] = nominal.opt.gravity
        for name in MODEL_FIELDS:
            getattr(m, name)[:] = getattr(nominal, name)
        mujoco.mj_setConst(m, mujoco.MjData(m))

    def apply(self, perturbation: Perturbation) -> None:
        """Set the model to nominal plus ``perturbation`` (never accumulates)."""
        self.restore()
        m = self.model
        for item in perturbation.model_items():
            v = item.value
            if item.name == "gravity":
                m.opt.gravity[:] *= v
            elif item.name == "mass":
                for b in self._bodies(item):
                    m.body_mass[b] *= v
                    m.body_inertia[b] *= v
            elif item.name == "payload":
                for b in self._bodies(item):
                    m.body_mass[b] += v
            elif item.name == "friction":
                m.geom_friction[:, 0] *= v
            elif item.name == "damping":
                m.dof_damping[self._dofs(item)] *= v
            elif item.name == "stiffness":
                m.jnt_stiffness[self._joints(item)] = v
            elif item.name == "springref":
                m.qpos_spring[[int(m.jnt_qposadr[j]) for j in self._joints(item)]] = v
            elif item.name == "frictionloss":
                m.dof_frictionloss[self._dofs(item)] = v
            elif item.name == "gear":
                m.actuator_gear[self._actuators(item), 0] *= v
            elif item.name == "actuator_range":
                m.actuator_ctrlrange[self._actuators(item)] *= v
        mujoco.mj_setConst(m, mujoco.MjData(m))


class SignalPerturber:
    """Action noise, observation noise and actuation latency, with its own seeded generator."""

    def __init__(self, perturbation: Perturbation, low: np.ndarray, high: np.ndarray):
        self.action_noise = perturbation.signal("action_noise")
        self.obs_noise = perturbation.signal("obs_noise")
        self.latency = int(perturbation.signal("latency"))
        self.half_range = (high - low) / 2.0
        self.rng = np.random.default_rng()
        self.queue: list[np.ndarray] = []

    def reset(self, seed: int | None) -> None:
        self.rng = np.random.default_rng(seed)
        self.queue = []

    def action(self, action: np.ndarray) -> np.ndarray:
        if self.action_noise > 0:
            action = action + self.rng.normal(0.0, self.action_noise, action.shape) * self.half_range
        if self.latency == 0:
            return action
        self.queue.append(action)
        if len(self.queue) <= self.latency:
            return np.zeros_like(action)
        return self.queue.pop(0)

    def observation(self, obs: np.ndarray) -> np.ndarray:
        if self.obs_noise > 0:
            return obs + self.rng.normal(0.0, self.obs_noise, obs.shape)
        return obs
