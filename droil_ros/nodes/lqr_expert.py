"""LQR expert over ROS: JointState + Imu -> observation (spec) -> LQR (core) -> effort commands.

Message-driven: it answers each new JointState + Imu pair, which is what lockstep simulation
waits for. Bad input gives zero effort, never a crash; when the input stops for
``state_timeout`` it commands zero effort once, since effort controllers hold the last command.
The watchdog runs on steady time, or with ``use_sim_time`` (as lockstep needs) on sim time,
which stands still while the simulation waits for a command, so it never fires into a waiting
state (that zero would answer the state in place of the LQR's command).
"""

from __future__ import annotations

import math
import sys

import numpy as np
from geometry_msgs.msg import Twist
from rclpy.clock import Clock, ClockType
from rclpy.duration import Duration
from rclpy.node import Node

from droil_ros.errors import DroilError
from droil_ros.nodes.common import (
    COMMAND_QOS,
    declare_robot,
    describe,
    spin_node,
    subscribe_states,
)
from droil_ros.nodes.interface import RobotInterface
from droil_ros.robots.spec import SensorReadings, Task
from droil_ros.sim.lqr import LQRController


class LQRExpert(Node):
    """Subclasses with another controller of the same interface (``reset``, ``__call__``,
    ``v_ref``) override ``make_controller`` and keep the pairing, safety and watchdog."""

    def __init__(self, name: str = "lqr_expert"):
        super().__init__(name)
        self.spec = declare_robot(self)
        task = self.spec.task(self.declare_parameter(
            "task", "stand", describe("task whose v_ref is the initial speed reference",
                                      read_only=True)).value)
        self.state_timeout = self.declare_parameter("state_timeout", 0.1, describe(
            "seconds without a JointState + Imu pair before zero effort is commanded (sim time "
            "with use_sim_time)", read_only=True)).value
        if not self.state_timeout > 0:
            raise DroilError(f"state_timeout must be positive, got {self.state_timeout}")
        self.controller = self.make_controller(task)
        self.zero = np.zeros(len(self.spec.actuators))
        # steady time on a robot (the system clock can jump), sim time where the sim sets it
        sim_time = self.get_parameter("use_sim_time").value
        self.clock = self.get_clock() if sim_time else Clock(clock_type=ClockType.STEADY_TIME)
        self.last_pair = self.clock.now()
        self.stale = True  # nothing received yet: nothing to stop

        self.robot = RobotInterface(self.spec)
        if self.robot.command.kind != "effort":  # its zero command would be a setpoint, not "no torque"
            raise DroilError(f"{name} commands efforts; robot '{self.spec.id}' takes "
                             f"{self.robot.command.kind} commands (ros.command_kind)")
        self.command_pub = self.create_publisher(self.robot.command.msg_type, self.spec.ros.command_topic,
                                                 COMMAND_QOS)
        subscribe_states(self, self.robot, self._act)
        self.create_subscription(Twist, "cmd_vel", self._on_cmd_vel, 10)
        self.create_timer(self.state_timeout / 2, self._watchdog, clock=self.clock)
        self.get_logger().info(f"{self.spec.id}/{task.name}: {self.controller_summary()}, "
                               f"v_ref {task.v_ref:g} m/s")

    def make_controller(self, task: Task):
        return LQRController(self.spec, v_ref=task.v_ref)

    def controller_summary(self) -> str:
        return f"LQR gain {self.controller.gain.ravel()}"

    def _act(self, readings: SensorReadings) -> None:
        """Answer a state (the newest JointState and Imu, each used once)."""
        self.last_pair, self.stale = self.clock.now(), False
        try:
            obs = self.spec.build_observation(readings)
        except ValueError as exc:
            self._safe(f"bad input: {exc}")
            return
        if not np.all(np.isfinite(obs)):
            self._safe("NaN or Inf in the observation")
            return
        self.command_pub.publish(self.robot.command.encode(self.spec.action_to_command(self.controller(obs))))

    def _safe(self, why: str) -> None:
        self.command_pub.publish(self.robot.command.encode(self.zero))
        self.get_logger().warning(f"{why}: zero effort", throttle_duration_sec=1.0)

    def _watchdog(self) -> None:
        if not self.stale and self.clock.now() - self.last_pair > Duration(seconds=self.state_timeout):
            self.stale = True
            self._safe(f"no JointState + Imu for {self.state_timeout:g} s")

    def _on_cmd_vel(self, msg: Twist) -> None:
        if math.isfinite(msg.linear.x):
            self.controller.v_ref = float(msg.linear.x)
        else:
            self.get_logger().warning("ignored cmd_vel with a non-finite linear.x",
                                   throttle_duration_sec=1.0)


def main(args: list[str] | None = None) -> int:
    return spin_node(LQRExpert, args)


if __name__ == "__main__":
    sys.exit(main())
