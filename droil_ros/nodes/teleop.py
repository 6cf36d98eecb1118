"""Teleoperation for human demonstrations: a joystick (``/joy``) or the keyboard -> ``/cmd_vel``.

The speed reference is what a person commands; the balancing itself stays with the controller
that tracks ``/cmd_vel`` (the LQR expert), as on wheel-legged robots driven by a remote. The
command is published at a fixed rate and drops to zero when the joystick goes silent for
``joy_timeout`` or the dead-man button is released, so a lost radio link stops the robot.
Keyboard mode (``source:=keyboard``, a terminal on stdin): w/s change the speed, space stops.

``mode:=torque`` (joystick only, no ``lqr_expert`` beside it): the stick commands the wheel torque
itself, full deflection the action limit, answered on each JointState + Imu pair on
``effort_controller/commands``, so what is recorded is the person's own command. ``assist``
adds that fraction of the standing LQR's torque: the simulated robot needs a reaction within
about 15 ms, which no person has, so alone (``assist:=0``) it falls; ``assist:=1`` balances and
holds position while the stick pushes. The recorded action is then the sum.
"""

from __future__ import annotations

import select
import sys
import termios
import time
import tty

import numpy as np
from geometry_msgs.msg import Twist
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from sensor_msgs.msg import Joy

from droil_ros.errors import DroilError
from droil_ros.nodes.common import (
    COMMAND_QOS,
    declare_robot,
    describe,
    spin_node,
    subscribe_states,
)
from droil_ros.nodes.interface import RobotInterface
from droil_ros.robots.spec import SensorReadings
from droil_ros.sim.lqr import LQRController

KEY_STEP = {"w": 1.0, "s": -1.0}


