"""The wheel-legged balancing robot as a Gymnasium environment built from its robot spec.

The observation goes through the same path as on the robot: MuJoCo sensors are packed into
``SensorReadings`` (what JointState + Imu carry) and the spec turns them into the observation.
"""

from __future__ import annotations

import math

import gymnasium as gym
import mujoco
import numpy as np

from droil_ros.errors import SpecError
from droil_ros.robots.spec import RobotSpec, SensorReadings, Task, task_rewards


def _id(model: mujoco.MjModel, kind: mujoco.mjtObj, name: str, spec: RobotSpec) -> int:
    index = mujoco.mj_name2id(model, kind, name)
    if index < 0:
        raise SpecError(f"robot '{spec.id}': model has no {kind.name[6:].lower()} named '{name}'")
    return index


class SensorModel:
    """Reads a MuJoCo model's sensors as JointState + Imu readings, resolved by name."""

    def __init__(self, model: mujoco.MjModel, spec: RobotSpec):
        self.spec = spec
        self.joint_names = tuple(spec.joints)
        joint_ids = [_id(model, mujoco.mjtObj.mjOBJ_JOINT, j, spec) for j in spec.joints]
        self.qpos_adr = np.array([model.jnt_qposadr[j] for j in joint_ids])
        self.dof_adr = np.array([model.jnt_dofadr[j] for j in joint_ids])
        self.imu = {}
        for key in ("orientation_sensor", "angular_velocity_sensor", "linear_acceleration_sensor"):
            sensor = _id(model, mujoco.mjtObj.mjOBJ_SENSOR, spec.imu[key], spec)
            adr, dim = model.sensor_adr[sensor], model.sensor_dim[sensor]
            self.imu[key] = slice(adr, adr + dim)

    def read(self, data: mujoco.MjData) -> SensorReadings:
        wxyz = data.sensordata[self.imu["orientation_sensor"]]
        return SensorReadings(
            joint_names=self.joint_names,
            position=data.qpos[self.qpos_adr].copy(),
            velocity=data.qvel[self.dof_adr].copy(),
            effort=data.qfrc_actuator[self.dof_adr].copy(),
            orientation=np.array([wxyz[1], wxyz[2], wxyz[3], wxyz[0]]),
            angular_velocity=data.sensordata[self.imu["angular_velocity_sensor"]].copy(),
            linear_acceleration=data.sensordata[self.imu["linear_acceleration_sensor"]].copy(),
        )


def load_model(robot: RobotSpec) -> mujoco.MjModel:
    """The robot's MJCF; a missing or broken file is a one-line SpecError, not MuJoCo's traceback."""
    path = robot.require_model()
    try:
        return mujoco.MjModel.from_xml_path(str(path))
    except ValueError as exc:
        reason = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        raise SpecError(f"robot '{robot.id}': cannot load model {path}: {reason}") from None


class WheelLeggedEnv(gym.Env):
    """Balance (task ``stand``) or drive at ``v_ref`` (task ``drive``); one action: wheel torque."""

    metadata = {"render_modes": []}

    def __init__(self, robot: RobotSpec, task: Task):
        self.robot = robot
        self.task = task
        self.model = load_model(robot)
        self.data = mujoco.MjData(self.model)
        substeps = robot.control_dt / self.model.opt.timestep
        if abs(substeps - round(substeps)) > 1e-9:
            raise SpecError(f"robot '{robot.id}': control period is not a multiple of the timestep")
        self.substeps = int(round(substeps))
        self.sensors = SensorModel(self.model, robot)
        self.actuator_ids = [_id(self.model, mujoco.mjtObj.mjOBJ_ACTUATOR, a, robot)
                             for a in robot.actuators]
        self.gains = robot.action_gains
        self.names = robot.obs_names
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (robot.obs_dim,), np.float64)
        self.action_space = gym.spaces.Box(robot.action_low, robot.action_high, dtype=np.float64)
        self.time = 0.0

    def readings(self) -> SensorReadings:
        return self.sensors.read(self.data)

    def observe(self) -> np.ndarray:
        return self.robot.build_observation(self.readings())

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = options or {}
        tilt = options.get("tilt")
        if tilt is None:
            tilt = self.np_random.uniform(-self.task.init_tilt, self.task.init_tilt)
        mujoco.mj_resetData(self.model, self.data)
        # rotate the whole robot about its axle: wheels stay on the floor
        self.data.qpos[3:7] = [math.cos(tilt / 2), 0.0, math.sin(tilt / 2), 0.0]
        mujoco.mj_forward(self.model, self.data)
        self.time = 0.0
        return self.observe(), {"tilt0": float(tilt)}

    def step(self, action):
        action = self.robot.clip_action(action)
        self.data.ctrl[self.actuator_ids] = self.gains @ action
        for _ in range(self.substeps):
            mujoco.mj_step(self.model, self.data)
        mujoco.mj_forward(self.model, self.data)  # sensors of the state reached, not the last substep's
        self.time += self.robot.control_dt
        obs = self.observe()
        reward = self.reward(obs, action)
        fell = bool(abs(obs[self.names.index("theta")]) > self.task.fall_tilt)
        return obs, reward, fell, False, {"fell": fell, "time": self.time}

    def reward(self, obs: np.ndarray, action: np.ndarray) -> float:
        return float(task_rewards(self.robot, self.task, obs[None], np.asarray(action)[None],
                                  np.array([self.time]))[0])
