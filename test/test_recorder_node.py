"""demo_recorder over real DDS: sim_bridge (lockstep) + lqr_expert + demo_recorder as processes.

A bag recorded from the LQR must convert into transitions where each action is exactly what the
LQR computes from the recorded observation and each s' is the next transition's s; a recorder
killed with SIGKILL must leave a bag that reads up to its last flush. Domain, processes and
teardown are rosgraph.py's: this module draws its ROS domain from 101..160.
"""

import random
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import yaml
from rosbags.rosbag2 import Reader
from rosgraph import ProbeNode, graph_fixtures, ros_env, stop
from rosgraph_msgs.msg import Clock
from std_srvs.srv import Trigger

from droil_ros.data.bag import dataset_from_bag, read_bag_transitions, typestore
from droil_ros.nodes.common import CLOCK_QOS
from droil_ros.robots import load_spec
from droil_ros.sim.lqr import LQRController

DOMAIN = random.randint(21, 40)
ROS_ENV = ros_env(DOMAIN)
SPEC = load_spec("wheel_legged")
FLUSH = 0.2
GRACE = 5.0  # s a node has to exit on SIGTERM
TS = typestore()


class Probe(ProbeNode):
    """Watches /clock (sim time against the wall clock) and calls the recorder's services."""

    def setup(self):
        self.record({"/clock": (Clock, CLOCK_QOS)})
        for service in ("/demo_recorder/start", "/demo_recorder/stop"):
            self.client(Trigger, service)  # before the nodes start: see GraphClient.client

    def trigger(self, service: str) -> Trigger.Response:
        return self.call(Trigger, service, Trigger.Request())


ros_graph, probe, launch = graph_fixtures(ROS_ENV, lambda: Probe(DOMAIN), GRACE)


def logged(proc: subprocess.Popen, *texts: str) -> bool:
    log = proc.log_path.read_text()
    return all(text in log for text in texts)


def start_demo(launch, probe, tmp_path) -> tuple[subprocess.Popen, float]:
    """The recorder and the LQR, then sim_bridge in lockstep once the recorder hears the LQR;
    returns the recorder and the sim time when it records states and commands."""
    recorder = launch("demo_recorder", autostart="true", output_dir=str(tmp_path / "bags"),
                      flush_period=FLUSH)
    launch("lqr_expert", use_sim_time="true")
    assert probe.wait_for(lambda: logged(recorder, "/effort_controller/commands: 1 publisher"),
                          30.0), recorder.log_path.read_text()
    # lockstep never steps a state without its command, however late it comes (no hole)
    launch("sim_bridge", mode="lockstep", initial_tilt=0.2, seed=0)
    assert probe.wait_for(lambda: logged(recorder, "recording /joint_states", "recording /imu/data",
                                         "recording /effort_controller/commands"), 30.0), (
        recorder.log_path.read_text())
    assert probe.wait_for(lambda: probe.sim_time() >= 0.0, 10.0)
    return recorder, probe.sim_time()


