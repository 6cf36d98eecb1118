"""Attacks on the policy node from other participants on the bus (issue #16), each a real rclpy
client in a process of its own over DDS: malicious policy files (built with the onnx helper API
in droil_ros.bench.swap_attacks: a Loop that never ends, a slow Loop, 0/0, a file of 1 GiB, a
NaN that only shows on the robot), paths it must not load, implausible sensor messages and
e-stop tampering. Each case failed on the node before #16 (it crashed, stalled, acted on the
input or loaded the file) and must now end in a rejection or a named fault with the safe action,
the node still running.

No assert needs an idle machine: every wait is generous, and the command gaps during a swap are
measured by ``python -m droil_ros.bench.swap_attacks``, not asserted here.
"""

import hashlib
import json
import math
import random
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rosgraph import Launcher, ProbeNode, graph_fixtures, ros_env, stop
from sensor_msgs.msg import Imu, JointState
from std_msgs.msg import Bool, Float64MultiArray, Header, String
from std_srvs.srv import Trigger

from droil_ros.bench.swap_attacks import (
    external_data,
    linear,
    looped,
    memory_bomb,
    nan_always,
    nan_near_tilt,
    padded,
    slow_near_tilt,
)
from droil_ros.nodes.common import LATCHED_QOS, SENSOR_QOS
from droil_ros.nodes.policy import TRIGGERS
from droil_ros.robots import load_spec

DOMAIN = random.randint(56, 60)
ROS_ENV = ros_env(DOMAIN)
SPEC = load_spec("wheel_legged")
TILT = 0.1  # rad: the sensors say the robot leans this much; a linear policy answers GAIN * TILT
DIAGNOSTICS = "policy: control loop"
VET_TIMEOUT = 4.0  # s: the victim's vet_timeout, from the vetting child's imports done (a hang costs this)
SWAP_TIMEOUT = 30.0  # s: a verdict comes within this even on a loaded machine
TOKEN = "let-me-release-0123456789"
RECENT = 0.5  # s: a command older than this is not what the node does now
TOPICS = {"effort_controller/commands": (Float64MultiArray, 100), "/diagnostics": (DiagnosticArray, 50),
          "/policy/swap_status": (String, LATCHED_QOS)}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    allowed, elsewhere = tmp_path_factory.mktemp("allowed"), tmp_path_factory.mktemp("elsewhere")
    made = {"dir": allowed, "good": linear(allowed / "good.onnx"), "good2": linear(allowed / "good2.onnx"),
            "nan": nan_always(allowed / "nan.onnx"), "sleeper": nan_near_tilt(allowed / "sleeper.onnx", TILT),
            "slow_sleeper": slow_near_tilt(allowed / "slow_sleeper.onnx", TILT),
            "hang": looped(allowed / "hang.onnx", None), "slow": looped(allowed / "slow.onnx", 200_000),
            "external": external_data(allowed / "external.onnx"),
            "memory": memory_bomb(allowed / "memory.onnx"),
            "slow_build": padded(allowed / "slow_build.onnx", int(1.9 * 2**20)),
            "outside": linear(elsewhere / "outside.onnx"), "huge": allowed / "huge.onnx"}
    with open(made["huge"], "wb") as f:  # 1 GiB, sparse: costs no disk
        f.truncate(2**30)
    made["symlink"] = allowed / "escape.onnx"
    made["symlink"].symlink_to(made["outside"])
    return made


# the client ---------------------------------------------------------------------------------

def _joint_state(names=("left_wheel_joint", "right_wheel_joint"), position=None) -> JointState:
    n = len(names)
    return JointState(name=list(names), position=list(position or [0.0] * n), velocity=[0.0] * n,
                      effort=[0.0] * n)


def _imu(tilt: float = TILT, scale: float = 1.0) -> Imu:
    msg = Imu(header=Header(frame_id=SPEC.imu["frame_id"]))
    msg.orientation.y, msg.orientation.w = scale * math.sin(tilt / 2), scale * math.cos(tilt / 2)
    return msg


