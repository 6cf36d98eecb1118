"""Bringup: the YAML files, `droil bringup` as a real supervisor over DDS, the launch files."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rosgraph import ProbeNode, ros_env
from sensor_msgs.msg import Imu, JointState

from droil_ros.bringup import (
    EXECUTABLES,
    GLOBAL_ARGUMENTS,
    BringupNode,
    NodeGroup,
    command,
    launch_arguments,
    launch_nodes,
    load_bringup,
    read_bringup,
)
from droil_ros.errors import DroilError
from droil_ros.nodes.common import SENSOR_QOS, readings_from_msgs
from droil_ros.nodes.graph import GraphClient
from droil_ros.resources import data_path
from droil_ros.robots import load_spec

DOMAIN = random.randint(81, 90)
SPEC = load_spec("wheel_legged")
BRINGUPS = sorted(p.stem for p in data_path("config", "bringup").glob("*.yaml"))


def test_every_bringup_names_known_nodes_with_a_launch_file():
    assert set(BRINGUPS) == {"sim", "robot", "record", "train"}
    for name in BRINGUPS:
        assert all(n.executable in EXECUTABLES for n in load_bringup(name))
        assert data_path("launch", f"{name}.launch.py").is_file()


def test_overrides_and_their_errors():
    nodes = {n.executable: n for n in load_bringup(
        "sim", ["policy.enabled:=true", "lqr_expert.enabled:=false", "sim_bridge.mode:=lockstep"])}
    assert nodes["policy"].enabled and not nodes["lqr_expert"].enabled
    assert "mode:=lockstep" in nodes["sim_bridge"].ros_args()
    with pytest.raises(DroilError, match="no node 'teleop' in sim"):
        load_bringup("sim", ["teleop.source:=joy"])
    with pytest.raises(DroilError, match="unknown bringup 'moon'"):
        load_bringup("moon")


def test_each_bringup_declares_its_arguments_and_the_readme_lists_them():
    readme = data_path("README.md").read_text()
    for name in BRINGUPS:
        arguments = launch_arguments(name)
        names = [a.name for a in arguments]
        expected = [*GLOBAL_ARGUMENTS]
        for node in read_bringup(name):
            expected += [f"{node.executable}.enabled", *(f"{node.executable}.{k}" for k in node.parameters)]
        assert names == expected
        assert all(a.description for a in arguments)
        missing = [n for n in names if f"`{n}`" not in readme]
        assert not missing, f"README's launch argument table lacks {missing} of {name}"


def test_global_arguments_reach_every_node_they_concern():
    nodes = {n.executable: n for n in load_bringup("sim", [
        "namespace:=robot1", "use_sim_time:=true", "robot:=my_robot.yaml", "policy_path:=be.onnx"])}
    for node in nodes.values():
        assert node.parameters["use_sim_time"] is True and node.parameters["robot"] == "my_robot.yaml"
        assert node.ros_args()[:3] == ["--ros-args", "-r", "__ns:=/robot1"]
    assert nodes["policy"].parameters["policy_path"] == "be.onnx"
    both = load_bringup("sim", ["sim_bridge.robot:=mine.yaml", "robot:=all.yaml"])
    assert [n.parameters["robot"] for n in both] == ["mine.yaml", "all.yaml", "all.yaml"]
    assert all("use_sim_time" not in n.parameters for n in load_bringup("sim", ["use_sim_time:="]))


@pytest.mark.parametrize("override, message", [
    ("use_sim_tme:=true", "unknown argument 'use_sim_tme' for sim"),
    ("use_sim_time:=yes", "use_sim_time must be true or false, got 'yes'"),
    ("lqr_expert.enabled:=maybe", "lqr_expert.enabled must be true or false"),
    ("teleop.source:=joy", "no node 'teleop' in sim"),
    ("sim_bridge.:=1", "not of the form node.parameter:=value"),
    ("sim_bridge.mode", "not of the form"),
])
def test_bad_overrides_are_one_line_errors(override, message):
    with pytest.raises(DroilError, match=message.replace(".", r"\.")):
        load_bringup("sim", [override])
    with pytest.raises(DroilError, match=r"policy_path: train has no policy node"):
        load_bringup("train", ["policy_path:=a.onnx"])


def test_a_launch_takes_its_own_configurations_and_leaves_a_parents_alone():
    configurations = {a.name: a.default for a in launch_arguments("sim")}  # declared defaults
    configurations.update({"camera.fps": "30", "world": "moon",  # a parent launch file's
                           "policy_path": "be.onnx",  # a global beside policy.policy_path's default
                           "lqr_expert.enabled": "false", "policy.enabled": "true",
                           "sim_bridge.lockstep_timeout": "20.0"})  # undeclared: the node checks
    nodes = {n.executable: n for n in launch_nodes("sim", configurations)}
    assert not nodes["lqr_expert"].enabled and nodes["policy"].enabled
    assert nodes["policy"].parameters["policy_path"] == "be.onnx"
    assert nodes["sim_bridge"].parameters == {**read_bringup("sim")[0].parameters, "lockstep_timeout": 20.0}


def test_an_undeclared_node_parameter_is_one_line_and_exit_2():
    """A typo in a bringup override reaches the node, which refuses it (not silently ignored)."""
    [node] = [n for n in load_bringup("sim", ["lqr_expert.enabeld:=false"]) if n.executable == "lqr_expert"]
    result = subprocess.run(["timeout", "-s", "KILL", "60", *command(node)], capture_output=True, text=True,
                            env=dict(os.environ, **ros_env(DOMAIN)))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and lines[-1].startswith("lqr_expert: error: unknown parameter enabeld"), (
        result.stderr)


def test_launch_files_build_launch_descriptions():
    pytest.importorskip("launch_ros", reason="launch/launch_ros are not installable from PyPI; "
                                             "this runs where a ROS 2 distro is sourced")
    from launch.launch_description_sources import get_launch_description_from_python_launch_file

    from launch import LaunchContext

    for name in BRINGUPS:
        description = get_launch_description_from_python_launch_file(
            str(data_path("launch", f"{name}.launch.py")))
        context = LaunchContext()
        first = load_bringup(name)[0].executable
        context.launch_configurations[f"{first}.enabled"] = "false"  # as `first.enabled:=false`
        nodes = [node for entity in description.entities for node in entity.execute(context) or []]
        assert len(nodes) == sum(n.enabled for n in load_bringup(name)) - 1


class Probe(ProbeNode):
    def setup(self):
        self.record({"joint_states": (JointState, SENSOR_QOS), "imu/data": (Imu, SENSOR_QOS)})

    def tilt(self) -> float | None:
        joints, imus = self.received("joint_states"), self.received("imu/data")
        if not joints or not imus:
            return None
        return SPEC.build_observation(readings_from_msgs(joints[-1], imus[-1]))[0]


def started_pids(log_text: str) -> list[int]:
    return [int(line.split("(pid ")[1].rstrip(")")) for line in log_text.splitlines() if "(pid " in line]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def node_environment(timeout_pid: int) -> list[bytes]:
    """The environment of the node ``timeout`` runs, once it has exec'd (an exec in progress reads empty)."""
    children = Path(f"/proc/{timeout_pid}/task/{timeout_pid}/children")
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        pids = children.read_text().split()
        if pids and b"droil_ros.nodes" in Path(f"/proc/{pids[0]}/cmdline").read_bytes():
            environment = Path(f"/proc/{pids[0]}/environ").read_bytes()
            if environment:
                return environment.split(b"\0")
        time.sleep(0.01)
    raise AssertionError("the node under timeout did not start within 2 s")


