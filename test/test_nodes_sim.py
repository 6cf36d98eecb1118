"""sim_bridge and lqr_expert as real processes talking over DDS, observed by a probe node.

Domain, processes and teardown are rosgraph.py's: this module draws its ROS domain from 1..100.
"""

import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosgraph import ProbeNode, graph_fixtures, ros_env, stop
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Imu, JointState
from std_msgs.msg import Bool, Float64MultiArray
from std_srvs.srv import Trigger

from droil_ros.nodes.common import (
    CLOCK_QOS,
    COMMAND_QOS,
    LATCHED_QOS,
    SENSOR_WITNESS_QOS,
    command_msg,
    imu_msg,
    joint_state_msg,
    readings_from_msgs,
)
from droil_ros.robots import load_spec
from droil_ros.sim.envs import make_env

DOMAIN = random.randint(1, 20)
ROS_ENV = ros_env(DOMAIN)
SPEC = load_spec("wheel_legged")
THETA = SPEC.obs_names.index("theta")
TOPICS = {"joint_states": (JointState, SENSOR_WITNESS_QOS), "imu/data": (Imu, SENSOR_WITNESS_QOS),
          "/clock": (Clock, CLOCK_QOS), "/sim_bridge/fallen": (Bool, LATCHED_QOS),
          "effort_controller/commands": (Float64MultiArray,
                                         QoSProfile(reliability=ReliabilityPolicy.RELIABLE, depth=10000))}


class Probe(ProbeNode):
    """Records what the graph publishes; publishes effort commands."""

    def setup(self):
        self.record(TOPICS)
        self.command_pub = self.node.create_publisher(Float64MultiArray, "effort_controller/commands",
                                                      COMMAND_QOS)
        self.client(Trigger, "/sim_bridge/reset")  # before the node starts: see GraphClient.client

    def fallen(self) -> bool | None:
        values = self.received("/sim_bridge/fallen")
        return values[-1].data if values else None

    def commands(self) -> np.ndarray:
        return np.array([m.data for m in self.received("effort_controller/commands")])

    def tilts(self, since: float = 0.0) -> np.ndarray:
        """Tilt of every state (JointState + Imu of one stamp), through the robot spec."""
        imus = {_stamp(m): m for m in self.received("imu/data", since)}
        return np.array([SPEC.build_observation(readings_from_msgs(js, imus[_stamp(js)]))[THETA]
                         for js in self.received("joint_states", since) if _stamp(js) in imus])


def _stamp(msg) -> tuple[int, int]:
    return msg.header.stamp.sec, msg.header.stamp.nanosec


ros_graph, probe, launch = graph_fixtures(ROS_ENV, lambda: Probe(DOMAIN))


def test_messages_carry_the_readings_the_spec_reads():
    env = make_env(SPEC, "stand")
    env.reset(seed=0, options={"tilt": 0.2})
    readings = env.unwrapped.readings()
    stamp = Time(sec=1, nanosec=5)
    back = readings_from_msgs(joint_state_msg(readings, stamp), imu_msg(readings, stamp, "imu_link"))
    np.testing.assert_array_equal(SPEC.build_observation(back), SPEC.build_observation(readings))
    assert SPEC.build_observation(back)[THETA] == pytest.approx(0.2)


def test_lqr_stands_in_lockstep_for_10_sim_seconds(launch, probe):
    launch("sim_bridge", mode="lockstep", initial_tilt=0.2, seed=0)
    # lockstep offers state 0 until a command answers it: the probe sees the episode from its start
    assert probe.wait_for(lambda: len(probe.tilts()) and probe.fallen() is False, 20.0)
    launch("lqr_expert", use_sim_time="true")
    assert probe.wait_for(lambda: probe.sim_time() > 0.0, 20.0), "lockstep never started"
    assert probe.wait_for(lambda: probe.sim_time() >= 10.0, 40.0), f"sim time {probe.sim_time()}"
    tilts = probe.tilts()
    assert abs(tilts[0]) == pytest.approx(0.2, abs=0.01)
    assert np.max(np.abs(tilts)) < 0.3
    assert np.abs(tilts[-1]) < 0.02  # balanced, not just not fallen
    assert not any(m.data for m in probe.received("/sim_bridge/fallen"))
    commands = probe.commands()
    assert np.all(np.isfinite(commands)) and np.any(commands != 0.0)


def test_falls_without_a_controller_and_reset_stands_it_up(launch, probe):
    bridge = launch("sim_bridge", mode="realtime", initial_tilt=0.2, hold_until_command="false")
    assert probe.wait_for(lambda: probe.fallen() is True, 15.0), "never fell"
    fall_tilt = SPEC.task("stand").fall_tilt
    assert probe.wait_for(lambda: np.any(np.abs(probe.tilts()) > fall_tilt), 2.0), "not lying"
    probe.command_pub.publish(command_msg([1.0, 2.0, 3.0]))  # wrong length: ignored with a warning

    client = probe.node.create_client(Trigger, "/sim_bridge/reset")
    assert client.wait_for_service(timeout_sec=5.0)
    asked = time.monotonic()
    response = probe.result(client.call_async(Trigger.Request()), 5.0)
    assert response.success and "episode 1" in response.message
    assert probe.wait_for(lambda: probe.fallen() is False, 2.0)
    assert probe.wait_for(lambda: np.any(np.abs(probe.tilts(asked)) < 0.25), 2.0), "not upright"
    assert "ignored command: command has 3 values, expected 2" in bridge.log_path.read_text()


