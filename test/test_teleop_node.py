"""teleop over real DDS: /joy -> /cmd_vel with scaling, dead-man button and a link-loss stop;
torque mode: /joy (+ the LQR's assist on each state) -> effort commands."""

import math
import random

import numpy as np
from geometry_msgs.msg import Twist
from rosgraph import ProbeNode, graph_fixtures, ros_env
from sensor_msgs.msg import Imu, JointState, Joy
from std_msgs.msg import Float64MultiArray

from droil_ros.nodes.common import COMMAND_QOS, SENSOR_QOS, imu_msg, joint_state_msg
from droil_ros.robots import load_spec
from droil_ros.robots.spec import SensorReadings
from droil_ros.sim.lqr import LQRController

DOMAIN = random.randint(61, 65)
ROS_ENV = ros_env(DOMAIN)


class Probe(ProbeNode):
    def setup(self):
        self.record({"cmd_vel": (Twist, 10), "effort_controller/commands": (Float64MultiArray, COMMAND_QOS)})
        self.joy = self.node.create_publisher(Joy, "joy", 10)
        self.joint_states = self.node.create_publisher(JointState, "joint_states", SENSOR_QOS)
        self.imu = self.node.create_publisher(Imu, "imu/data", SENSOR_QOS)

    def effort(self) -> list[float] | None:
        commands = self.received("effort_controller/commands")
        return list(commands[-1].data) if commands else None

    def speed(self) -> float | None:
        twists = self.received("cmd_vel")
        return twists[-1].linear.x if twists else None


ros_graph, probe, launch = graph_fixtures(ROS_ENV, lambda: Probe(DOMAIN))


def test_joystick_drives_cmd_vel_and_stops_on_release_and_link_loss(probe, launch):
    launch("teleop", axis_linear=1, scale_linear=0.4, deadman_button=0, joy_timeout=0.3)
    assert probe.wait_for(lambda: probe.speed() == 0.0, 20.0), "no /cmd_vel from teleop"

    def send(stick: float, held: int) -> None:
        probe.joy.publish(Joy(axes=[0.0, stick], buttons=[held]))

    assert probe.wait_for(lambda: (send(0.5, 1), probe.speed())[1] == 0.2, 5.0)
    assert probe.wait_for(lambda: (send(0.5, 0), probe.speed())[1] == 0.0, 5.0)  # dead-man released
    assert probe.wait_for(lambda: (send(-1.0, 1), probe.speed())[1] == -0.4, 5.0)
    # the joystick goes silent (lost radio link): the command drops to zero by itself
    assert probe.wait_for(lambda: probe.speed() == 0.0, 5.0)


def test_bad_source_is_one_line_exit_2(launch):
    proc = launch("teleop", source="mouse")
    assert proc.wait(timeout=30) == 2
    assert "source must be 'joy' or 'keyboard'" in proc.log_path.read_text()


def test_torque_mode_commands_the_wheel_torque_with_an_optional_assist(probe, launch):
    spec = load_spec("wheel_legged")
    launch("teleop", mode="torque", assist=0.5, axis_torque=1, deadman_button=0, joy_timeout=0.3)
    tilt = 0.1  # rad, pitch: the assist answers it
    readings = SensorReadings(
        joint_names=tuple(spec.joints), position=np.zeros(2), velocity=np.zeros(2),
        effort=np.zeros(2), orientation=np.array([0.0, math.sin(tilt / 2), 0.0, math.cos(tilt / 2)]),
        angular_velocity=np.zeros(3), linear_acceleration=np.array([0.0, 0.0, 9.81]))
    assist = 0.5 * LQRController(spec)(spec.build_observation(readings))[0]

    def send(stick: float, held: int) -> list[float] | None:
        stamp = probe.node.get_clock().now().to_msg()
        probe.joy.publish(Joy(axes=[0.0, stick], buttons=[held]))
        probe.joint_states.publish(joint_state_msg(readings, stamp))
        probe.imu.publish(imu_msg(readings, stamp, "imu_link"))
        return probe.effort()

    def close(effort, value: float) -> bool:
        return effort is not None and np.allclose(effort, [value, value], atol=1e-9)

    pushed = float(np.clip(0.5 * spec.action_high[0] + assist, spec.action_low[0], spec.action_high[0]))
    assert probe.wait_for(lambda: close(send(0.5, 1), pushed), 20.0), probe.effort()
    assert probe.wait_for(lambda: close(send(0.5, 0), assist), 5.0), probe.effort()  # dead-man
    assert not probe.received("cmd_vel")  # torque mode commands no speed


def test_torque_mode_needs_the_joystick(launch):
    proc = launch("teleop", mode="torque", source="keyboard")
    assert proc.wait(timeout=30) == 2
    assert "mode torque needs source joy" in proc.log_path.read_text()
