"""LQR expert for wheel balancing robots, designed on the MuJoCo linearisation of the MJCF.

The full model is linearised at the upright equilibrium with ``mujoco.mjd_transitionFD`` and
composed over one control period (zero-order hold). It is then projected onto the spec's
observation (tilt, displacement, tilt rate, speed) under the rolling constraint, so the gain
acts on exactly what the policy sees; scipy's discrete Riccati solver gives the gain.
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np
from scipy.linalg import solve_discrete_are

from droil_ros.errors import SpecError
from droil_ros.robots.spec import RobotSpec
from droil_ros.sim.wheel_legged import load_model

OBS = ("theta", "x", "theta_dot", "x_dot")


@dataclass(frozen=True)
class LQRWeights:
    theta: float = 100.0
    x: float = 1.0
    theta_dot: float = 1.0
    x_dot: float = 2.0
    action: float = 4.0


def _upright_equilibrium(model: mujoco.MjModel) -> mujoco.MjData:
    """Let the robot settle onto its wheels while its attitude is held upright."""
    data = mujoco.MjData(model)
    for _ in range(500):
        data.qpos[3:7] = [1.0, 0.0, 0.0, 0.0]
        data.qvel[:] = 0.0
        mujoco.mj_step(model, data)
    data.qpos[3:7] = [1.0, 0.0, 0.0, 0.0]
    data.qvel[:] = 0.0
    data.ctrl[:] = 0.0
    mujoco.mj_forward(model, data)
    return data


def linearise(robot: RobotSpec) -> tuple[np.ndarray, np.ndarray]:
    """(A, B) of the observation (theta, x, theta_dot, x_dot) over one control period."""
    if robot.obs_names != list(OBS) or "wheel_radius" not in robot.geometry:
        raise SpecError(f"LQR needs a wheel balancing robot with observation {OBS} "
                        f"and geometry.wheel_radius; '{robot.id}' is not one")
    model = load_model(robot)
    data = _upright_equilibrium(model)
    nv = model.nv
    a1 = np.zeros((2 * nv + model.na, 2 * nv + model.na))
    b1 = np.zeros((2 * nv + model.na, model.nu))
    mujoco.mjd_transitionFD(model, data, 1e-6, True, a1, b1, None, None)
    substeps = int(round(robot.control_dt / model.opt.timestep))
    a = np.linalg.matrix_power(a1, substeps)
    b = sum(np.linalg.matrix_power(a1, k) for k in range(substeps)) @ b1
    actuator_ids = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_ACTUATOR, n) for n in robot.actuators]
    b = b[:, actuator_ids] @ robot.action_gains

    # tangent coordinates: free joint (x y z rx ry rz), wheels; then the same for velocities
    radius = robot.geometry["wheel_radius"]
    wheels = [int(model.jnt_dofadr[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, j)])
              for j in robot.joints]
    lift = np.zeros((a.shape[0], 4))  # observation -> full state on the rolling manifold
    lift[4, 0] = 1.0
    lift[0, 1] = 1.0
    lift[nv + 4, 2] = 1.0
    lift[nv + 0, 3] = 1.0
    for w in wheels:
        lift[w, 1], lift[w, 0] = 1.0 / radius, -1.0
        lift[nv + w, 3], lift[nv + w, 2] = 1.0 / radius, -1.0
    project = np.zeros((4, a.shape[0]))  # full state -> observation
    project[0, 4] = project[1, 0] = project[2, nv + 4] = project[3, nv + 0] = 1.0
    return project @ a @ lift, project @ b


class LQRController:
    """u = -K (s - s_ref), s_ref = (0, x_ref, 0, v_ref); x_ref integrates the speed reference
    from the odometry origin (integral action, so the speed is tracked without offset)."""

    def __init__(self, robot: RobotSpec, weights: LQRWeights = LQRWeights(), v_ref: float = 0.0):
        self.robot = robot
        a, b = linearise(robot)
        q = np.diag([weights.theta, weights.x, weights.theta_dot, weights.x_dot])
        r = np.eye(b.shape[1]) * weights.action
        p = solve_discrete_are(a, b, q, r)
        self.gain = np.linalg.solve(r + b.T @ p @ b, b.T @ p @ a)
        self.closed_loop_radius = float(np.max(np.abs(np.linalg.eigvals(a - b @ self.gain))))
        self.v_ref = v_ref
        self.max_lead = 0.5  # metres x_ref may run ahead of x: no wind-up after a push
        self.x_ref = None

    def reset(self) -> None:
        self.x_ref = None

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        theta, x, theta_dot, x_dot = obs
        if self.x_ref is None:
            self.x_ref = 0.0  # the odometry origin: standing, the expert is a function of obs
        self.x_ref = float(np.clip(self.x_ref + self.v_ref * self.robot.control_dt,
                                   x - self.max_lead, x + self.max_lead))
        error = np.array([theta, x - self.x_ref, theta_dot, x_dot - self.v_ref])
        return self.robot.clip_action(-self.gain @ error)