def test_perturbation_is_set_at_run_time_and_bad_values_are_rejected(launch, probe):
    launch("sim_bridge", mode="lockstep", initial_tilt=0.1)
    launch("lqr_expert", use_sim_time="true")
    assert probe.wait_for(lambda: probe.sim_time() > 1.0 and probe.fallen() is False, 20.0)
    params = AsyncParameterClient(probe.node, "sim_bridge")
    assert params.wait_for_services(timeout_sec=5.0)

    def set_perturbation(value: str):
        future = params.set_parameters([Parameter("perturbation", Parameter.Type.STRING, value)])
        return probe.result(future, 5.0).results[0]

    for bad, reason in [("mass=-1", "must be >= 0"), ("obs_noise=0.1", "obs_noise"),
                        ("mass@no_such_body=2", "no body named 'no_such_body'")]:
        result = set_perturbation(bad)
        assert not result.successful and reason in result.reason, result.reason
    assert probe.fallen() is False
    assert set_perturbation("gear=0").successful  # motors without strength: the LQR cannot help
    assert probe.wait_for(lambda: probe.fallen() is True, 10.0)


def test_lqr_survives_the_sim_and_stops_commanding(launch, probe):
    bridge = launch("sim_bridge", mode="lockstep", initial_tilt=0.2)
    expert = launch("lqr_expert")
    assert probe.wait_for(lambda: probe.sim_time() > 0.5 and probe.commands().size, 20.0)
    stop(bridge, signal.SIGKILL)  # a crash: nothing is sent on the way out
    assert probe.wait_for(lambda: not np.any(probe.commands()[-1]), 2.0), "no zero effort"
    time.sleep(0.3)
    assert expert.poll() is None
    assert np.all(np.isfinite(probe.commands()))


def test_lockstep_keeps_one_state_in_flight_across_resets_and_pauses(launch, probe):
    """Also on a loaded machine: no timeout steps a state without its command, and the LQR's
    watchdog runs on sim time, so it never answers a state the simulation waits on."""
    bridge = launch("sim_bridge", mode="lockstep", initial_tilt=0.1)
    launch("lqr_expert", use_sim_time="true")
    # the witness must see the LQR's commands too (its discovery can lag seconds behind the bridge's)
    assert probe.wait_for(lambda: probe.sim_time() > 0.2 and probe.commands().size, 30.0), \
        f"lockstep never started, or the probe sees no command: sim time {probe.sim_time()}"
    for _ in range(5):  # resets while a state waits for its answer
        assert probe.call(Trigger, "/sim_bridge/reset", Trigger.Request()).success
        time.sleep(0.05)
    assert probe.set_parameter("sim_bridge", "paused", True) == (True, "")
    time.sleep(0.5)  # what was in flight arrives
    paused_at = probe.sim_time()
    time.sleep(0.5)
    assert probe.sim_time() == paused_at  # paused: not a step
    assert probe.call(Trigger, "/sim_bridge/reset", Trigger.Request()).success  # paused: waits
    assert probe.set_parameter("sim_bridge", "paused", False) == (True, "")
    assert probe.wait_for(lambda: probe.sim_time() > paused_at + 0.2, 20.0), "not resumed"
    assert probe.set_parameter("sim_bridge", "paused", True) == (True, "")
    time.sleep(1.0)  # every command sent arrives: none is missing at the end of the record
    # each state waited for a command (in send order, no two states without one between them,
    # once the LQR answers): two states in flight would give "sscc" after a reset
    with probe.lock:
        sent = sorted([(t, "s") for t in probe.published["joint_states"]]
                      + [(t, "c") for t in probe.published["effort_controller/commands"]])
    kinds = "".join(kind for _, kind in sent)
    assert kinds.count("s") > 100 and "ss" not in kinds[kinds.index("c"):], kinds
    assert "lockstep: no command" not in bridge.log_path.read_text()


@pytest.mark.parametrize("robot, message", [("hopper", "observes through Gymnasium"),
                                            ("no_such_robot", "unknown robot 'no_such_robot'")])
def test_unsupported_robot_is_one_line_and_exit_2(robot, message):
    result = subprocess.run(
        ["timeout", "-s", "KILL", "60", sys.executable, "-m", "droil_ros.nodes.sim_bridge",
         "--ros-args", "-p", f"robot:={robot}"],
        capture_output=True, text=True, env=dict(os.environ, **ROS_ENV))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("sim_bridge: error: ") and message in lines[0]
