"""The launch files under the real ROS 2 launch stack (launch_pytest): sim.launch.py with the LQR
and with the policy (a hot-swap accepted), record.launch.py writing a bag, and every process
exiting 0 when launch shuts down (it sends SIGINT, as a terminal's Ctrl-C does).

launch, launch_ros and launch_pytest are not on PyPI, so these tests run where a ROS 2 distro is
sourced and droil_ros is built into its ament prefix (``colcon build && source
install/setup.bash``) and skip with that reason elsewhere. What a launch file decides (arguments,
overrides and their validation, which nodes, which are required) is droil_ros.bringup's, tested
without launch in test_bringup.py; this module checks that the launch stack runs it.
"""

import json
import random
import shutil
import time
from pathlib import Path

import pytest

launch_pytest = pytest.importorskip(
    "launch_pytest", reason="launch_pytest is not installable from PyPI; this runs where a ROS 2 "
                            "distro is sourced")
from ament_index_python.packages import PackageNotFoundError, get_package_share_directory  # noqa: E402

try:
    SHARE = Path(get_package_share_directory("droil_ros"))
except PackageNotFoundError:
    pytest.skip("droil_ros is not in an ament prefix (colcon build && source install/setup.bash)",
                allow_module_level=True)

import yaml  # noqa: E402
from launch.actions import (  # noqa: E402
    IncludeLaunchDescription,
    RegisterEventHandler,
    SetEnvironmentVariable,
)
from launch.event_handlers import OnProcessExit  # noqa: E402
from launch.launch_description_sources import (  # noqa: E402
    PythonLaunchDescriptionSource,
    get_launch_description_from_python_launch_file,
)
from rosgraph import ProbeNode, ros_env  # noqa: E402
from sensor_msgs.msg import Imu, JointState  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from droil_ros.bringup import launch_arguments  # noqa: E402
from droil_ros.nodes.common import LATCHED_QOS, SENSOR_QOS, readings_from_msgs  # noqa: E402
from droil_ros.robots import load_spec  # noqa: E402
from launch import LaunchDescription  # noqa: E402

DOMAIN = random.randint(81, 90)  # test_bringup's range: the two modules never run at once
ENV = ros_env(DOMAIN)
SPEC = load_spec("wheel_legged")
DEFAULT_POLICY = SHARE / "models" / "policies" / "wheel_legged_bc.onnx"


class Probe(ProbeNode):
    def setup(self):
        self.record({"joint_states": (JointState, SENSOR_QOS), "imu/data": (Imu, SENSOR_QOS),
                     "/policy/swap_status": (String, LATCHED_QOS)})

    def tilts(self) -> list[float]:
        imus = {(m.header.stamp.sec, m.header.stamp.nanosec): m for m in self.received("imu/data")}
        return [SPEC.build_observation(readings_from_msgs(js, imus[key]))[0]
                for js in self.received("joint_states")
                if (key := (js.header.stamp.sec, js.header.stamp.nanosec)) in imus]

    def balances(self, states: int = 400) -> bool:
        tilts = self.tilts()
        return len(tilts) > states and max(abs(t) for t in tilts[-states:]) < 0.05


@pytest.fixture
def probe():
    probe = Probe(DOMAIN)
    yield probe
    probe.close()


@pytest.fixture
def exits() -> list[tuple[str, int]]:
    """(process, exit code) of every process of the launch, filled in as they exit."""
    return []


def bringup(file: str, exits: list, **arguments) -> LaunchDescription:
    return LaunchDescription([
        *(SetEnvironmentVariable(key, value) for key, value in ENV.items()),
        RegisterEventHandler(OnProcessExit(
            on_exit=lambda event, context: exits.append((event.action.name, event.returncode)))),
        IncludeLaunchDescription(PythonLaunchDescriptionSource(str(SHARE / "launch" / file)),
                                 launch_arguments=[(k, str(v)) for k, v in arguments.items()]),
        launch_pytest.actions.ReadyToTest(),
    ])


@pytest.fixture
def policies(tmp_path) -> tuple[Path, Path]:
    first, second = tmp_path / "first.onnx", tmp_path / "second.onnx"
    shutil.copy(DEFAULT_POLICY, first)
    shutil.copy(DEFAULT_POLICY, second)
    return first, second


@launch_pytest.fixture
def sim_lqr(exits):
    return bringup("sim.launch.py", exits, **{"sim_bridge.initial_tilt": 0.1})


@launch_pytest.fixture
def sim_policy(exits, policies):
    return bringup("sim.launch.py", exits, policy_path=policies[0],
                   **{"lqr_expert.enabled": "false", "policy.enabled": "true",
                      "policy.policy_dir": policies[0].parent, "sim_bridge.initial_tilt": 0.1})


@launch_pytest.fixture
def record(exits, tmp_path):
    return bringup("record.launch.py", exits, **{"demo_recorder.output_dir": tmp_path / "bags",
                                                  "demo_recorder.flush_period": 0.5})


def every_node_exited_0(exits: list, nodes: int) -> None:
    assert len(exits) == nodes and all(code == 0 for _, code in exits), exits


@pytest.mark.launch(fixture=sim_lqr)
def test_sim_launch_balances_with_the_lqr(exits, probe):
    assert probe.wait_for(probe.balances, 60.0), probe.tilts()[-5:]
    yield
    every_node_exited_0(exits, 2)


@pytest.mark.launch(fixture=sim_policy)
def test_the_policy_variant_balances_and_accepts_a_hot_swap(exits, policies, probe):
    assert probe.wait_for(probe.balances, 60.0), probe.tilts()[-5:]
    assert probe.set_parameter("policy", "policy_path", str(policies[1])) == (True, "")
    assert probe.wait_for(lambda: any(json.loads(m.data)["path"] == str(policies[1])
                                      and json.loads(m.data)["ok"]
                                      for m in probe.received("/policy/swap_status")), 30.0), (
        [m.data for m in probe.received("/policy/swap_status")])
    seen = len(probe.tilts())
    assert probe.wait_for(lambda: len(probe.tilts()) > seen + 400 and probe.balances(), 30.0)
    yield
    every_node_exited_0(exits, 2)


@pytest.mark.launch(fixture=record)
def test_record_launch_writes_a_bag(exits, tmp_path):
    def recorded() -> dict:
        for metadata in (tmp_path / "bags").glob("*/metadata.yaml"):
            info = yaml.safe_load(metadata.read_text())["rosbag2_bagfile_information"]
            topics = info["topics_with_message_count"]
            return {t["topic_metadata"]["name"]: t["message_count"] for t in topics}
        return {}

    deadline = time.monotonic() + 60.0
    while not all(recorded().get(t, 0) > 100 for t in ("/joint_states", "/imu/data",
                                                        "/effort_controller/commands")):
        assert time.monotonic() < deadline, recorded()
        time.sleep(0.5)
    yield
    every_node_exited_0(exits, 4)


@pytest.mark.parametrize("name", ["sim", "record", "robot", "train"])
def test_each_launch_file_declares_the_bringups_arguments(name):
    description = get_launch_description_from_python_launch_file(
        str(SHARE / "launch" / f"{name}.launch.py"))
    declared = {a.name: a for a in description.get_launch_arguments()}
    assert list(declared) == [a.name for a in launch_arguments(name)]
    for argument in launch_arguments(name):  # launch appends the valid choices
        assert declared[argument.name].description.startswith(argument.description)
        assert declared[argument.name].default_value[0].text == argument.default