class Attacker(ProbeNode):
    """Publishes the robot's sensors at 100 Hz, stamped now unless told otherwise, and whatever
    else a test asks for; records commands, diagnostics and swap outcomes."""

    def setup(self):
        self.record(TOPICS)
        self.joint_pub = self.node.create_publisher(JointState, "joint_states", SENSOR_QOS)
        self.imu_pub = self.node.create_publisher(Imu, "imu/data", SENSOR_QOS)
        self.estop_pub = self.node.create_publisher(Bool, "/policy/estop", 10)
        self.enable_pub = self.node.create_publisher(Bool, "/policy/enable", 10)
        self.updates_pub = self.node.create_publisher(String, "/droil/policy_updates", 10)
        self.client(Trigger, "/policy/reset_estop")  # before the node starts: see GraphClient.client
        self.sensors = (_joint_state(), _imu())
        self.stamp = True  # stamp with the current time
        self.enable = True
        self.node.create_timer(0.01, self._publish)

    def _publish(self):
        joint_state, imu = self.sensors
        if self.stamp:
            now = self.node.get_clock().now().to_msg()
            joint_state.header.stamp = imu.header.stamp = now
        self.joint_pub.publish(joint_state)
        self.imu_pub.publish(imu)
        if self.enable:
            self.enable_pub.publish(Bool(data=True))

    def command(self) -> np.ndarray | None:
        """The newest command if it is recent (a node that stopped commanding has none)."""
        commands = self.received("effort_controller/commands", time.monotonic() - RECENT)
        return np.array(commands[-1].data) if commands else None

    def commands(self, since: float) -> np.ndarray:
        return np.array([m.data for m in self.received("effort_controller/commands", since)])

    def diagnostics(self, since: float = 0.0) -> dict | None:
        for array in reversed(self.received("/diagnostics", since)):
            for status in array.status:
                if status.name == DIAGNOSTICS:
                    return {"level": status.level, "message": status.message,
                            **{kv.key: kv.value for kv in status.values}}
        return None

    def acting(self, value: float = TILT) -> bool:
        command = self.command()
        return command is not None and np.allclose(command, value, atol=1e-3)

    def safe(self) -> bool:
        command = self.command()
        return command is not None and not np.any(command)

    def wait_fault(self, kind: str, timeout: float = 10.0) -> dict:
        """The node reports fault ``kind`` (counted, ERROR) and sends the safe action."""
        before = int((self.diagnostics() or {}).get(f"faults_{kind}", 0))

        def faulted():
            status = self.diagnostics()
            return (status is not None and int(status[f"faults_{kind}"]) > before
                    and status["level"] == b"\x02" and self.safe())

        assert self.wait_for(faulted, timeout), self.diagnostics()
        return self.diagnostics()

    def swap_outcome(self, asked: float, path: str | None = None) -> dict:
        def outcome():
            return next((s for s in self.swap_status(asked) if path is None or s["path"] == path), None)

        assert self.wait_for(outcome, SWAP_TIMEOUT), self.swap_status(0.0)
        return outcome()

    def swap_status(self, since: float) -> list[dict]:
        return [json.loads(m.data) for m in self.received("/policy/swap_status", since)]

    def set_policy_path(self, path) -> tuple[bool, str]:
        return self.set_parameter("policy", "policy_path", str(path))


ros_graph, probe, launch = graph_fixtures(ROS_ENV, lambda: Attacker(DOMAIN))


@pytest.fixture(scope="class")
def victim(request, files, tmp_path_factory):
    """One policy node (autostart, the linear policy, auto_swap on, header stamps checked) and its
    attacker, shared by the tests of a class: each leaves it acting. Class-scoped: it is gone
    before a test launches another node named policy. Its trigger: the class's parameter, if
    any (``indirect``), else the timer."""
    launcher, attacker = Launcher(tmp_path_factory.mktemp("victim"), ROS_ENV), Attacker(DOMAIN)
    try:
        attacker.proc = launcher("policy", policy_path=files["good"], policy_dir=files["dir"],
                                 auto_swap="true", autostart="true", vet_timeout=VET_TIMEOUT,
                                 use_header_stamps="true", max_obs_age=0.25, diagnostics_period=0.2,
                                 trigger=getattr(request, "param", "timer"))
        assert attacker.wait_for(attacker.acting, 30.0), attacker.diagnostics()
        yield attacker
        assert attacker.proc.poll() is None, "the node exited"
    finally:
        attacker.close()
        launcher.close()


def _still_acting(victim, since: float) -> None:
    """The node is alive, the old policy acts, and commands kept coming meanwhile."""
    assert victim.proc.poll() is None, "the node exited"
    assert victim.wait_for(victim.acting, 10.0), victim.diagnostics()
    assert len(victim.commands(since)) > 0, "no commands while the swap was handled"


# the attacks on one node ----------------------------------------------------------------------------

LONG = "/tmp/" + "x" * 300 + ".onnx"
NAMES = ("left_wheel_joint", "right_wheel_joint")


def _zero_quaternion():
    imu = _imu()
    imu.orientation.y = imu.orientation.w = 0.0
    return _joint_state(), imu


def _orientation_unknown():
    imu = _imu()
    imu.orientation_covariance[0] = -1.0
    return _joint_state(), imu