def test_a_node_group_reports_an_exited_node_and_kills_one_past_its_limit(tmp_path):
    with NodeGroup(tmp_path, limit=30) as group:
        group.start(BringupNode("no_such_node"))
        group.procs["no_such_node"].wait(timeout=30)
        with pytest.raises(DroilError, match=r"no_such_node node exited during the test with code 1: .*"
                                             r"No module named droil_ros.nodes.no_such_node"):
            group.check(during="the test")
    with NodeGroup(tmp_path, env=ros_env(DOMAIN), limit=3) as group:  # teleop runs until stopped
        proc = group.start(BringupNode("teleop"))  # joystick mode: waits for /joy
        assert f"ROS_DOMAIN_ID={DOMAIN}".encode() in node_environment(proc.pid)
        assert proc.wait(timeout=60) in (-9, 137)  # killed by ``timeout`` at its limit, not by us
        assert group.exited() == "teleop"


def test_droil_bringup_sim_balances_and_stops_every_node(tmp_path):
    log_path = tmp_path / "bringup.log"
    with open(log_path, "w") as log:
        supervisor = subprocess.Popen(
            [sys.executable, "-m", "droil_ros.cli", "bringup", "sim", "sim_bridge.initial_tilt:=0.1"],
            stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, **ros_env(DOMAIN)),
            process_group=0)
        probe = Probe(DOMAIN)
        try:
            assert probe.wait_for(lambda: probe.tilt() is not None, 40.0), log_path.read_text()
            seen = len(probe.received("joint_states"))
            assert probe.wait_for(lambda: len(probe.received("joint_states")) > seen + 400, 30.0)
            # the LQR caught the initial 0.1 rad: a loaded machine delays its ticks and the robot
            # may still sway (a loaded run saw 0.073 rad at this point), so wait for upright
            assert probe.wait_for(lambda: abs(probe.tilt()) < 0.05, 30.0), probe.tilt()
            for _ in range(2):  # a terminal's Ctrl-C, twice (its process group: the supervisor)
                os.killpg(supervisor.pid, signal.SIGINT)
                time.sleep(0.2)
            assert supervisor.wait(timeout=30) == 0, log_path.read_text()
        finally:
            probe.close()
            if supervisor.poll() is None:
                supervisor.kill()
            for pid in started_pids(log_path.read_text()):
                if alive(pid):
                    os.killpg(pid, signal.SIGKILL)
    text = log_path.read_text()
    pids = started_pids(text)
    assert len(pids) == 2 and not any(alive(pid) for pid in pids), text
    assert "stopped: sim_bridge 0, lqr_expert 0" in text, text


