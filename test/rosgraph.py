"""A ROS graph of real node processes for the tests, observed by a probe node over DDS.

Each test module draws its ROS domain from a range of its own within 1..101 (so modules never
share one; Fast DDS refuses ids above 232 and ids above 101 can collide with Linux's ephemeral
ports): test_nodes_sim 1-20, test_recorder_node 21-40, test_policy_node 41-55,
test_policy_attacks 56-60, test_teleop_node 61-65, test_human_demo_node 66-70, test_trainer_node
71-80, test_bringup and test_launch 81-90, test_demo 91-95, test_bench_realtime 96-101.
It uses localhost-only discovery, so parallel runs and other graphs on the machine do not interfere.
Nodes run as ``python -m droil_ros.nodes.<name>`` in a session of their own under
``timeout -s KILL`` (none outlives a killed pytest by more than ten minutes) and are stopped by
process group at teardown, where SIGTERM must end them cleanly.

A module uses it as::

    DOMAIN = random.randint(1, 20)
    ROS_ENV = ros_env(DOMAIN)

    class Probe(ProbeNode):
        def setup(self): ...  # subscriptions, publishers, timers

    ros_graph, probe, launch = graph_fixtures(ROS_ENV, lambda: Probe(DOMAIN))
"""

import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from droil_ros.nodes.graph import GraphClient

# s: ``timeout -s KILL`` around every node: long enough for a class-scoped node or a training run
# on a loaded machine (120 s killed both), short enough that none outlives a killed pytest long
NODE_TIMEOUT = 600


def ros_env(domain: int) -> dict[str, str]:
    """The environment of a graph on ``domain`` with localhost-only discovery."""
    return {"ROS_DOMAIN_ID": str(domain), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
            "PYTHONUNBUFFERED": "1"}


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, grace: float = 3.0) -> int:
    """Signal the process group; SIGKILL it if it has not exited ``grace`` s later."""
    os.killpg(proc.pid, sig)
    try:
        return proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait()


class Launcher:
    """Start ``python -m droil_ros.nodes.<name> --ros-args -p k:=v ...`` with its output in
    ``log_dir/<name>.log`` (``proc.log_path``); at close, SIGTERM those still running and assert
    that each exited cleanly."""

    def __init__(self, log_dir: Path, env: dict[str, str], grace: float = 3.0):
        self.log_dir, self.env, self.grace, self.procs = log_dir, env, grace, []

    def __call__(self, name: str, **params) -> subprocess.Popen:
        args = [a for k, v in params.items() for a in ("-p", f"{k}:={v}")]
        command = ["timeout", "-s", "KILL", str(NODE_TIMEOUT), sys.executable, "-m",
                   f"droil_ros.nodes.{name}", "--ros-args", *args]
        log = open(self.log_dir / f"{name}.log", "w")
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env=dict(os.environ, **self.env))
        proc.log_path = self.log_dir / f"{name}.log"
        self.procs.append((proc, log))
        return proc

    def close(self):
        codes = {proc.log_path.stem: stop(proc, grace=self.grace)
                 for proc, _ in self.procs if proc.poll() is None}
        for _, log in self.procs:
            log.close()
        assert all(code == 0 for code in codes.values()), f"unclean exit on SIGTERM: {codes}"


class ProbeNode(GraphClient):
    """A client node (service calls, parameters: droil_ros.nodes.graph) that also keeps, through
    ``record``, what the graph publishes. Subclasses create their subscriptions, publishers and
    timers in ``setup``, which runs before the executor starts spinning."""

    def __init__(self, domain: int, name: str = "probe"):
        self.messages = defaultdict(list)  # topic -> [(monotonic s, message)]
        self.published = defaultdict(list)  # topic -> [source timestamp (s, system clock)]
        super().__init__(domain, name)

    def record(self, topics: dict) -> None:
        """Keep every message on ``topics`` ({topic: (type, qos)}) with when it arrived and
        when its publisher sent it."""
        for topic, (kind, qos) in topics.items():
            self.node.create_subscription(kind, topic, self._recorder(topic), qos)

    def _recorder(self, topic: str):
        def record(msg, info):
            with self.lock:
                self.messages[topic].append((time.monotonic(), msg))
                self.published[topic].append(info["source_timestamp"] * 1e-9)
        return record

    def timed(self, topic: str, since: float = 0.0) -> list:
        """(monotonic arrival time, message) of each message received since ``since``."""
        with self.lock:
            return [(t, m) for t, m in self.messages[topic] if t >= since]

    def publish_times(self, topic, since: float = 0.0) -> np.ndarray:
        """When the publisher sent each message received since ``since`` (system clock, s)."""
        with self.lock:
            return np.array([p for (t, _), p in zip(self.messages[topic], self.published[topic], strict=True)
                             if t >= since])

    def received(self, topic: str, since: float = 0.0) -> list:
        return [m for _, m in self.timed(topic, since)]

    def sim_time(self, at: float | None = None) -> float:
        """The latest /clock seen (by monotonic time ``at``) in seconds, -1 before any; the
        probe must ``record`` /clock."""
        clocks = [m for t, m in self.timed("/clock") if at is None or t <= at]
        return clocks[-1].clock.sec + clocks[-1].clock.nanosec * 1e-9 if clocks else -1.0


def graph_fixtures(env: dict[str, str], make_probe: Callable[[], ProbeNode], grace: float = 3.0):
    """A test module's fixtures, to assign to module names (pytest finds them there):
    ``ros_graph`` (module-scoped, autouse: ``env`` in os.environ), ``probe`` (a new probe for
    each test) and ``launch`` (a Launcher for each test, logging to its tmp_path)."""

    @pytest.fixture(scope="module", autouse=True, name="ros_graph")
    def ros_graph():
        with pytest.MonkeyPatch.context() as patch:
            for key, value in env.items():
                patch.setenv(key, value)
            yield

    @pytest.fixture(name="probe")
    def probe():
        p = make_probe()
        yield p
        p.close()

    @pytest.fixture(name="launch")
    def launch(tmp_path):
        launcher = Launcher(tmp_path, env, grace)
        yield launcher
        launcher.close()

    return ros_graph, probe, launch