class TestPolicyFiles:
    @pytest.mark.parametrize("case, reason", [
        ("long", "File name too long"),
        ("outside", "resolves outside policy_dir"),
        ("symlink", "resolves outside policy_dir"),
    ])
    def test_paths_it_must_not_load_are_refused_at_once(self, victim, files, case, reason):
        """A 300-character path crashed the node (OSError in the parameter callback); any readable
        file anywhere, also through a symlink, loaded."""
        since = time.monotonic()
        path = LONG if case == "long" else files[case]
        ok, why = victim.set_policy_path(path)
        assert not ok and reason in why, why
        victim.updates_pub.publish(String(data=str(path)))  # auto_swap: the same checks
        outcome = victim.swap_outcome(since)
        assert not outcome["ok"] and reason in outcome["reason"], outcome
        _still_acting(victim, since)


    @pytest.mark.parametrize("case, reason", [
        ("huge", "over max_policy_bytes"),
        ("hang", "did not finish within"),
        ("slow", "inference p99"),
        ("nan", "NaN or Inf actions"),
        ("external", "external files"),
        ("memory", "inference fails on the test batch"),
        ("slow_build", "building the session takes"),
    ])
    def test_bad_policy_files_are_rejected_and_the_old_one_keeps_acting(self, victim, files, case, reason):
        """Before, a 1 GiB file stalled every command while ONNX Runtime built it, a Loop that never
        ends took the loader for ever, a slow or NaN policy was accepted and acted, a policy that
        allocates 1 GiB per inference ran in the node."""
        since, asked = time.monotonic(), time.time()
        ok, why = victim.set_policy_path(files[case])
        assert ok, why  # exists under policy_dir: the verdict comes on ~/swap_status
        outcome = victim.swap_outcome(since, str(files[case]))
        assert not outcome["ok"] and reason in outcome["reason"], outcome
        assert outcome["policy_id"].startswith("good-")
        _still_acting(victim, since)
        assert victim.diagnostics()["policy_id"].startswith("good-")
        if case == "hang":  # VET_TIMEOUT s of loading: a loop that waited for it would send nothing
            answered = victim.publish_times("/policy/swap_status", since)[0]
            sent = victim.publish_times("effort_controller/commands", since)
            during = np.count_nonzero((sent > asked) & (sent < answered - 1.0))
            assert during > (answered - 1.0 - asked) / SPEC.control_dt / 10, (during, answered - asked)


    def test_announcements_pin_the_file_hash_and_auto_swap_is_read_only(self, victim, files):
        since = time.monotonic()
        victim.updates_pub.publish(String(data=json.dumps({"path": str(files["good2"]), "sha256": "0" * 64})))
        outcome = victim.swap_outcome(since)
        assert not outcome["ok"] and "SHA-256 differs" in outcome["reason"], outcome

        since = time.monotonic()
        digest = hashlib.sha256(files["good2"].read_bytes()).hexdigest()
        victim.updates_pub.publish(String(data=f"{files['good2']} sha256={digest}"))
        outcome = victim.swap_outcome(since)
        assert outcome["ok"] and outcome["policy_id"].startswith("good2-"), outcome
        _still_acting(victim, since)

        ok, why = victim.set_parameter("policy", "auto_swap", False)
        assert not ok and "read-only" in why, why


    @pytest.mark.parametrize("case, kind", [("sleeper", "policy_output"), ("slow_sleeper", "policy_slow")])
    def test_a_policy_that_turns_bad_on_the_robot_is_disabled(self, victim, files, case, kind):
        """It passes vetting (NaN, or 80 ms of Loop, only near the robot's real tilt): before, its
        NaN became zero torque while diagnostics said 'OK: acting', and a slow one dropped the loop
        rate; now each is a fault, and max_policy_faults in a row disable it until another policy
        is swapped in."""
        since = time.monotonic()
        assert victim.set_policy_path(files[case])[0]
        assert victim.swap_outcome(since, str(files[case]))["ok"]
        victim.wait_fault(kind)

        def disabled():
            status = victim.diagnostics() or {}
            return (status.get("policy_disabled") == "True" and status["level"] == b"\x02"
                    and "policy_disabled" in status["message"] and victim.safe())

        assert victim.wait_for(disabled, 5.0), victim.diagnostics()
        since = time.monotonic()
        assert victim.set_policy_path(files["good"])[0]
        assert victim.swap_outcome(since, str(files["good"]))["ok"]
        assert victim.wait_for(victim.acting, 10.0), victim.diagnostics()


