"""teleop over real DDS: /joy -> /cmd_vel with scaling, dead-man button and a link-loss stop."""

import random

from geometry_msgs.msg import Twist
from rosgraph import ProbeNode, graph_fixtures, ros_env
from sensor_msgs.msg import Joy

DOMAIN = random.randint(61, 65)
ROS_ENV = ros_env(DOMAIN)


class Probe(ProbeNode):
    def setup(self):
        self.record({"cmd_vel": (Twist, 10)})
        self.joy = self.node.create_publisher(Joy, "joy", 10)

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
