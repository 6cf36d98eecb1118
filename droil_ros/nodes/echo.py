"""The floor ``droil bench realtime`` measures the policy node against: a bare rclpy node that
answers each JointState at once with a Float64MultiArray of its first positions (one per
actuator). The same executor, QoS and process set-up as the policy node, none of its work:
what Python and DDS cost a round trip on this machine."""

from __future__ import annotations

import sys
from array import array

from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

from droil_ros.nodes.common import COMMAND_QOS, SENSOR_QOS, declare_robot, describe, spin_node


class Echo(Node):
    def __init__(self):
        super().__init__("echo")
        spec = declare_robot(self)
        self.events_executor = self.declare_parameter("executor", "single", describe(
            "single | events: the executor, as the policy node's", read_only=True)).value == "events"
        self.n = len(spec.actuators)
        self.command_pub = self.create_publisher(Float64MultiArray, spec.ros.command_topic, COMMAND_QOS)
        self.create_subscription(JointState, spec.ros.state_topic, self._on_joint_state, SENSOR_QOS)

    def _on_joint_state(self, msg: JointState) -> None:
        self.command_pub.publish(Float64MultiArray(data=array("d", msg.position[:self.n])))


def main(args: list[str] | None = None) -> int:
    return spin_node(Echo, args)


if __name__ == "__main__":
    sys.exit(main())
