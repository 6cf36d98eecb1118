"""Teleoperation for human demonstrations: a joystick (``/joy``) or the keyboard -> ``/cmd_vel``.

The speed reference is what a person commands; the balancing itself stays with the controller
that tracks ``/cmd_vel`` (the LQR expert), as on wheel-legged robots driven by a remote. The
command is published at a fixed rate and drops to zero when the joystick goes silent for
``joy_timeout`` or the dead-man button is released, so a lost radio link stops the robot.
Keyboard mode (``source:=keyboard``, a terminal on stdin): w/s change the speed, space stops.
"""

from __future__ import annotations

import select
import sys
import termios
import time
import tty

from geometry_msgs.msg import Twist
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from sensor_msgs.msg import Joy

from droil_ros.errors import DroilError
from droil_ros.nodes.common import describe, spin_node

KEY_STEP = {"w": 1.0, "s": -1.0}


class Teleop(Node):
    def __init__(self):
        super().__init__("teleop")
        p = {name: self.declare_parameter(name, default, describe(text, read_only=True)).value
             for name, default, text in (
                 ("source", "joy", "joy (sensor_msgs/Joy on /joy) or keyboard (this terminal)"),
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
        self.p = p
        self.twist = Twist()
        self.last_joy = -float("inf")
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
        self.publisher.publish(self.twist)

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