def test_recorded_lqr_demonstration_converts_exactly(launch, probe, tmp_path):
    recorder, recording = start_demo(launch, probe, tmp_path)
    assert probe.wait_for(lambda: probe.sim_time() >= recording + 3.0, 40.0), probe.sim_time()
    response = probe.trigger("/demo_recorder/stop")
    assert response.success, response.message
    path = response.message.removeprefix("stopped: ").rsplit(": ", 1)[0]
    assert path.startswith(str(tmp_path / "bags" / "demo_")) and path.endswith("Z")
    assert not probe.trigger("/demo_recorder/stop").success  # not recording any more

    with Reader(path) as reader:  # a closed bag, as rosbags and ros2 bag expect it
        topics = reader.topics
    custom = yaml.safe_load(Path(path, "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert custom["custom_data"]["sim_bridge_lockstep_timeouts"] == "0", custom  # the bridge's count
    assert {"/joint_states", "/imu/data", "/effort_controller/commands", "/sim_bridge/fallen"} <= set(topics)
    t = read_bag_transitions(path, SPEC, "stand")
    # how far a loaded recorder got through its queue when ~/stop came is the machine's business
    assert len(t) > 100, t.report
    # one episode: s' of each transition is the next one's s, one period later, except where DDS
    # lost a message on its way to a starved recorder (a best-effort state, or a command a reliable
    # writer's history no longer held): there the conversion cuts the run (a timeout) and says why
    holes = np.flatnonzero(t.timeouts[:-1])
    unbroken = np.ones(len(t) - 1, bool)
    unbroken[holes] = False
    np.testing.assert_array_equal(t.next_observations[:-1][unbroken], t.observations[1:][unbroken],
                                  err_msg=t.report)
    np.testing.assert_allclose(np.diff(t.times)[unbroken], SPEC.control_dt, atol=1e-9)
    assert len(holes) <= 0.02 * len(t), (holes, t.report)
    dropped = re.search(r"dropped: (\d+) states without a command, (\d+) before a lost state", t.report)
    assert dropped, t.report
    without_command, before_lost = map(int, dropped.groups())
    assert before_lost + without_command >= len(holes), t.report  # each hole is one it reports
    assert t.episode_starts.sum() <= 1 + len(holes) and not t.terminals.any()
    assert t.timeouts[-1]
    # each action is the LQR's answer to the recorded observation (x_ref stays 0 standing)
    lqr = LQRController(SPEC)
    expected = np.array([lqr(obs) for obs in t.observations])
    assert lqr.x_ref == 0.0
    np.testing.assert_allclose(t.actions, expected, rtol=1e-6, atol=1e-9)
    assert np.ptp(t.actions) > 0.0

    ds = dataset_from_bag(path, SPEC, "stand")
    assert len(ds) == len(t) and np.isfinite(ds.rewards).all()
    np.testing.assert_allclose(ds.actions, t.actions.astype(np.float32))

    # a second bag, closed by SIGTERM instead of ~/stop
    response = probe.trigger("/demo_recorder/start")
    assert response.success and response.message != path
    second = response.message.removeprefix("recording to ")
    assert "already recording" in probe.trigger("/demo_recorder/start").message
    time.sleep(0.3)
    assert stop(recorder, grace=GRACE) == 0
    assert logged(recorder, f"stopped: {second}")
    with Reader(second) as reader:
        assert reader.message_count > 0


def test_sigkill_leaves_a_bag_readable_up_to_the_last_flush(launch, probe, tmp_path):
    recorder, recording = start_demo(launch, probe, tmp_path)
    assert probe.wait_for(lambda: probe.sim_time() >= recording + 1.5, 40.0), probe.sim_time()
    killed_at = time.monotonic()
    stop(recorder, signal.SIGKILL)
    time.sleep(0.3)

    (bag,) = (tmp_path / "bags").iterdir()
    files = sorted(p.name for p in bag.iterdir())
    # a kill during a flush may leave the temporary metadata file; metadata.yaml is whole
    assert set(files) - {"metadata.yaml.tmp"} == {f"{bag.name}_0.mcap", "metadata.yaml"}, files
    with Reader(bag) as reader:  # the directory (metadata.yaml as of a flush)
        assert sum(1 for _ in reader.messages()) > 0
    with Reader(bag / f"{bag.name}_0.mcap") as reader:  # the MCAP file alone, as of the last flush
        stamps = [s.sec + s.nanosec * 1e-9 for s in (
            TS.deserialize_cdr(raw, c.msgtype).header.stamp
            for c, _, raw in reader.messages() if c.topic == "/joint_states")]
        assert sum(1 for _ in reader.messages()) == reader.message_count > 0
    # everything up to the last flush is there, nothing later (how long before the kill that flush
    # was is the flush thread's timing, which a loaded machine stretches: not asserted)
    assert recording <= max(stamps) <= probe.sim_time(killed_at + 0.2)
    ds = dataset_from_bag(bag, SPEC, "stand")
    assert len(ds) >= (max(stamps) - min(stamps)) * SPEC.control_rate_hz - 25, ds.meta["source"]
    assert ds.timeouts[-1] and not ds.terminals.any()
