"""Serve an exported ONNX policy: JointState + Imu (+ the spec's topic inputs) -> observation
(spec) -> policy -> commands, on the topics and in the command message of the spec's ``ros``
section (any message type whose Python package is installed: droil_ros.nodes.interface).

A lifecycle node, so that bringup decides when a learned policy may drive the robot:
configure loads and validates ``policy_path`` (a bad file or one made for another robot fails the
transition with the reason; the node stays unconfigured), activate starts the control loop,
deactivate stops it after one safe command, cleanup releases the policy, and shutdown (also on
SIGINT/SIGTERM) sends a safe command first when it was active. Unconfigured or inactive, the node
never commands.

The control loop is one steady-clock timer at ``control_rate_hz`` on a single-threaded executor
(sim time must not slow the loop that drives hardware); with ``trigger: state`` the node acts as
soon as a new JointState and Imu have arrived instead (no wait for the timer's phase), and the
timer is the watchdog that sends the safe action when input stops. Each tick uses the newest
JointState and Imu; missing, stale (received more than ``max_obs_age`` ago), NaN/Inf or
unusable input, a missing policy, a policy error or a latched e-stop give the safe action and count a fault in
``/diagnostics``; the node never stops on bad input.

The safe action is zero torque (zero speed for a velocity-commanded robot; a position-commanded
one holds the positions last measured). On a balancing robot that is 'let it fall', not 'hold still':
there is no torque that is safe without a working controller, so a real robot's driver must
handle the fall (brakes, a fall-arrest, cutting power), and time out on commands: a node killed
outright sends nothing. ``~/estop`` (True) latches the safe action until ``~/reset_estop`` is
called with the e-stop released; with ``estop_token_sha256`` set, only setting ``estop_release`` to
the token with that hash releases it. ``estop_state_file`` keeps a latched e-stop across restarts, and
``estop_heartbeat`` makes the node act only while ``~/enable`` (True) keeps arriving (a deadman).
A policy that fails, answers NaN/Inf or takes more than its inference budget (CPU time)
``max_policy_faults`` ticks in a row is disabled until another is swapped in; one that never
returns on some input cannot be interrupted (inference runs on the loop's thread): vetting is the
guard against that. No callback ends the node: an exception in one is a ``callback_error``
fault with its reason (a parameter or service call is refused with it).

Plausibility: beyond the above, a JointState over ``4 x`` the spec's joints (by name count or by
serialised size, checked before it is even turned into Python), duplicated joint names, an Imu in
another frame than the spec's, an Imu without orientation (REP 145: covariance[0] = -1) or with a
quaternion whose norm is off by more than ``quaternion_tolerance`` (smaller errors are
normalised), an observation outside the spec's range (``low``/``high`` per element, default
+-1e6) and, with ``use_header_stamps``, a stamp that is zero, older than ``max_obs_age`` on the
node's clock or going backwards, each give the safe action and a fault of its own name.

Hot-swap: setting ``policy_path`` at run time (or, with ``auto_swap``, a path on
``/droil/policy_updates``) answers at once: a path that is not an existing ``.onnx`` file under
``policy_dir`` is rejected with the reason, any other is accepted, then read once (at most
``max_policy_bytes``), vetted in a separate process (droil_ros.policy.vetting: parse, metadata,
finite outputs, inference time within ``max_inference_fraction`` of the period, all under a time
and a memory limit) and only then built from the same bytes in a worker thread, never on the
control path. An announcement may pin the file's SHA-256 (``path sha256=<hex>`` or JSON
``{"path", "sha256"}``; ``require_sha256`` makes that mandatory). The new policy then replaces
the old one between two ticks (one reference). A file that fails to load, or was made for
another robot, is rejected: the old policy keeps acting and ``policy_path`` is set back to it.
The outcome of every load (and of an auto-swap refused at once) is published, latched, on
``~/swap_status`` as JSON
``{"path", "ok", "reason", "policy_id"}`` (policy_id: the policy acting after the attempt); when
requests overlap, the newest wins and older ones report "superseded". ``swap_ms`` in the
diagnostics runs from the vetted bytes to the new policy's first action, ``vet_ms`` is the vetting.

Keeping ticks on time in Python: the loader starts just after a tick, so the part of a load that
holds the GIL in one C call (about 1.5 ms to build the ONNX Runtime session) ends before the next
tick; the GIL switch interval is 0.5 ms, so the loader's Python code gives the GIL back quickly;
the heap is collected and frozen after configure and after each load, so no full garbage
collection (about 20 ms) lands on a tick. ``thread_priority`` puts the loop's thread under
SCHED_FIFO where that is permitted, and the loader just below it (so that no ordinary process can
stall the loader while it holds the GIL the loop waits for).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import hmac
import json
import math
import os
import re
import stat
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from queue import Empty, SimpleQueue

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.duration import Duration
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import Imu, JointState
from std_msgs.msg import Bool, Header, String
from std_srvs.srv import Trigger

from droil_ros.errors import DroilError
from droil_ros.nodes.cdr import Decoder, ImuView, JointStateView
from droil_ros.nodes.common import (
    COMMAND_QOS,
    LATCHED_QOS,
    SENSOR_QOS,
    Implausible,
    check_joint_state,
    declare_robot,
    describe,
    imu_orientation,
    spin_node,
    stale_input,
    stamp_seconds,
)
from droil_ros.nodes.interface import RobotInterface
from droil_ros.policy.runtime import OnnxPolicy, PolicyError, PolicyOutputError
from droil_ros.policy.vetting import Vetter, memory_limit
from droil_ros.robots.spec import RobotSpec

FAULT_KINDS = ("stale", "nan", "bad_input", "oversize", "duplicate_joints", "imu_frame",
               "orientation_unknown", "bad_orientation", "out_of_range", "stamp", "no_policy",
               "policy_error", "policy_output", "policy_slow", "policy_disabled", "estop", "deadman",
               "callback_error")
OVERRUN = 1.5  # a tick period longer than this many nominal periods is an overrun
# s a thread may keep the GIL while another waits for it (Python's default, 5 ms, is a 200 Hz period):
# the control loop gets it back from the hot-swap loader within this
GIL_SWITCH_INTERVAL = 0.0005
# A JointState may name at most this many times the spec's joints (a robot's driver may add a few
# passive joints); its serialised size is capped accordingly, so a flood of names is dropped as bytes
JOINT_STATE_SLACK = 4
BYTES_PER_JOINT = 256 + 3 * 8  # a name of up to 256 characters and three doubles
MESSAGE_OVERHEAD = 512  # header, frame id, sequence lengths
MAX_IMU_BYTES = 4096  # an Imu is about 330 bytes plus its frame id
TRIGGERS = ("timer", "state")
MIN_SPACING = 0.25  # trigger state: periods between two ticks at least
EXECUTORS = ("single", "events")
LOADED_POLL = 0.005  # s between looks for a loaded policy on the EventsExecutor (no guard conditions)
MAX_INPUT_BYTES = 65536  # a topic input of the observation (a Twist, a small custom message)
SHA256 = re.compile(r"[0-9a-f]{64}")


class Fault(Exception):
    def __init__(self, kind: str, detail: str):
        super().__init__(detail)
        self.kind = kind


@dataclass(frozen=True)
class SwapRequest:
    seq: int
    path: str
    sha256: str | None = None  # pinned by the announcement


def load_policy(path: str, spec: RobotSpec, data: bytes | None = None) -> OnnxPolicy:
    """Load, validate against the robot spec (PolicyError) and run once: the first run allocates,
    and that must not happen on the control path."""
    policy = OnnxPolicy(path, spec, data)
    policy(np.zeros(policy.obs_dim))
    return policy


def parse_announcement(text: str) -> tuple[str, str | None]:
    """(path, sha256 or None) of a /droil/policy_updates message: a plain path, ``path
    sha256=<hex>`` or JSON ``{"path": ..., "sha256": ...}``; ValueError when malformed."""
    text = text.strip()
    if text.startswith("{"):
        payload = json.loads(text)
        if not isinstance(payload, dict) or not isinstance(payload.get("path"), str):
            raise ValueError("announcement JSON needs a string 'path'")
        path, digest = payload["path"], payload.get("sha256")
    else:
        path, _, pin = text.partition(" sha256=")
        digest = pin.strip() or None
    if digest is not None and not (isinstance(digest, str) and SHA256.fullmatch(digest.lower())):
        raise ValueError("sha256 must be 64 hex digits")
    return path, digest.lower() if digest else None


def _loader_scheduling(priority: int) -> None:
    """The loader runs below the loop, which must preempt it (it inherits the loop's priority)."""
    policy = os.SCHED_FIFO if priority >= 1 else os.SCHED_OTHER
    with contextlib.suppress(OSError):  # then it keeps the loop's priority: still above other processes
        os.sched_setscheduler(0, policy, os.sched_param(max(priority, 0)))


def settle_heap() -> None:
    """Collect, then freeze what is left: a full collection of the node's heap takes about 20 ms
    (four 200 Hz periods) and would come at a random tick; frozen objects are never scanned again."""
    gc.collect()
    gc.freeze()


def _percentiles_us(samples: list[float]) -> tuple[str, str]:
    if not samples:
        return "n/a", "n/a"
    p50, p99 = np.percentile(samples, [50, 99]) * 1e6
    return f"{p50:.0f}", f"{p99:.0f}"


def _short(text: str, limit: int = 120) -> str:
    """A path or value as it goes into a one-line reason."""
    return text if len(text) <= limit else f"{text[:limit // 2]}...{text[-limit // 4:]} ({len(text)} chars)"


def _deserialize(raw: bytes, kind, decode=None):
    """``decode``: a hand decoder of ``kind`` (cdr.Decoder), else rclpy's."""
    try:
        return decode(raw) if decode else deserialize_message(raw, kind)
    except ValueError as exc:
        raise Implausible("bad_input", f"undecodable {kind.__name__} ({exc})") from None
    except Exception as exc:  # rclpy's own error types; the bytes came from anyone
        raise Implausible("bad_input", f"undecodable {kind.__name__} ({type(exc).__name__})") from None


def total(fallback=None):
    """Make a callback total: an exception in it becomes a ``callback_error`` fault with its
    reason, and ``fallback(self, reason, *args)`` answers the caller; it never reaches the executor,
    which would end the node."""
    def wrap(method):
        @functools.wraps(method)
        def guarded(self, *args):
            try:
                return method(self, *args)
            except Exception as exc:
                reason = f"{method.__name__.lstrip('_')}: {type(exc).__name__}: {exc}"[:300]
                self._record(Fault("callback_error", reason))
                if fallback is None:
                    return None
                try:
                    return fallback(self, reason, *args)
                except Exception as again:  # e.g. the safe command's publish: recorded, never raised
                    then = f"{reason}; then {type(again).__name__}: {again}"
                    self._record(Fault("callback_error", then[:300]))
                    return None
        return guarded
    return wrap


def _refuse_parameters(self, reason: str, params) -> SetParametersResult:
    return SetParametersResult(successful=False, reason=f"refused: {reason}")


def _refuse_service(self, reason: str, request, response):
    response.success, response.message = False, f"refused: {reason}"
    return response


def _safe_tick(self, reason: str) -> None:
    if self.command_pub is not None:
        self._publish_safe()


class PolicyNode(LifecycleNode):
    def __init__(self):
        super().__init__("policy")
        self.spec = declare_robot(self)
        if not self.spec.uses_sensor_observation:
            raise DroilError(f"the policy node serves robots observed through JointState + Imu; "
                             f"'{self.spec.id}' observes through Gymnasium")
        self.robot = RobotInterface(self.spec)  # its topics, command type and inputs
        declare = self.declare_parameter
        declare("policy_path", "", describe(
            "ONNX policy to serve (empty: none, the safe action until one is set); set it at run "
            "time to hot-swap (vetted in a separate process and loaded off the control path; a bad "
            "file is rejected, see ~/swap_status). Must resolve under policy_dir"))
        self.rate = declare("control_rate_hz", self.spec.control_rate_hz, describe(
            "control loop rate on the steady clock (default: the robot spec's)", read_only=True)).value
        self.max_obs_age = declare("max_obs_age", 3.0 / self.rate if self.rate > 0 else 0.0, describe(
            "seconds since the newest JointState or Imu arrived beyond which the input is stale and "
            "the safe action is sent (default: 3 control periods)", read_only=True)).value
        self.trigger = declare("trigger", "timer", describe(
            "timer: act at control_rate_hz on a steady timer with the newest input (drivers that "
            "expect commands at a fixed rate); state: act as soon as a new JointState and Imu (each "
            "used once; the JointState alone where the spec reads no IMU) have arrived, with the "
            "timer as the watchdog that sends the safe action once input stops for max_obs_age",
            read_only=True)).value
        if self.trigger not in TRIGGERS:
            raise DroilError(f"trigger must be one of {', '.join(TRIGGERS)}, got '{self.trigger}'")
        self.needed = {"joints", "imu"} if self.spec.uses_imu else {"joints"}
        self.arrived: set[str] = set()  # trigger state: what has arrived since the last tick
        executor = declare("executor", "single", describe(
            "single: rclpy's SingleThreadedExecutor; events: its EventsExecutor (experimental in "
            "rclpy: callbacks dispatched from C++, less overhead per message; falls back to single "
            "with a warning where this rclpy has none)", read_only=True)).value
        if executor not in EXECUTORS:
            raise DroilError(f"executor must be one of {', '.join(EXECUTORS)}, got '{executor}'")
        self.events_executor = executor == "events"
        self.max_input_age = declare("max_input_age", 0.5, describe(
            "seconds since the newest message of a topic input (the spec's 'source: topic' terms, "
            "e.g. a reference Twist) arrived beyond which it is stale", read_only=True)).value
        self.auto_swap = declare("auto_swap", False, describe(
            "hot-swap to the policy paths announced on /droil/policy_updates (read-only: no other "
            "node may turn it on)", read_only=True)).value
        self.policy_dirs = tuple(Path(d).resolve() for d in declare("policy_dir", ".", describe(
            "the only directories policies load from, separated by ':' (with their subdirectories; "
            "symlinks must resolve inside them too); default: the node's working directory",
            read_only=True)).value.split(":") if d)
        self.max_policy_bytes = declare("max_policy_bytes", 2 * 2**20, describe(
            "largest policy file read (bytes), checked before reading it; vetting then refuses a "
            "session build over one control period of CPU (about 2.8 ms per MiB here), since the "
            "loop waits for the GIL while the node builds it", read_only=True)).value
        self.max_inference_fraction = declare("max_inference_fraction", 0.25, describe(
            "a candidate policy's inference p99 (CPU time, measured when vetting) may take at most "
            "this fraction of the control period", read_only=True)).value
        vet_timeout = declare("vet_timeout", 10.0, describe(
            "seconds the vetting process may take before the candidate is rejected (a policy that "
            "hangs)", read_only=True)).value
        self.require_sha256 = declare("require_sha256", False, describe(
            "refuse announcements on /droil/policy_updates that do not pin the file's SHA-256",
            read_only=True)).value
        self.max_policy_faults = declare("max_policy_faults", 5, describe(
            "ticks in a row with a policy error, a NaN/Inf action or an inference over its budget "
            "after which the policy is disabled (safe action, ERROR) until another is swapped in",
            read_only=True)).value
        self.quaternion_tolerance = declare("quaternion_tolerance", 0.05, describe(
            "largest |norm - 1| of the Imu quaternion that is normalised; beyond it the reading is "
            "refused", read_only=True)).value
        self.use_header_stamps = declare("use_header_stamps", False, describe(
            "refuse sensor messages whose header stamp is zero, goes backwards or is older than "
            "max_obs_age on the node's clock (needs clocks in sync with the sensors)", read_only=True)).value
        # the hash, not the token: any node can read a parameter
        self.estop_token_sha256 = declare("estop_token_sha256", "", describe(
            "SHA-256 (hex) of the e-stop token: if set, only setting estop_release to that token "
            "releases a latched e-stop (~/reset_estop is refused); empty: ~/reset_estop releases it",
            read_only=True)).value.lower()
        declare("estop_release", "", describe(
            "set it to the e-stop token to release a latched e-stop (the value is not kept)"))
        self.estop_heartbeat = declare("estop_heartbeat", 0.0, describe(
            "deadman: seconds ~/enable (True) may stay silent before the safe action; 0: off",
            read_only=True)).value
        self.estop_file = declare("estop_state_file", "", describe(
            "file that keeps a latched e-stop across restarts (exists: latched at start); empty: "
            "none", read_only=True)).value
        priority = declare("thread_priority", 0, describe(
            "SCHED_FIFO priority (1-99) of the control loop's thread, as ros2_control's; 0: the OS "
            "default. Needs root, CAP_SYS_NICE or an rtprio limit: refused, the node warns and runs on",
            read_only=True)).value
        diagnostics_period = declare("diagnostics_period", 1.0, describe(
            "seconds between /diagnostics messages (latencies are over this period)",
            read_only=True)).value
        for name, value in (("control_rate_hz", self.rate), ("max_obs_age", self.max_obs_age),
                            ("max_input_age", self.max_input_age),
                            ("diagnostics_period", diagnostics_period),
                            ("max_policy_bytes", self.max_policy_bytes),
                            ("max_inference_fraction", self.max_inference_fraction),
                            ("vet_timeout", vet_timeout), ("max_policy_faults", self.max_policy_faults),
                            ("quaternion_tolerance", self.quaternion_tolerance)):
            if not value > 0:
                raise DroilError(f"{name} must be positive, got {value}")
        if not self.policy_dirs:
            raise DroilError("policy_dir names no directory")
        for folder in self.policy_dirs:
            if not folder.is_dir():
                raise DroilError(f"policy_dir {folder} is not a directory")
        if not math.isclose(self.rate, self.spec.control_rate_hz):
            self.get_logger().warning(f"control_rate_hz {self.rate:g} differs from the robot spec's "
                                      f"{self.spec.control_rate_hz:g}: policies were trained at that rate")
        self.period = 1.0 / self.rate
        self.fifo = self._set_fifo(priority) if priority else 0  # the loop thread's SCHED_FIFO priority
        self.steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.max_names = JOINT_STATE_SLACK * len(self.spec.joints)
        self.max_joint_state_bytes = MESSAGE_OVERHEAD + self.max_names * BYTES_PER_JOINT
        self.imu_frame = self.spec.imu.get("frame_id", "")
        self.vetter = Vetter(self.spec, self.period, self.max_inference_fraction, vet_timeout,
                             memory_limit(self.max_policy_bytes))

        self.state = "unconfigured"
        self.configure_error = ""
        self.policy: OnnxPolicy | None = None  # read once per tick; replaced whole on a swap
        self.policy_path = ""  # of self.policy
        self.policy_faults_in_row = 0
        self.policy_disabled = False
        self.command_pub = None
        self.sensor_subs = []
        self.timer = None
        self.decoder = Decoder()  # JointState and Imu from their bytes, 2-5x cheaper than rclpy
        self.joint_state: JointStateView | JointState | None = None
        self.imu: ImuView | Imu | None = None
        self.orientation: np.ndarray | None = None  # of self.imu, normalised
        self.joint_state_at = self.imu_at = -math.inf  # time.monotonic() of receipt
        self.input_faults: dict[str, Fault] = {}  # topic -> why its newest message was refused
        self.inputs: dict[str, tuple[float, object]] = {}  # topic input -> (monotonic receipt, message)
        self.hold: np.ndarray | None = None  # position kind: the setpoint the safe action holds
        # newest accepted header stamps
        self.stamps = {"joint_states": -math.inf, **({"imu/data": -math.inf} if self.spec.uses_imu else {})}
        self.estop_input = False  # last value on ~/estop
        self.estop_latched = False
        self.enabled_at = -math.inf  # time.monotonic() of the last ~/enable True (deadman)

        # statistics: counters since start, samples over one diagnostics period
        self.ticks = self.overruns = 0
        self.faults = dict.fromkeys(FAULT_KINDS, 0)
        self.last_fault = ""
        self.warned = ("", -math.inf)  # kind and time of the last fault warning
        self.faulted = False  # the last tick sent the safe action
        self.events: set[str] = set()  # faults, overruns, rejected swaps in this period
        self.last_tick_start: float | None = None
        self.periods: list[float] = []
        self.inference: list[float] = []
        self.loop: list[float] = []

        # hot-swap: one loader thread; results come back to the executor through a guard condition
        below_loop = partial(_loader_scheduling, self.fifo - 1) if self.fifo else None
        self.loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="policy_loader",
                                         initializer=below_loop)
        self.tick_done = threading.Event()  # the loader starts right after a tick (see _load)
        self.loaded: SimpleQueue = SimpleQueue()
        # the EventsExecutor has no guard conditions: there the executor polls the queue
        self.loaded_guard = None if self.events_executor else self.create_guard_condition(self._on_loaded)
        if self.events_executor:
            self.create_timer(LOADED_POLL, self._on_loaded, clock=self.steady)
        self.swap_seq = 0
        self.swap_started: float | None = None  # build start of the swap whose first action is pending
        self.swap_ms = self.vet_ms = math.nan
        self.last_swap = "none"
        self.setting = False  # a parameter set by the node itself (policy_path follows the active policy)
        self.pending_sha256: str | None = None  # pinned by the announcement being applied

        self.add_on_set_parameters_callback(self._check_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        self.swap_pub = self.create_publisher(String, "~/swap_status", LATCHED_QOS)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(Bool, "~/estop", self._on_estop, 10)
        self.create_service(Trigger, "~/reset_estop", self._on_reset_estop)
        if self.estop_heartbeat > 0:
            self.create_subscription(Bool, "~/enable", self._on_enable, 10)
        self.create_subscription(String, "/droil/policy_updates", self._on_policy_update, 10)
        self.create_timer(diagnostics_period, self._publish_diagnostics, clock=self.steady)
        if self.estop_file and Path(self.estop_file).exists():
            self.estop_latched = True
            self.get_logger().warning(f"e-stop latched before this start ({self.estop_file}): safe action "
                                      f"until it is released")
        autostart = declare("autostart", False, describe(
            "configure and activate at start (bringup without a lifecycle manager)",
            read_only=True)).value
        if autostart:
            self.autostart_timer = self.create_timer(0.0, self._autostart, clock=self.steady)
        self.get_logger().info(f"{self.spec.id}: {self.rate:g} Hz, max_obs_age {self.max_obs_age:g} s, "
                               f"policies from {':'.join(map(str, self.policy_dirs))}; "
                               + ("configuring and activating" if autostart else
                                  "unconfigured (configure and activate through ~/change_state)"))

    def _set_fifo(self, priority: int) -> int:
        """The executor thread (this one) runs the control loop: real-time scheduling for it, so
        that ordinary processes cannot delay a tick (DDS threads already exist and keep theirs).
        The priority set, 0 where it is not permitted."""
        if not 1 <= priority <= 99:
            raise DroilError(f"thread_priority must be 0 (OS default) or 1-99, got {priority}")
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
        except PermissionError:
            self.get_logger().warning(f"thread_priority {priority}: not permitted (needs CAP_SYS_NICE or an "
                                      f"rtprio limit); the control loop runs at the OS default")
            return 0
        self.get_logger().info(f"control loop thread: SCHED_FIFO priority {priority}")
        return priority

    @total()
    def _autostart(self) -> None:
        self.destroy_timer(self.autostart_timer)
        if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()

    # lifecycle ------------------------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        path = self.get_parameter("policy_path").value
        try:
            self.policy = self._vetted_policy(path, None)[0] if path else None
        except Exception as exc:  # PolicyError, and anything else: the transition fails with the reason
            self.configure_error = _short(str(exc), 300)
            self.get_logger().error(f"configure failed: {self.configure_error}")
            return TransitionCallbackReturn.FAILURE
        self.policy_path, self.configure_error = path, ""
        self.policy_faults_in_row, self.policy_disabled = 0, False
        ros = self.spec.ros
        self.command_pub = self.create_lifecycle_publisher(self.robot.command.msg_type, ros.command_topic,
                                                           COMMAND_QOS)
        # raw: a message's size is checked before rclpy turns it into Python objects
        self.sensor_subs = [
            self.create_subscription(JointState, ros.state_topic, self._on_joint_state, SENSOR_QOS, raw=True),
            *([self.create_subscription(Imu, ros.imu_topic, self._on_imu, SENSOR_QOS, raw=True)]
              if self.spec.uses_imu else []),
            *(self.create_subscription(cls, topic, partial(self._on_input, topic, cls), SENSOR_QOS, raw=True)
              for topic, cls in self.robot.inputs.items()),
        ]
        self.state = "inactive"
        if self.policy is None:
            self.get_logger().warning("configured without a policy: the safe action until policy_path is set")
        else:
            self.get_logger().info(f"configured: policy {self.policy.policy_id}")
        settle_heap()
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.last_tick_start, self.hold = None, None
        self.observe = self.spec.observation_builder()  # unwrap terms start afresh, as a recording
        self.arrived.clear()
        self.timer = self.create_timer(self.period, self._tick if self.trigger == "timer" else self._watchdog,
                                       clock=self.steady)
        self.state = "active"
        self.get_logger().info("active: commanding")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop()
        self.state = "inactive"
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self.state = "unconfigured"
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self.timer is not None:
            self._stop()
            self.command_pub.wait_for_all_acked(Duration(seconds=0.5))  # the process may exit next
        self._release()
        self.state = "finalized"
        self.vetter.cancel()  # the loader thread would wait for it at exit
        self.loader.shutdown(wait=False, cancel_futures=True)
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self.timer is not None:
            self._stop()
        self._release()
        self.state = "unconfigured"
        return super().on_error(state)

    def _stop(self) -> None:
        """Stop acting: the timer first, then one safe command (effort controllers hold the last one)."""
        self.destroy_timer(self.timer)
        self.timer = None
        self._publish_safe()
        self.get_logger().info("stopped commanding after a safe (zero-torque) command")

    def _publish_safe(self) -> None:
        """Zero effort or velocity. A position-commanded robot holds where it was when the safe
        action began (the positions then measured, kept until the policy acts again: following
        each new measurement would give its controller no error to hold against); with no
        usable measurement nothing is sent and its controller holds its own last setpoint."""
        command = np.zeros(len(self.spec.actuators))
        if self.robot.command.kind == "position":
            if self.hold is None:
                self.hold = self._measured_positions()
            if self.hold is None:
                return
            command = self.hold
        self.command_pub.publish(self.robot.command.encode(command))

    def _measured_positions(self) -> np.ndarray | None:
        if self.joint_state is None:
            return None
        readings = self.robot.readings(self.joint_state, None)
        index = {name: i for i, name in enumerate(readings.joint_names)}
        try:
            positions = readings.position[[index[j] for j in self.spec.actuators.values()]]
        except (KeyError, IndexError):
            return None
        return positions if np.all(np.isfinite(positions)) else None

    def _release(self) -> None:
        for sub in self.sensor_subs:
            self.destroy_subscription(sub)
        self.sensor_subs = []
        if self.command_pub is not None:
            self.destroy_lifecycle_publisher(self.command_pub)
            self.command_pub = None
        self.policy, self.policy_path = None, ""
        self.joint_state = self.imu = self.orientation = None
        self.inputs.clear()
        self.input_faults.clear()

    # sensors --------------------------------------------------------------------------------

    @total()
    def _on_joint_state(self, raw: bytes) -> None:
        try:
            if len(raw) > self.max_joint_state_bytes:
                raise Implausible("oversize", f"JointState of {len(raw)} bytes, at most "
                                              f"{self.max_joint_state_bytes} accepted")
            msg = _deserialize(raw, JointState, self.decoder.joint_state)
            check_joint_state(msg, self.max_names)
            self._check_stamp("joint_states", msg.header)
        except Implausible as exc:
            self.input_faults["joint_states"] = Fault(exc.kind, str(exc))
        else:
            self.input_faults.pop("joint_states", None)
            self.joint_state, self.joint_state_at = msg, time.monotonic()
        self._arrived("joints")

    @total()
    def _on_imu(self, raw: bytes) -> None:
        try:
            if len(raw) > MAX_IMU_BYTES:
                raise Implausible("oversize", f"Imu of {len(raw)} bytes, at most {MAX_IMU_BYTES} accepted")
            msg = _deserialize(raw, Imu, self.decoder.imu)
            if self.imu_frame and msg.header.frame_id != self.imu_frame:
                raise Implausible("imu_frame", f"Imu in frame '{_short(msg.header.frame_id, 40)}', the "
                                               f"robot spec's IMU is '{self.imu_frame}'")
            orientation = (imu_orientation(msg, self.quaternion_tolerance) if self.spec.uses_orientation
                           else None)
            self._check_stamp("imu/data", msg.header)
        except Implausible as exc:
            self.input_faults["imu/data"] = Fault(exc.kind, str(exc))
        else:
            self.input_faults.pop("imu/data", None)
            self.imu, self.orientation, self.imu_at = msg, orientation, time.monotonic()
        self._arrived("imu")

    def _arrived(self, kind: str) -> None:
        """Trigger state: a tick once the state is complete, that is a new JointState and a new Imu
        have come, at the second of a pair with the same stamp, else at the JointState (a refused
        message counts too, so that its fault gives the safe action at once). Completing on any
        second message instead, one lost Imu left every later tick pairing a JointState with the
        next cycle's Imu: a period late for good."""
        if self.trigger != "state" or self.timer is None:
            return
        self.arrived.add(kind)
        if self.arrived >= self.needed and (kind == "joints" or self._same_cycle()):
            self.arrived.clear()
            # a flood of states (a peer on the bus) drives the policy at most 4x the control rate
            last = self.last_tick_start
            if last is None or time.perf_counter() - last > MIN_SPACING * self.period:
                self._tick()

    def _same_cycle(self) -> bool:
        """Whether the newest JointState and Imu carry the same (set) stamp."""
        if self.joint_state is None or self.imu is None:
            return False
        joints, imu = self.joint_state.header.stamp, self.imu.header.stamp
        return (joints.sec, joints.nanosec) == (imu.sec, imu.nanosec) != (0, 0)

    @total()
    def _on_input(self, topic: str, kind, raw: bytes) -> None:
        """A topic input: any type, so its size is bounded, not its content."""
        try:
            if len(raw) > MAX_INPUT_BYTES:
                raise Implausible("oversize", f"{topic}: message of {len(raw)} bytes, at most "
                                              f"{MAX_INPUT_BYTES} accepted")
            msg = _deserialize(raw, kind)
        except Implausible as exc:
            self.input_faults[topic] = Fault(exc.kind, str(exc))
            return
        self.input_faults.pop(topic, None)
        self.inputs[topic] = (time.monotonic(), msg)

    def _check_stamp(self, topic: str, header: Header) -> None:
        """With use_header_stamps: a stamp must be set and never go backwards (age: at each tick)."""
        if not self.use_header_stamps:
            return
        stamp = stamp_seconds(header)
        if stamp <= 0.0:
            raise Implausible("stamp", f"{topic} has no header stamp")
        if stamp < self.stamps[topic]:
            back = (self.stamps[topic] - stamp) * 1e3
            raise Implausible("stamp", f"{topic} stamp went back by {back:.1f} ms")
        self.stamps[topic] = stamp

    # control loop ---------------------------------------------------------------------------

    @total(_safe_tick)
    def _watchdog(self) -> None:
        """Trigger state: a tick (the safe action, a stale fault) once no state has come for
        max_obs_age."""
        if self.last_tick_start is None or time.perf_counter() - self.last_tick_start > self.max_obs_age:
            self._tick()

    @total(_safe_tick)
    def _tick(self) -> None:
        start = time.perf_counter()
        if self.last_tick_start is not None:
            period = start - self.last_tick_start
            self.periods.append(period)
            # with trigger state the time between ticks is the input's: a gap is a stale fault
            if self.trigger == "timer" and period > OVERRUN * self.period:
                self.overruns += 1
                self.events.add("overrun")
        self.last_tick_start = start
        self.ticks += 1
        policy = self.policy  # one read: a swap between ticks never splits a tick
        try:
            action = self._act(policy)
        except Fault as fault:
            self._publish_safe()
            self._record(fault)
        else:
            self.command_pub.publish(self.robot.command.encode(self.spec.action_to_command(action)))
            self.faulted, self.hold = False, None
            if self.swap_started is not None:  # the first action of a swapped-in policy
                self.swap_ms = (time.perf_counter() - self.swap_started) * 1e3
                self.swap_started = None
        self.loop.append(time.perf_counter() - start)
        self.tick_done.set()

    def _act(self, policy: OnnxPolicy | None) -> np.ndarray:
        """The policy's action for the newest input; Fault when the safe action must be sent."""
        if self.estop_latched:
            raise Fault("estop", "e-stop latched")
        if self.estop_heartbeat > 0 and time.monotonic() - self.enabled_at > self.estop_heartbeat:
            raise Fault("deadman", f"no ~/enable in the last {self.estop_heartbeat:g} s")
        if policy is None:
            raise Fault("no_policy", "no policy loaded (set policy_path)")
        if self.policy_disabled:
            raise Fault("policy_disabled", f"policy {policy.policy_id} disabled after "
                                           f"{self.max_policy_faults} faults in a row (swap in another)")
        for fault in self.input_faults.values():
            raise fault
        uses_imu = self.spec.uses_imu
        if self.joint_state is None or (uses_imu and self.imu is None):
            raise Fault("stale", f"no JointState{' + Imu' if uses_imu else ''} received yet")
        now = time.monotonic()
        age = now - min(self.joint_state_at, self.imu_at if uses_imu else math.inf)
        if age > self.max_obs_age:
            raise Fault("stale", f"newest input is {age * 1e3:.0f} ms old (max_obs_age "
                                 f"{self.max_obs_age * 1e3:.0f} ms)")
        stale = stale_input(self.robot.inputs, self.inputs, self.max_input_age)
        if stale:
            raise Fault("stale", stale)
        if self.use_header_stamps:
            stamp_age = self.get_clock().now().nanoseconds * 1e-9 - min(self.stamps.values())
            if abs(stamp_age) > self.max_obs_age:
                raise Fault("stamp", f"header stamps are {stamp_age * 1e3:.0f} ms "
                                     f"{'old' if stamp_age > 0 else 'in the future'}")
        messages = {topic: msg for topic, (_, msg) in self.inputs.items()} if self.inputs else None
        readings = self.robot.readings(self.joint_state, self.imu, self.orientation, messages)
        try:
            obs = self.observe(readings)
        except ValueError as exc:
            raise Fault("bad_input", str(exc)) from None
        spec = self.spec
        # the orientation too, though the observation may not read it: a NaN there is a broken IMU
        if not np.isfinite(readings.orientation).all():
            raise Fault("nan", "NaN or Inf in the input")
        if not ((obs >= spec.obs_low) & (obs <= spec.obs_high)).all():  # NaN, Inf fail (finite bounds)
            if not np.isfinite(obs).all():
                raise Fault("nan", "NaN or Inf in the input")
            k = int(np.argmax((obs < spec.obs_low) | (obs > spec.obs_high)))
            raise Fault("out_of_range", f"observation {spec.obs_names[k]} = {obs[k]:.3g} outside "
                                        f"[{spec.obs_low[k]:g}, {spec.obs_high[k]:g}]")
        started, cpu = time.perf_counter(), time.thread_time()
        try:
            action = policy.act(obs, strict=True)
        except Exception as exc:  # ORT errors have their own types; none may stop the loop
            self._policy_fault(policy)
            kind = "policy_output" if isinstance(exc, PolicyOutputError) else "policy_error"
            raise Fault(kind, f"policy {policy.policy_id} failed: {exc}") from None
        wall = time.perf_counter() - started
        self.inference.append(wall)
        limit = self.max_inference_fraction * self.period
        # CPU time, as vetting measured it: a busy machine's preemption is not the policy's cost;
        # it never exceeds the wall time, so the clock (a system call) is read again only then
        if wall > limit and (cpu := time.thread_time() - cpu) > limit:  # slow on this input, unlike vetting
            self._policy_fault(policy)
            raise Fault("policy_slow", f"policy {policy.policy_id} took {cpu * 1e3:.2f} ms of CPU (over "
                                       f"{self.max_inference_fraction:g} of the period)")
        self.policy_faults_in_row = 0
        return action

    def _policy_fault(self, policy: OnnxPolicy) -> None:
        self.policy_faults_in_row += 1
        if self.policy_faults_in_row >= self.max_policy_faults and not self.policy_disabled:
            self.policy_disabled = True
            self.get_logger().error(f"policy {policy.policy_id} disabled after {self.policy_faults_in_row} "
                                    f"faults in a row: safe action until another policy is swapped in")

    def _record(self, fault: Fault) -> None:
        """Count the fault; warn when its kind changes, else once a second (rclpy's throttled
        logging costs about 0.2 ms a call, even when it stays silent)."""
        self.faults[fault.kind] += 1
        now = time.monotonic()
        if fault.kind != "estop" and (fault.kind != self.warned[0] or now - self.warned[1] >= 1.0):
            # the e-stop warns as it latches
            self.get_logger().warning(f"{fault.kind}: {fault}: safe action (zero torque)")
            self.warned = (fault.kind, now)
        self.last_fault = f"{fault.kind}: {fault}"
        self.faulted = True
        self.events.add(fault.kind)

    # e-stop ---------------------------------------------------------------------------------

    @total()
    def _on_estop(self, msg: Bool) -> None:
        self.estop_input = msg.data
        if msg.data and not self.estop_latched:
            self.estop_latched = True
            self.get_logger().warning("e-stop: safe action until released")
            if self.estop_file:
                try:
                    Path(self.estop_file).write_text(f"latched {time.time():.3f}\n")
                except OSError as exc:
                    self.get_logger().error(f"e-stop not kept across restarts: {self.estop_file}: "
                                            f"{exc.strerror}")

    @total()
    def _on_enable(self, msg: Bool) -> None:
        self.enabled_at = time.monotonic() if msg.data else -math.inf

    @total(_refuse_service)
    def _on_reset_estop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        if self.estop_token_sha256:
            response.success, response.message = False, "releasing the e-stop needs the token (estop_release)"
        else:
            response.success, response.message = self._release_estop()
        return response

    def _release_estop(self) -> tuple[bool, str]:
        if self.estop_input:
            return False, "e-stop is still asserted on ~/estop"
        if self.estop_file:
            Path(self.estop_file).unlink(missing_ok=True)  # first: a failure leaves it latched
        self.estop_latched = False
        self.get_logger().info("e-stop released")
        return True, "e-stop released"

    # hot-swap -------------------------------------------------------------------------------

    @total(_refuse_parameters)
    def _check_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Cheap checks only (parameter calls must answer at once); loading starts after the set."""
        for p in params:
            if self.setting:
                continue
            if p.name == "estop_release":
                reason = self._check_release(p.value)
                if reason:
                    return SetParametersResult(successful=False, reason=reason)
            if p.name != "policy_path" or self.state == "unconfigured":
                continue  # unconfigured: configure loads (and vets) whatever is set
            reason = (self._check_path(p.value) if p.value else
                      "an empty policy_path cannot replace the active policy: deactivate to stop acting")
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)  # rclpy drops the reason of a success

    def _check_release(self, token) -> str:
        """Why estop_release is refused ('' when the token releases the e-stop)."""
        if not self.estop_token_sha256:
            return "no estop_token_sha256 is configured: release through ~/reset_estop"
        digest = hashlib.sha256(token.encode()).hexdigest() if isinstance(token, str) else ""
        if not hmac.compare_digest(digest, self.estop_token_sha256):
            return "wrong e-stop token"
        if self.estop_input:
            return "e-stop is still asserted on ~/estop"
        return ""

    def _check_path(self, value) -> str:
        """Why a policy path is refused at once ('' when it may go to the loader)."""
        if not isinstance(value, str):
            return "policy_path must be a string"
        path = Path(value)
        if path.suffix != ".onnx":
            return f"{_short(value)}: not an .onnx file"
        try:
            resolved = path.resolve(strict=True)
        except FileNotFoundError:
            return f"policy file not found: {_short(value)}"
        except (OSError, RuntimeError) as exc:  # e.g. a name too long, a symlink loop
            return f"policy file not usable: {_short(value)}: {getattr(exc, 'strerror', None) or exc}"
        if not any(resolved.is_relative_to(folder) for folder in self.policy_dirs):
            return f"{_short(value)} resolves outside policy_dir {':'.join(map(str, self.policy_dirs))}"
        if not resolved.is_file():
            return f"{_short(value)}: not a regular file"
        return ""

    @total()
    def _apply_parameters(self, params: list[Parameter]) -> None:
        if self.setting:
            return
        for p in params:
            if p.name == "policy_path" and self.state in ("inactive", "active"):
                self.swap_seq += 1
                self.loader.submit(self._load, SwapRequest(self.swap_seq, p.value, self.pending_sha256))
            elif p.name == "estop_release" and p.value:
                ok, message = self._release_estop()
                if not ok:
                    self.get_logger().warning(f"e-stop not released: {message}")
                self._set_own("estop_release", "")  # the token is not kept

    def _read_policy(self, path: str, sha256: str | None) -> bytes:
        """The file's bytes, read once (the same bytes are vetted and loaded): PolicyError unless it
        resolves under policy_dir, is a regular file of at most max_policy_bytes and matches a pin."""
        reason = self._check_path(path)
        if reason:
            raise PolicyError(reason)
        resolved = Path(path).resolve(strict=True)
        try:  # O_NONBLOCK: a FIFO named *.onnx must not block the open
            fd = os.open(resolved, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as f:
                info = os.fstat(f.fileno())
                if not stat.S_ISREG(info.st_mode):
                    raise PolicyError(f"{_short(path)}: not a regular file")
                if info.st_size > self.max_policy_bytes:
                    raise PolicyError(f"{_short(path)}: {info.st_size} bytes, over max_policy_bytes "
                                      f"({self.max_policy_bytes})")
                data = f.read(self.max_policy_bytes + 1)
        except OSError as exc:
            raise PolicyError(f"{_short(path)}: cannot read policy ({exc.strerror})") from None
        if len(data) > self.max_policy_bytes:
            raise PolicyError(f"{_short(path)}: grew over max_policy_bytes while read")
        if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
            raise PolicyError(f"{_short(path)}: SHA-256 differs from the announced {sha256[:12]}...")
        return data

    def _vetted_policy(self, path: str, sha256: str | None,
                       after_tick: bool = False) -> tuple[OnnxPolicy, float]:
        """Read, vet in a separate process, then build from the same bytes (PolicyError); the
        policy and the time.perf_counter() its build started."""
        data = self._read_policy(path, sha256)
        started = time.perf_counter()
        verdict = self.vetter(data, _short(path))
        self.vet_ms = (time.perf_counter() - started) * 1e3
        if not verdict.ok:
            raise PolicyError(verdict.reason)
        if after_tick:  # ONNX Runtime holds the GIL through parts of the build: see _load
            self.tick_done.clear()
            self.tick_done.wait(timeout=2 * self.period)  # no ticks when inactive: go ahead
        started = time.perf_counter()
        return load_policy(path, self.spec, data), started

    def _load(self, request: SwapRequest) -> None:
        """Loader thread: touches no node state but the swap timings; the executor thread takes the
        result.

        ONNX Runtime holds the GIL through parts of a session build (about 1 ms for a droil policy,
        more under CPU contention), so the build starts just after a tick, where the period is idle.
        """
        try:
            result = (request, *self._vetted_policy(request.path, request.sha256, after_tick=True), "")
        except Exception as exc:  # PolicyError, and anything else: the old policy must stay
            result = (request, None, None, str(exc) if isinstance(exc, PolicyError)
                      else f"{_short(request.path)}: {type(exc).__name__}: {exc}")
        settle_heap()
        self.loaded.put(result)
        if self.loaded_guard is not None:
            self.loaded_guard.trigger()

    @total()
    def _on_loaded(self) -> None:
        """Executor thread, between ticks: swap in a loaded policy or report the rejection."""
        while True:
            try:
                request, policy, build_started, reason = self.loaded.get_nowait()
            except Empty:
                return
            if self.state not in ("inactive", "active"):
                continue  # released meanwhile: configure loads policy_path again
            if request.seq != self.swap_seq:
                self._report_swap(request.path, False, "superseded by a newer request")
                continue
            if policy is not None:
                self.policy, self.policy_path, self.swap_started = policy, request.path, build_started
                self.policy_faults_in_row, self.policy_disabled = 0, False
                self.get_logger().info(f"swapped to policy {policy.policy_id} ({request.path})")
            else:
                self.events.add("swap_rejected")
                self.get_logger().warning(f"policy swap rejected, keeping {self._policy_id()}: {reason}")
            self._report_swap(request.path, policy is not None, reason)
            self._follow_active()

    def _follow_active(self) -> None:
        """Make policy_path name the active policy again (after a rejection or an auto-swap)."""
        if self.get_parameter("policy_path").value != self.policy_path:
            self._set_own("policy_path", self.policy_path)

    def _set_own(self, name: str, value: str) -> None:
        self.setting = True
        try:
            self.set_parameters([Parameter(name, Parameter.Type.STRING, value)])
        finally:
            self.setting = False

    @total()
    def _on_policy_update(self, msg: String) -> None:
        """Auto-swap: the same path as a parameter set (a re-export to the same path reloads)."""
        if not self.auto_swap or self.state not in ("inactive", "active"):
            return
        try:
            path, sha256 = parse_announcement(msg.data)
        except ValueError as exc:
            self._report_swap(_short(msg.data), False, f"malformed announcement: {exc}")
            return
        if sha256 is None and self.require_sha256:
            self._report_swap(_short(path), False, "announcement without sha256 (require_sha256)")
            return
        self.pending_sha256 = sha256
        try:
            result = self.set_parameters([Parameter("policy_path", Parameter.Type.STRING, path)])[0]
        finally:
            self.pending_sha256 = None
        if not result.successful:
            self._report_swap(_short(path), False, result.reason)

    def _report_swap(self, path: str, ok: bool, reason: str) -> None:
        self.last_swap = f"{'ok' if ok else 'rejected'}: {path}" + (f" ({reason})" if reason else "")
        self.swap_pub.publish(String(data=json.dumps(
            {"path": path, "ok": ok, "reason": reason, "policy_id": self._policy_id()})))

    def _policy_id(self) -> str:
        return self.policy.policy_id if self.policy is not None else ""

    # diagnostics ----------------------------------------------------------------------------

    @total()
    def _publish_diagnostics(self) -> None:
        level, message = self._health()
        inference, loop = _percentiles_us(self.inference), _percentiles_us(self.loop)
        jitter = _percentiles_us([abs(p - self.period) for p in self.periods])
        values = {
            "state": self.state, "robot": self.spec.id, "policy_id": self._policy_id(),
            "policy_path": self.policy_path, "ticks": self.ticks, "overruns": self.overruns,
            **{f"faults_{kind}": n for kind, n in self.faults.items()},
            "last_fault": self.last_fault, "estop_latched": self.estop_latched,
            "policy_disabled": self.policy_disabled,
            "inference_p50_us": inference[0], "inference_p99_us": inference[1],
            "loop_p50_us": loop[0], "loop_p99_us": loop[1],
            "jitter_p50_us": jitter[0], "jitter_p99_us": jitter[1],
            "period_max_ms": f"{max(self.periods) * 1e3:.2f}" if self.periods else "n/a",
            "last_swap": self.last_swap, "swap_ms": f"{self.swap_ms:.1f}", "vet_ms": f"{self.vet_ms:.0f}",
        }
        status = DiagnosticStatus(level=level, name=f"{self.get_name()}: control loop",
                                  message=message, hardware_id=self.spec.id,
                                  values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
        header = Header(stamp=self.get_clock().now().to_msg())
        self.diagnostics_pub.publish(DiagnosticArray(header=header, status=[status]))
        self.events.clear()
        self.periods, self.inference, self.loop = [], [], []

    def _health(self) -> tuple[bytes, str]:
        if "callback_error" in self.events:
            return DiagnosticStatus.ERROR, self.last_fault
        if self.state != "active":
            if self.configure_error:
                return DiagnosticStatus.ERROR, f"configure failed: {self.configure_error}"
            return DiagnosticStatus.OK, f"{self.state}: not commanding"
        if self.estop_latched:
            return DiagnosticStatus.ERROR, "e-stop latched: safe action until released"
        if self.faulted:
            return DiagnosticStatus.ERROR, f"safe action: {self.last_fault}"
        if self.events:
            return DiagnosticStatus.WARN, f"acting, with {', '.join(sorted(self.events))} this period"
        return DiagnosticStatus.OK, f"acting: {self._policy_id()}"


def main(args: list[str] | None = None) -> int:
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    return spin_node(PolicyNode, args)


if __name__ == "__main__":
    sys.exit(main())