NODE_ARGS = {"sim_bridge": [], "lqr_expert": [], "human_demo": [], "policy": [], "teleop": [],
             "demo_recorder": ["autostart:=true", "output_dir:={tmp}/bags"],
             "trainer": ["output_dir:={tmp}/policies"]}


def test_every_node_exits_0_when_its_process_group_gets_sigint_twice(tmp_path):
    """What ``ros2 launch`` does to its nodes on a terminal's Ctrl-C: the SIGINT reaches the whole
    process group, then launch forwards it again; no node may die with a traceback or exit != 0."""
    assert set(NODE_ARGS) == set(EXECUTABLES)
    env = dict(os.environ, **ros_env(DOMAIN))
    procs, logs, group = {}, {}, 0
    client = GraphClient(DOMAIN)
    try:
        for name, params in NODE_ARGS.items():
            logs[name] = open(tmp_path / f"{name}.log", "w")
            procs[name] = subprocess.Popen(
                [sys.executable, "-m", f"droil_ros.nodes.{name}", "--ros-args",
                 *(a for p in params for a in ("-p", p.format(tmp=tmp_path)))],
                stdout=logs[name], stderr=subprocess.STDOUT, env=env, process_group=group)
            group = group or procs[name].pid
        assert client.wait_for(lambda: set(NODE_ARGS) <= set(client.node.get_node_names()), 60.0), (
            client.node.get_node_names(), {n: (tmp_path / f"{n}.log").read_text() for n in NODE_ARGS})
        for _ in range(2):
            os.killpg(group, signal.SIGINT)
            time.sleep(0.2)
        codes = {}
        for name, proc in procs.items():
            try:
                codes[name] = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                codes[name] = "running 30 s after SIGINT"
    finally:
        client.close()
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
        for log in logs.values():
            log.close()
    text = {name: (tmp_path / f"{name}.log").read_text() for name in NODE_ARGS}
    assert codes == dict.fromkeys(NODE_ARGS, 0), (codes, text)
    assert not [name for name, t in text.items() if "Traceback" in t], text


HANGING_TEARDOWN = """
import ctypes, sys
from rclpy.node import Node
from droil_ros.nodes import common

common.TEARDOWN_LIMIT_S = 1.0


class HangsOnExit(Node):
    def __init__(self):
        super().__init__("hangs_on_exit")
        print("up", flush=True)

    def destroy_node(self):
        ctypes.PyDLL(None).sleep(600)  # stuck in C with the GIL held, as in Fast DDS's deadlock


sys.exit(common.spin_node(HangsOnExit))
"""


def test_a_node_whose_teardown_hangs_still_exits():
    """Fast DDS 3.2 can deadlock destroying a writer (a Ctrl-C'd process hung for good): spin_node's
    watchdog ends the process TEARDOWN_LIMIT_S later, with status 1 and the stack of the hang."""
    proc = subprocess.Popen([sys.executable, "-c", HANGING_TEARDOWN], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, **ros_env(DOMAIN)))
    try:
        assert proc.stdout.readline() == "up\n"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 1 and "in destroy_node" in err, err