class Teleop(Node):
    def __init__(self):
        super().__init__("teleop")
        p = {name: self.declare_parameter(name, default, describe(text, read_only=True)).value
             for name, default, text in (
                 ("source", "joy", "joy (sensor_msgs/Joy on /joy) or keyboard (this terminal)"),
                 ("mode", "cmd_vel", "cmd_vel (speed reference) or torque (the stick is the wheel "
                                     "torque, on effort_controller/commands)"),
                 ("axis_torque", 1, "torque mode: joystick axis for the wheel torque"),
                 ("assist", 0.0, "torque mode: fraction of the standing LQR's torque added (0: none)"),
                 ("axis_linear", 1, "joystick axis for forward speed"),
                 ("scale_linear", 0.3, "m/s at full stick deflection"),
                 ("axis_angular", 0, "joystick axis for yaw rate"),
                 ("scale_angular", 1.0, "rad/s at full stick deflection"),
                 ("deadman_button", -1, "button that must be held to move (-1: none)"),
                 ("key_step", 0.05, "keyboard: m/s per w/s key press"),
                 ("rate_hz", 50.0, "publish rate of /cmd_vel"),
                 ("joy_timeout", 0.5, "seconds without /joy before the command drops to zero"),
             )}
        if p["source"] not in ("joy", "keyboard"):
            raise DroilError(f"source must be 'joy' or 'keyboard', got '{p['source']}'")
        if not p["rate_hz"] > 0 or not p["joy_timeout"] > 0:
            raise DroilError("rate_hz and joy_timeout must be positive")
        if p["mode"] not in ("cmd_vel", "torque"):
            raise DroilError(f"mode must be 'cmd_vel' or 'torque', got '{p['mode']}'")
        self.p = p
        if p["mode"] == "torque":
            self._setup_torque(p)
        self.twist = Twist()
        self.stick = 0.0  # torque mode: stick deflection in [-1, 1]
        self.last_joy = -float("inf")
        if p["mode"] == "cmd_vel":
            self.publisher = self.create_publisher(Twist, "cmd_vel", 10)
        if p["source"] == "joy":
            self.create_subscription(Joy, "joy", self._on_joy, 10)
        else:
            self.keyboard = Keyboard()
        self.create_timer(1.0 / p["rate_hz"], self._tick, clock=Clock(clock_type=ClockType.STEADY_TIME))

    def _on_joy(self, msg: Joy) -> None:
        p = self.p

        def axis(i: int) -> float:
            return float(msg.axes[i]) if 0 <= i < len(msg.axes) else 0.0

        held = p["deadman_button"] < 0 or (p["deadman_button"] < len(msg.buttons)
                                           and msg.buttons[p["deadman_button"]] == 1)
        self.twist = Twist()
        if held:
            self.twist.linear.x = axis(p["axis_linear"]) * p["scale_linear"]
            self.twist.angular.z = axis(p["axis_angular"]) * p["scale_angular"]
        self.stick = axis(p["axis_torque"]) if held else 0.0
        self.last_joy = time.monotonic()

    def _tick(self) -> None:
        if self.p["source"] == "keyboard":
            for key in self.keyboard.keys():
                if key == " ":
                    self.twist = Twist()
                elif key in KEY_STEP:
                    speed = self.twist.linear.x + KEY_STEP[key] * self.p["key_step"]
                    self.twist.linear.x = max(-self.p["scale_linear"], min(self.p["scale_linear"], speed))
        elif time.monotonic() - self.last_joy > self.p["joy_timeout"]:
            self.twist = Twist()
            self.stick = 0.0
        if self.p["mode"] == "cmd_vel":
            self.publisher.publish(self.twist)

    def _setup_torque(self, p: dict) -> None:
        if p["source"] != "joy":
            raise DroilError("mode torque needs source joy")
        if not 0.0 <= p["assist"] <= 1.0:
            raise DroilError(f"assist must be within [0, 1], got {p['assist']}")
        self.spec = declare_robot(self)
        if self.spec.act_dim != 1:
            raise DroilError(f"mode torque drives a robot with one action; '{self.spec.id}' has "
                             f"{self.spec.act_dim}")
        self.lqr = LQRController(self.spec) if p["assist"] > 0 else None
        self.robot = RobotInterface(self.spec)
        if self.robot.command.kind != "effort":
            raise DroilError(f"mode torque commands efforts; robot '{self.spec.id}' takes "
                             f"{self.robot.command.kind} commands (ros.command_kind)")
        self.command_pub = self.create_publisher(self.robot.command.msg_type, self.spec.ros.command_topic,
                                                 COMMAND_QOS)
        subscribe_states(self, self.robot, self._act)

    def _act(self, readings: SensorReadings) -> None:
        """Torque mode: answer each state (the newest JointState and Imu, each used once); the
        assist is left out for a state it cannot read (bad or non-finite input)."""
        action = np.array([self.stick * self.spec.action_high[0]])
        if self.lqr is not None:
            try:
                obs = self.spec.build_observation(readings)
            except ValueError:
                obs = None
            if obs is not None and np.all(np.isfinite(obs)):
                action = action + self.p["assist"] * self.lqr(obs)
        self.command_pub.publish(self.robot.command.encode(self.spec.action_to_command(action)))

    def destroy_node(self):
        if self.p["source"] == "keyboard":
            self.keyboard.restore()
        super().destroy_node()


class Keyboard:
    """Non-blocking single keys from a terminal on stdin (raw mode, restored on exit)."""

    def __init__(self):
        if not sys.stdin.isatty():
            raise DroilError("keyboard teleop needs a terminal on stdin")
        self.saved = termios.tcgetattr(sys.stdin)
        tty.setcbreak(sys.stdin.fileno())

    def keys(self) -> list[str]:
        out = []
        while select.select([sys.stdin], [], [], 0)[0]:
            out.append(sys.stdin.read(1))
        return out

    def restore(self) -> None:
        termios.tcsetattr(sys.stdin, termios.TCSADRAIN, self.saved)


def main(args: list[str] | None = None) -> int:
    return spin_node(Teleop, args)


if __name__ == "__main__":
    sys.exit(main())
