"""The robot's command message as the nodes write and read it (droil_ros.nodes.interface): any
type, the actuators' values at the spec's field paths, joints named or not."""

import numpy as np
import pytest
import yaml
from geometry_msgs.msg import Twist
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory

from droil_ros.errors import DroilError
from droil_ros.nodes.interface import CommandCodec, RobotInterface
from droil_ros.robots import load_spec

WHEEL_LEGGED = load_spec("wheel_legged")


def spec_with(tmp_path, **ros):
    raw = yaml.safe_load(WHEEL_LEGGED.text)
    raw["ros"] = ros
    path = tmp_path / "robot.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_spec(path)


@pytest.mark.parametrize("ros, read", [
    ({}, lambda m: list(m.data)),
    ({"command_type": "sensor_msgs/msg/JointState", "command_field": "velocity",
      "command_kind": "velocity"}, lambda m: list(m.velocity)),
    ({"command_type": "trajectory_msgs/msg/JointTrajectory", "command_field": "points[0].effort"},
     lambda m: list(m.points[0].effort)),
    ({"command_type": "std_msgs/msg/Float64MultiArray", "command_field": ["data[1]", "data[0]"]},
     lambda m: [m.data[1], m.data[0]]),
    ({"command_type": "geometry_msgs/msg/Vector3", "command_field": ["x", "y"]}, lambda m: [m.x, m.y]),
])
def test_commands_round_trip_through_any_message(tmp_path, ros, read):
    codec = CommandCodec(spec_with(tmp_path, **ros))
    msg = codec.encode(np.array([0.5, -1.5]))
    assert read(msg) == [0.5, -1.5]
    np.testing.assert_array_equal(codec.decode(msg), [0.5, -1.5])
    if isinstance(msg, (JointState, JointTrajectory)):  # named for controllers that match by name
        names = msg.name if isinstance(msg, JointState) else msg.joint_names
        assert list(names) == list(WHEEL_LEGGED.actuators.values())


def test_unnamed_joints_and_bad_commands(tmp_path):
    spec = spec_with(tmp_path, command_type="sensor_msgs/msg/JointState", command_field="velocity",
                     joints="by_index")
    codec = RobotInterface(spec).command
    assert list(codec.encode(np.zeros(2)).name) == []
    for values, reason in (([1.0], "command has 1 values, expected 2"),
                           ([1.0, float("nan")], "NaN or Inf")):
        with pytest.raises(ValueError, match=reason):
            codec.decode(JointState(velocity=values))


@pytest.mark.parametrize("ros, message", [
    ({"command_type": "rover_msgs/msg/WheelCommand"},
     "command type rover_msgs/msg/WheelCommand is not importable here"),
    ({"command_type": "sensor_msgs/msg/JointState", "command_field": "speed"},
     "ros.command_field speed does not fit sensor_msgs/msg/JointState"),
    ({"command_field": ["data[0]", "data[1]", "data[2]"]}, "ros.command_field has 3 paths"),
    ({"command_type": "sensor_msgs/msg/Imu", "command_field": "orientation_covariance"},  # float64[9]
     "ros.command_field orientation_covariance does not fit sensor_msgs/msg/Imu"),
    ({"command_type": "geometry_msgs/msg/Vector3", "command_field": "x"},
     "does not fit geometry_msgs/msg/Vector3: ValueError: a single number for 2 actuators"),
])
def test_a_command_the_node_cannot_write_is_one_line(tmp_path, ros, message):
    with pytest.raises(DroilError, match=message) as err:
        CommandCodec(spec_with(tmp_path, **ros))
    assert "\n" not in str(err.value)


def test_a_topic_input_the_node_cannot_read_is_one_line(tmp_path):
    raw = yaml.safe_load(WHEEL_LEGGED.text)
    raw["observation"].append({"name": "v_cmd", "unit": "m/s", "terms": [
        {"source": "topic", "topic": "cmd_vel", "type": "geometry_msgs/msg/Twist",
         "field": "linear.speed"}]})
    path = tmp_path / "robot.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(DroilError, match="'v_cmd': geometry_msgs/msg/Twist has no field linear.speed"):
        RobotInterface(load_spec(path))
    raw["observation"][-1]["terms"][0]["field"] = "linear.x"
    path.write_text(yaml.safe_dump(raw))
    assert RobotInterface(load_spec(path)).inputs == {"cmd_vel": Twist}