@pytest.mark.parametrize("victim", TRIGGERS, indirect=True)
class TestSensors:
    """The same kind of node, anew (a fresh node per class of attacks), once per trigger: a refused
    message must give the safe action also where states trigger the ticks."""



    @pytest.mark.parametrize("kind, sensors", [
        ("bad_orientation", _zero_quaternion),
        ("bad_orientation", lambda: (_joint_state(), _imu(scale=1.5))),
        ("orientation_unknown", _orientation_unknown),
        ("imu_frame", lambda: (_joint_state(), Imu())),
        ("duplicate_joints", lambda: (_joint_state(NAMES + ("left_wheel_joint",), [0.0, 0.0, 5.0]), _imu())),
        ("out_of_range", lambda: (_joint_state(position=[1e30, 1e30]), _imu())),
        ("out_of_range", lambda: (_joint_state(position=[1e300, 0.0]), _imu())),
        ("oversize", lambda: (_joint_state(NAMES + tuple(f"j{k}" for k in range(10_000))), _imu())),
    ], ids=["zero_quaternion", "quaternion_norm_1.5", "rep145_no_orientation", "empty_imu", "duplicate_names",
            "position_1e30", "position_1e300", "10000_names"])
    def test_implausible_sensors_are_named_faults(self, victim, kind, sensors):
        """Each read as a plausible state before (a zero quaternion as upright, the later duplicate
        winning, 1e30 m as a position) and the policy acted on it with diagnostics 'OK'."""
        victim.sensors = sensors()
        try:
            status = victim.wait_fault(kind)
            assert kind in status["last_fault"], status
        finally:
            victim.sensors = (_joint_state(), _imu())
        assert victim.wait_for(victim.acting, 10.0), victim.diagnostics()


    def test_a_nearly_unit_quaternion_is_normalised(self, victim):
        """Norm 1.02 (rounding in a driver): acted on as the rotation it means; before, the pitch
        came out 4 % too large."""
        victim.sensors = (_joint_state(), _imu(scale=1.02))
        try:
            time.sleep(0.3)
            assert victim.wait_for(victim.acting, 5.0), (victim.command(), victim.diagnostics())
        finally:
            victim.sensors = (_joint_state(), _imu())


    @pytest.mark.parametrize("stamp", ["zero", "old"])
    def test_header_stamps_are_checked(self, victim, stamp):
        joint_state, imu = _joint_state(), _imu()
        if stamp == "old":
            old = victim.node.get_clock().now().to_msg()
            old.sec -= 10
            joint_state.header.stamp = imu.header.stamp = old
        victim.stamp = False
        victim.sensors = (joint_state, imu)
        try:
            victim.wait_fault("stamp")
        finally:
            victim.sensors, victim.stamp = (_joint_state(), _imu()), True
        assert victim.wait_for(victim.acting, 10.0), victim.diagnostics()


# e-stop -------------------------------------------------------------------------------------

def test_the_estop_is_released_only_with_the_token_and_survives_a_restart(launch, probe, files, tmp_path):
    """Before, any node released a latched e-stop through ~/reset_estop, and a restarted node had
    forgotten it; there was no deadman."""
    params = dict(policy_path=files["good"], policy_dir=files["dir"], autostart="true",
                  estop_token_sha256=hashlib.sha256(TOKEN.encode()).hexdigest(),
                  estop_state_file=tmp_path / "estop", estop_heartbeat=0.5, max_obs_age=0.25,
                  diagnostics_period=0.2)
    node = launch("policy", **params)
    assert probe.wait_for(probe.acting, 30.0), probe.diagnostics()

    probe.enable = False  # the deadman: no ~/enable, no torque
    probe.wait_fault("deadman")
    probe.enable = True
    assert probe.wait_for(probe.acting, 10.0), probe.diagnostics()

    probe.estop_pub.publish(Bool(data=True))
    probe.wait_fault("estop")
    probe.estop_pub.publish(Bool(data=False))
    response = probe.call(Trigger, "/policy/reset_estop", Trigger.Request())
    assert not response.success and "token" in response.message, response.message
    ok, why = probe.set_parameter("policy", "estop_release", "guess")
    assert not ok and "wrong e-stop token" in why, why
    time.sleep(0.3)
    assert probe.safe(), "released without the token"

    assert stop(node) == 0  # latched, the node restarts: still latched
    node = launch("policy", **params)
    restarted = time.monotonic()
    latched = lambda: (probe.diagnostics(restarted) or {}).get("estop_latched") == "True"  # noqa: E731
    assert probe.wait_for(latched, 30.0), probe.diagnostics()
    time.sleep(0.5)
    assert probe.safe()
    ok, why = probe.set_parameter("policy", "estop_release", TOKEN)
    assert ok, why
    assert probe.wait_for(probe.acting, 10.0), probe.diagnostics()
    assert not (tmp_path / "estop").exists()
