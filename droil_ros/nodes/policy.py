"""Serve an exported ONNX policy: JointState + Imu -> observation (spec) -> policy -> effort commands.

A lifecycle node, so that bringup decides when a learned policy may drive the robot:
configure loads and validates ``policy_path`` (a bad file or one made for another robot fails the
transition with the reason; the node stays unconfigured), activate starts the control loop,
deactivate stops it after one safe command, cleanup releases the policy, and shutdown (also on
SIGINT/SIGTERM) sends a safe command first when it was active. Unconfigured or inactive, the node
never commands.

The control loop is one steady-clock timer at ``control_rate_hz`` on a single-threaded executor
(sim time must not slow the loop that drives hardware). Each tick uses the newest JointState and
Imu; missing, stale (received more than ``max_obs_age`` ago), NaN/Inf or unusable input, a missing
policy, a policy error or a latched e-stop give the safe action and count a fault in
``/diagnostics``; the node never stops on bad input.

The safe action is zero torque. On a balancing robot that is 'let it fall', not 'hold still':
there is no torque that is safe without a working controller, so a real robot's driver must
handle the fall (brakes, a fall-arrest, cutting power), and time out on commands: a node killed
outright sends nothing. ``~/estop`` (True) latches the safe action until ``~/reset_estop`` is
called with the e-stop released.

Hot-swap: setting ``policy_path`` at run time (or, with ``auto_swap``, a path on
``/droil/policy_updates``) answers at once: a path that is not an existing ``.onnx`` file is
rejected with the reason, any other is accepted, then loaded and validated in a worker thread,
never on the control path. The new policy then replaces the old one between two ticks (one
reference). A file that fails to load, or was made for another robot, is rejected: the old policy
keeps acting and ``policy_path`` is set back to it. The outcome of every load (and of an
auto-swap refused at once) is published, latched, on ``~/swap_status`` as JSON
``{"path", "ok", "reason", "policy_id"}`` (policy_id: the policy acting after the attempt); when
requests overlap, the newest wins and older ones report "superseded".

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
import gc
import json
import math
import os
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
from sensor_msgs.msg import Imu, JointState
from std_msgs.msg import Bool, Float64MultiArray, Header, String
from std_srvs.srv import Trigger

from droil_ros.errors import DroilError
from droil_ros.nodes.common import (
    COMMAND_QOS,
    LATCHED_QOS,
    SENSOR_QOS,
    command_msg,
    declare_robot,
    describe,
    readings_from_msgs,
    spin_node,
)
from droil_ros.policy.runtime import OnnxPolicy, PolicyError
from droil_ros.robots.spec import RobotSpec

FAULT_KINDS = ("stale", "nan", "bad_input", "no_policy", "policy_error", "estop")
OVERRUN = 1.5  # a tick period longer than this many nominal periods is an overrun
# s a thread may keep the GIL while another waits for it (Python's default, 5 ms, is a 200 Hz period):
# the control loop gets it back from the hot-swap loader within this
GIL_SWITCH_INTERVAL = 0.0005


class Fault(Exception):
    def __init__(self, kind: str, detail: str):
        super().__init__(detail)
        self.kind = kind


@dataclass(frozen=True)
class SwapRequest:
    seq: int
    path: str
    asked: float  # time.perf_counter() of the request


def load_policy(path: str, spec: RobotSpec) -> OnnxPolicy:
    """Load, validate against the robot spec (PolicyError) and run once: the first run allocates,
    and that must not happen on the control path."""
    policy = OnnxPolicy(path, spec)
    policy(np.zeros(policy.obs_dim))
    return policy


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


class PolicyNode(LifecycleNode):
    def __init__(self):
        super().__init__("policy")
        self.spec = declare_robot(self)
        if not self.spec.uses_sensor_observation:
            raise DroilError(f"the policy node serves robots observed through JointState + Imu; "
                             f"'{self.spec.id}' observes through Gymnasium")
        declare = self.declare_parameter
        declare("policy_path", "", describe(
            "ONNX policy to serve (empty: none, the safe action until one is set); set it at run "
            "time to hot-swap (loaded off the control path; a bad file is rejected, see ~/swap_status)"))
        self.rate = declare("control_rate_hz", self.spec.control_rate_hz, describe(
            "control loop rate on the steady clock (default: the robot spec's)", read_only=True)).value
        self.max_obs_age = declare("max_obs_age", 3.0 / self.rate if self.rate > 0 else 0.0, describe(
            "seconds since the newest JointState or Imu arrived beyond which the input is stale and "
            "the safe action is sent (default: 3 control periods)", read_only=True)).value
        declare("auto_swap", False, describe(
            "hot-swap to the policy paths announced on /droil/policy_updates"))
        priority = declare("thread_priority", 0, describe(
            "SCHED_FIFO priority (1-99) of the control loop's thread, as ros2_control's; 0: the OS "
            "default. Needs root, CAP_SYS_NICE or an rtprio limit: refused, the node warns and runs on",
            read_only=True)).value
        diagnostics_period = declare("diagnostics_period", 1.0, describe(
            "seconds between /diagnostics messages (latencies are over this period)",
            read_only=True)).value
        for name, value in (("control_rate_hz", self.rate), ("max_obs_age", self.max_obs_age),
                            ("diagnostics_period", diagnostics_period)):
            if not value > 0:
                raise DroilError(f"{name} must be positive, got {value}")
        if not math.isclose(self.rate, self.spec.control_rate_hz):
            self.get_logger().warning(f"control_rate_hz {self.rate:g} differs from the robot spec's "
                                      f"{self.spec.control_rate_hz:g}: policies were trained at that rate")
        self.period = 1.0 / self.rate
        self.fifo = self._set_fifo(priority) if priority else 0  # the loop thread's SCHED_FIFO priority
        self.safe_command = command_msg(np.zeros(len(self.spec.actuators)))
        self.steady = Clock(clock_type=ClockType.STEADY_TIME)

        self.state = "unconfigured"
        self.configure_error = ""
        self.policy: OnnxPolicy | None = None  # read once per tick; replaced whole on a swap
        self.policy_path = ""  # of self.policy
        self.command_pub = None
        self.sensor_subs = []
        self.timer = None
        self.joint_state: JointState | None = None
        self.imu: Imu | None = None
        self.joint_state_at = self.imu_at = -math.inf  # time.monotonic() of receipt
        self.estop_input = False  # last value on ~/estop
        self.estop_latched = False

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
        self.loaded_guard = self.create_guard_condition(self._on_loaded)
        self.swap_seq = 0
        self.swap_asked: float | None = None  # request time of the swap whose first action is pending
        self.swap_ms = math.nan
        self.last_swap = "none"
        self.setting_path = False  # policy_path set by the node itself (follows the active policy)

        self.add_on_set_parameters_callback(self._check_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        self.swap_pub = self.create_publisher(String, "~/swap_status", LATCHED_QOS)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(Bool, "~/estop", self._on_estop, 10)
        self.create_service(Trigger, "~/reset_estop", self._on_reset_estop)
        self.create_subscription(String, "/droil/policy_updates", self._on_policy_update, 10)
        self.create_timer(diagnostics_period, self._publish_diagnostics, clock=self.steady)
        autostart = declare("autostart", False, describe(
            "configure and activate at start (bringup without a lifecycle manager)",
            read_only=True)).value
        if autostart:
            self.autostart_timer = self.create_timer(0.0, self._autostart, clock=self.steady)
        self.get_logger().info(f"{self.spec.id}: {self.rate:g} Hz, max_obs_age {self.max_obs_age:g} s; "
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

    def _autostart(self) -> None:
        self.destroy_timer(self.autostart_timer)
        if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()

    # lifecycle ------------------------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        path = self.get_parameter("policy_path").value
        try:
            self.policy = load_policy(path, self.spec) if path else None
        except PolicyError as exc:
            self.configure_error = str(exc)
            self.get_logger().error(f"configure failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        self.policy_path, self.configure_error = path, ""
        self.command_pub = self.create_lifecycle_publisher(Float64MultiArray, "effort_controller/commands",
                                                           COMMAND_QOS)
        self.sensor_subs = [
            self.create_subscription(JointState, "joint_states", self._on_joint_state, SENSOR_QOS),
            self.create_subscription(Imu, "imu/data", self._on_imu, SENSOR_QOS),
        ]
        self.state = "inactive"
        if self.policy is None:
            self.get_logger().warning("configured without a policy: the safe action until policy_path is set")
        else:
            self.get_logger().info(f"configured: policy {self.policy.policy_id}")
        settle_heap()
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.last_tick_start = None
        self.timer = self.create_timer(self.period, self._tick, clock=self.steady)
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
        self.command_pub.publish(self.safe_command)
        self.get_logger().info("stopped commanding after a safe (zero-torque) command")

    def _release(self) -> None:
        for sub in self.sensor_subs:
            self.destroy_subscription(sub)
        self.sensor_subs = []
        if self.command_pub is not None:
            self.destroy_lifecycle_publisher(self.command_pub)
            self.command_pub = None
        self.policy, self.policy_path = None, ""
        self.joint_state = self.imu = None

    # control loop ---------------------------------------------------------------------------

    def _on_joint_state(self, msg: JointState) -> None:
        self.joint_state, self.joint_state_at = msg, time.monotonic()

    def _on_imu(self, msg: Imu) -> None:
        self.imu, self.imu_at = msg, time.monotonic()

    def _tick(self) -> None:
        start = time.perf_counter()
        if self.last_tick_start is not None:
            period = start - self.last_tick_start
            self.periods.append(period)
            if period > OVERRUN * self.period:
                self.overruns += 1
                self.events.add("overrun")
        self.last_tick_start = start
        self.ticks += 1
        policy = self.policy  # one read: a swap between ticks never splits a tick
        try:
            action = self._act(policy)
        except Fault as fault:
            self.command_pub.publish(self.safe_command)
            self._record(fault)
        else:
            self.command_pub.publish(command_msg(self.spec.action_to_command(action)))
            self.faulted = False
            if self.swap_asked is not None:  # the first action of a swapped-in policy
                self.swap_ms = (time.perf_counter() - self.swap_asked) * 1e3
                self.swap_asked = None
        self.loop.append(time.perf_counter() - start)
        self.tick_done.set()

    def _act(self, policy: OnnxPolicy | None) -> np.ndarray:
        """The policy's action for the newest input; Fault when the safe action must be sent."""
        if self.estop_latched:
            raise Fault("estop", "e-stop latched")
        if policy is None:
            raise Fault("no_policy", "no policy loaded (set policy_path)")
        if self.joint_state is None or self.imu is None:
            raise Fault("stale", "no JointState + Imu received yet")
        age = time.monotonic() - min(self.joint_state_at, self.imu_at)
        if age > self.max_obs_age:
            raise Fault("stale", f"newest input is {age * 1e3:.0f} ms old (max_obs_age "
                                 f"{self.max_obs_age * 1e3:.0f} ms)")
        readings = readings_from_msgs(self.joint_state, self.imu)
        try:
            obs = self.spec.build_observation(readings)
        except ValueError as exc:
            raise Fault("bad_input", str(exc)) from None
        # the orientation too: quaternion_to_rpy clamps a NaN pitch to a finite +-pi/2
        if not (np.all(np.isfinite(obs)) and np.all(np.isfinite(readings.orientation))):
            raise Fault("nan", "NaN or Inf in the input")
        started = time.perf_counter()
        try:
            action = policy(obs)
        except Exception as exc:  # ORT errors have their own types; none may stop the loop
            raise Fault("policy_error", f"policy {policy.policy_id} failed: {exc}") from None
        self.inference.append(time.perf_counter() - started)
        return action

    def _record(self, fault: Fault) -> None:
        """Count the fault; warn when its kind changes, else once a second (rclpy's throttled
        logging costs about 0.2 ms a call, even when it stays silent)."""
        self.faults[fault.kind] += 1
        now = time.monotonic()
        if fault.kind != "estop" and (fault.kind != self.warned[0] or now - self.warned[1] >= 1.0):
            self.get_logger().warning(f"{fault}: safe action (zero torque)")  # e-stop: as it latches
            self.warned = (fault.kind, now)
        self.last_fault = f"{fault.kind}: {fault}"
        self.faulted = True
        self.events.add(fault.kind)

    # e-stop ---------------------------------------------------------------------------------

    def _on_estop(self, msg: Bool) -> None:
        self.estop_input = msg.data
        if msg.data and not self.estop_latched:
            self.estop_latched = True
            self.get_logger().warning("e-stop: safe action until ~/reset_estop")

    def _on_reset_estop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        if self.estop_input:
            response.success, response.message = False, "e-stop is still asserted on ~/estop"
        else:
            self.estop_latched = False
            response.success, response.message = True, "e-stop released"
            self.get_logger().info(response.message)
        return response

    # hot-swap -------------------------------------------------------------------------------

    def _check_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Cheap checks only (parameter calls must answer at once); loading starts after the set."""
        for p in params:
            if p.name != "policy_path" or self.setting_path or self.state == "unconfigured":
                continue  # unconfigured: configure loads whatever is set
            path = Path(p.value)
            if not p.value:
                return SetParametersResult(successful=False, reason="an empty policy_path cannot "
                                           "replace the active policy: deactivate to stop acting")
            if path.suffix != ".onnx":
                return SetParametersResult(successful=False, reason=f"{path}: not an .onnx file")
            if not path.is_file():
                return SetParametersResult(successful=False, reason=f"policy file not found: {path}")
        return SetParametersResult(successful=True)  # rclpy drops the reason of a success

    def _apply_parameters(self, params: list[Parameter]) -> None:
        for p in params:
            if p.name == "policy_path" and not self.setting_path and self.state in ("inactive", "active"):
                self.swap_seq += 1
                self.loader.submit(self._load, SwapRequest(self.swap_seq, p.value, time.perf_counter()))

    def _load(self, request: SwapRequest) -> None:
        """Loader thread: touches no node state; the executor thread takes the result.

        ONNX Runtime holds the GIL through parts of a session build (about 1 ms for a droil policy,
        more under CPU contention), so the build starts just after a tick, where the period is idle.
        """
        self.tick_done.clear()
        self.tick_done.wait(timeout=2 * self.period)  # no ticks when inactive: go ahead
        try:
            result = (request, load_policy(request.path, self.spec), "")
        except Exception as exc:  # PolicyError, and anything else: the old policy must stay
            result = (request, None, str(exc) if isinstance(exc, PolicyError)
                      else f"{request.path}: {type(exc).__name__}: {exc}")
        settle_heap()
        self.loaded.put(result)
        self.loaded_guard.trigger()

    def _on_loaded(self) -> None:
        """Executor thread, between ticks: swap in a loaded policy or report the rejection."""
        while True:
            try:
                request, policy, reason = self.loaded.get_nowait()
            except Empty:
                return
            if self.state not in ("inactive", "active"):
                continue  # released meanwhile: configure loads policy_path again
            if request.seq != self.swap_seq:
                self._report_swap(request.path, False, "superseded by a newer request")
                continue
            if policy is not None:
                self.policy, self.policy_path, self.swap_asked = policy, request.path, request.asked
                self.get_logger().info(f"swapped to policy {policy.policy_id} ({request.path})")
            else:
                self.events.add("swap_rejected")
                self.get_logger().warning(f"policy swap rejected, keeping {self._policy_id()}: {reason}")
            self._report_swap(request.path, policy is not None, reason)
            self._follow_active()

    def _follow_active(self) -> None:
        """Make policy_path name the active policy again (after a rejection or an auto-swap)."""
        if self.get_parameter("policy_path").value != self.policy_path:
            self.setting_path = True
            try:
                self.set_parameters([Parameter("policy_path", Parameter.Type.STRING, self.policy_path)])
            finally:
                self.setting_path = False

    def _on_policy_update(self, msg: String) -> None:
        """Auto-swap: the same path as a parameter set (a re-export to the same path reloads)."""
        if not self.get_parameter("auto_swap").value or self.state not in ("inactive", "active"):
            return
        result = self.set_parameters([Parameter("policy_path", Parameter.Type.STRING, msg.data)])[0]
        if not result.successful:
            self._report_swap(msg.data, False, result.reason)

    def _report_swap(self, path: str, ok: bool, reason: str) -> None:
        self.last_swap = f"{'ok' if ok else 'rejected'}: {path}" + (f" ({reason})" if reason else "")
        self.swap_pub.publish(String(data=json.dumps(
            {"path": path, "ok": ok, "reason": reason, "policy_id": self._policy_id()})))

    def _policy_id(self) -> str:
        return self.policy.policy_id if self.policy is not None else ""

    # diagnostics ----------------------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        level, message = self._health()
        inference, loop = _percentiles_us(self.inference), _percentiles_us(self.loop)
        jitter = _percentiles_us([abs(p - self.period) for p in self.periods])
        values = {
            "state": self.state, "robot": self.spec.id, "policy_id": self._policy_id(),
            "policy_path": self.policy_path, "ticks": self.ticks, "overruns": self.overruns,
            **{f"faults_{kind}": n for kind, n in self.faults.items()},
            "last_fault": self.last_fault, "estop_latched": self.estop_latched,
            "inference_p50_us": inference[0], "inference_p99_us": inference[1],
            "loop_p50_us": loop[0], "loop_p99_us": loop[1],
            "jitter_p50_us": jitter[0], "jitter_p99_us": jitter[1],
            "period_max_ms": f"{max(self.periods) * 1e3:.2f}" if self.periods else "n/a",
            "last_swap": self.last_swap, "swap_ms": f"{self.swap_ms:.1f}",
        }
        status = DiagnosticStatus(level=level, name=f"{self.get_name()}: control loop",
                                  message=message, hardware_id=self.spec.id,
                                  values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
        header = Header(stamp=self.get_clock().now().to_msg())
        self.diagnostics_pub.publish(DiagnosticArray(header=header, status=[status]))
        self.events.clear()
        self.periods, self.inference, self.loop = [], [], []

    def _health(self) -> tuple[bytes, str]:
        if self.state != "active":
            if self.configure_error:
                return DiagnosticStatus.ERROR, f"configure failed: {self.configure_error}"
            return DiagnosticStatus.OK, f"{self.state}: not commanding"
        if self.estop_latched:
            return DiagnosticStatus.ERROR, "e-stop latched: safe action until ~/reset_estop"
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
