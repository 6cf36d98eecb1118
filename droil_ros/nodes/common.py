"""What every node shares: message <-> core conversions, QoS profiles, parameters, main().

Conversions only: observations, actions and physics stay in the core (robots/, sim/).
"""

from __future__ import annotations

import faulthandler
import math
import signal
import sys
import time
from array import array
from collections.abc import Callable
from pathlib import Path

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import Imu, JointState
from std_msgs.msg import Float64MultiArray, Header

from droil_ros.errors import DroilError
from droil_ros.robots.spec import RobotSpec, SensorReadings, load_spec

EXIT_USAGE = 2
TEARDOWN_LIMIT_S = 15.0  # a node's own cleanup (closing a bag) and its DDS entities' destruction

# Sensors: the newest sample matters, a lost one is replaced 5 ms later (qos_profile_sensor_data).
SENSOR_QOS = QoSProfile(reliability=ReliabilityPolicy.BEST_EFFORT, history=HistoryPolicy.KEEP_LAST,
                        depth=5)
# Sensors for a reader that must see every state (a measurement, a test's witness): a reader
# lagging on a loaded machine keeps up to seconds of them instead of losing all but 5.
SENSOR_WITNESS_QOS = QoSProfile(reliability=ReliabilityPolicy.BEST_EFFORT,
                                history=HistoryPolicy.KEEP_LAST, depth=2000)
# Commands: RELIABLE because ros2_control's effort controller subscribes reliably (a best-effort
# publisher would not match it) and lockstep must not lose the answer to a state. Publishers keep
# 100: a reliable writer drops samples beyond its history even when a slow subscriber (a
# recorder on a loaded machine) has not acknowledged them, which then loses them. The actuator side
# subscribes with depth 1 (COMMAND_HOLD_QOS), so no queue of stale commands builds up there.
COMMAND_QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST,
                         depth=100)
COMMAND_HOLD_QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST,
                              depth=1)
# Latched state (e.g. ``~/fallen``): a late subscriber gets the current value.
LATCHED_QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST,
                         depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
CLOCK_QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST,
                       depth=1)


def describe(text: str, read_only: bool = False) -> ParameterDescriptor:
    return ParameterDescriptor(description=text, read_only=read_only)


def declare_robot(node: Node) -> RobotSpec:
    """Declare the read-only ``robot`` parameter and load its spec (SpecError when unknown)."""
    name = node.declare_parameter(
        "robot", "wheel_legged", describe("robot spec: id under config/robots/ or a YAML path",
                                          read_only=True)).value
    return load_spec(name)


def readings_from_msgs(joint_state: JointState, imu: Imu | None, orientation: np.ndarray | None = None,
                       joint_names: tuple[str, ...] | None = None,
                       messages: dict | None = None) -> SensorReadings:
    """``imu`` None: a robot whose observation reads no IMU. ``orientation``: the Imu's quaternion
    as checked by ``imu_orientation`` (default: as sent). ``joint_names``: the names of the
    JointState's values in order, for robots whose JointStates carry none (default: its own).
    ``messages``: the newest message of each topic the spec's ``source: topic`` terms read."""
    if imu is None:
        imu = Imu()
        orientation = np.array([0.0, 0.0, 0.0, 1.0])
    elif orientation is None:
        q = imu.orientation
        orientation = np.array([q.x, q.y, q.z, q.w])
    return SensorReadings(
        joint_names=joint_names or tuple(joint_state.name),
        position=np.array(joint_state.position, dtype=np.float64),
        velocity=np.array(joint_state.velocity, dtype=np.float64),
        effort=np.array(joint_state.effort, dtype=np.float64),
        orientation=orientation, angular_velocity=_vector(imu.angular_velocity),
        linear_acceleration=_vector(imu.linear_acceleration), messages=dict(messages or {}),
    )


class Implausible(ValueError):
    """A sensor message that cannot be a real reading; ``kind`` names the fault."""

    def __init__(self, kind: str, detail: str):
        super().__init__(detail)
        self.kind = kind


def check_joint_state(msg: JointState, max_names: int) -> None:
    """Implausible unless names are few enough (``max_names``) and unique (else the later
    duplicate would silently win the lookup by name)."""
    if len(msg.name) > max_names:
        raise Implausible("oversize", f"JointState has {len(msg.name)} names, at most {max_names} accepted")
    if len(set(msg.name)) != len(msg.name):
        seen: set[str] = set()
        duplicated = sorted({n for n in msg.name if n in seen or seen.add(n)})
        raise Implausible("duplicate_joints", f"JointState names {duplicated[:3]} more than once")


def imu_orientation(msg: Imu, tolerance: float) -> np.ndarray:
    """The Imu's quaternion (x, y, z, w), normalised; Implausible when the Imu says it has no
    orientation (REP 145: covariance[0] = -1) or the norm is off by more than ``tolerance`` (a zero
    quaternion is no rotation at all, not 'upright')."""
    if msg.orientation_covariance[0] == -1.0:
        raise Implausible("orientation_unknown",
                          "Imu reports no orientation (orientation_covariance[0] = -1)")
    q = msg.orientation
    quaternion = np.array([q.x, q.y, q.z, q.w])
    norm = float(np.sqrt(quaternion @ quaternion))
    if not math.isfinite(norm):
        raise Implausible("nan", "NaN or Inf in the Imu orientation")
    if abs(norm - 1.0) > tolerance:
        raise Implausible("bad_orientation", f"Imu quaternion has norm {norm:.3g} (a rotation has 1, "
                                             f"tolerance {tolerance:g})")
    # a unit quaternion (to float precision) is used as sent: the same bits as any other reader's
    return quaternion if abs(norm - 1.0) < 1e-12 else quaternion / norm


def stamp_seconds(header: Header) -> float:
    return header.stamp.sec + header.stamp.nanosec * 1e-9


def _vector(v) -> np.ndarray:
    return np.array([v.x, v.y, v.z])


def stale_input(topics, inputs: dict, max_age: float) -> str | None:
    """Why the newest messages of topic inputs ``topics`` cannot be used (``inputs``: topic ->
    (time.monotonic() of receipt, message)), or None when each came within ``max_age`` s."""
    now = time.monotonic()
    for topic in topics:
        if topic not in inputs:
            return f"nothing received on {topic} yet"
        age = now - inputs[topic][0]
        if age > max_age:
            return f"newest {topic} is {age * 1e3:.0f} ms old (max_input_age {max_age * 1e3:.0f} ms)"
    return None


def subscribe_states(node: Node, robot, on_readings: Callable[[SensorReadings], None],
                     max_input_age: float = 0.5) -> None:
    """Call ``on_readings`` for each pair of the newest JointState and Imu (the JointState alone
    for a robot whose observation reads no IMU) on the spec's topics, each message used once: a
    controller that answers states (lockstep waits for one answer per state). ``robot``: a
    ``RobotInterface``; the newest message of each topic input goes with the readings, and no
    state is answered while one has not arrived or is older than ``max_input_age`` s (a warning
    a second says which)."""
    latest: dict = {}
    inputs: dict = {}  # topic -> (monotonic receipt, message)
    wanted = 2 if robot.spec.uses_imu else 1

    def take(kind: str, msg) -> None:
        latest[kind] = msg
        if len(latest) < wanted:
            return
        stale = stale_input(robot.inputs, inputs, max_input_age)
        if stale:
            latest.clear()
            node.get_logger().warning(f"no state answered: {stale}", throttle_duration_sec=1.0)
            return
        on_readings(robot.readings(latest.pop("joints"), latest.pop("imu", None),
                                   messages={t: m for t, (_, m) in inputs.items()}))

    def keep(topic: str, msg) -> None:
        inputs[topic] = (time.monotonic(), msg)

    ros = robot.spec.ros
    if robot.spec.uses_imu:
        node.create_subscription(Imu, ros.imu_topic, lambda msg: take("imu", msg), SENSOR_QOS)
    node.create_subscription(JointState, ros.state_topic, lambda msg: take("joints", msg), SENSOR_QOS)
    for topic, cls in robot.inputs.items():
        node.create_subscription(cls, topic, lambda msg, topic=topic: keep(topic, msg), SENSOR_QOS)


def joint_state_msg(readings: SensorReadings, stamp: Time) -> JointState:
    """Position, velocity and effort always filled: empty arrays break rosbags deserialisation."""
    return JointState(
        header=Header(stamp=stamp), name=list(readings.joint_names),
        position=array("d", readings.position), velocity=array("d", readings.velocity),
        effort=array("d", readings.effort),
    )


def imu_msg(readings: SensorReadings, stamp: Time, frame_id: str) -> Imu:
    msg = Imu(header=Header(stamp=stamp, frame_id=frame_id))
    msg.orientation.x, msg.orientation.y, msg.orientation.z, msg.orientation.w = (
        float(v) for v in readings.orientation)
    av, la = msg.angular_velocity, msg.linear_acceleration
    av.x, av.y, av.z = (float(v) for v in readings.angular_velocity)
    la.x, la.y, la.z = (float(v) for v in readings.linear_acceleration)
    return msg


def command_msg(effort: np.ndarray) -> Float64MultiArray:
    """One effort per actuator, in the order of ``spec.actuators`` (ros2_control's layout)."""
    return Float64MultiArray(data=array("d", np.asarray(effort, dtype=np.float64)))


def reject_undeclared_parameters(node: Node) -> None:
    """DroilError naming parameters given to the node that it does not declare: a typo
    (``-p enabeld:=false``, ``lqr_expert.enabeld:=false`` in a bringup) must not pass unnoticed.
    rclpy keeps what was given in ``_parameter_overrides``; there is no public accessor."""
    unknown = sorted(set(node._parameter_overrides) - set(node._parameters))
    if unknown:
        raise DroilError(f"unknown parameter{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
                         f"(declared: {', '.join(sorted(node._parameters))})")


def _executor(node: Node):
    """A node whose ``events_executor`` is true gets rclpy's EventsExecutor (callbacks dispatched
    from C++: less Python per message), where this rclpy has one; all others, and a node where it
    is missing, the SingleThreadedExecutor. Spun with a finite timeout either way: in rclpy 9.1.2
    ``EventsExecutor.spin()`` runs no callbacks."""
    if getattr(node, "events_executor", False):
        try:
            from rclpy.experimental import EventsExecutor
        except ImportError:
            node.get_logger().warning("this rclpy has no EventsExecutor: using the SingleThreadedExecutor")
        else:
            return EventsExecutor()
    return SingleThreadedExecutor()


def spin_node(node_factory: Callable[[], Node], args: list[str] | None = None) -> int:
    """Run one node on a single-threaded executor until SIGINT or SIGTERM; 0 on a signal, and bad
    configuration is one line and exit 2.

    Signals may come several times (a terminal's Ctrl-C reaches the node, then ``ros2 launch``
    forwards it; ``timeout`` forwards a group's SIGTERM). rclpy's own handlers are off: they shut
    the context down at once, so a node could not publish on its way out, and the
    KeyboardInterrupt they raise lands in whatever runs then (``destroy_node`` included). Ours
    only note the signal, and the loop checks between executor waits (at most 0.1 s); a
    lifecycle node then goes through its shutdown transition, so it can still send a last safe
    command."""
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop_requested = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda signum, frame: stop_requested.append(signum))
    node = None
    try:
        node = node_factory()
        reject_undeclared_parameters(node)
        executor = _executor(node)
        executor.add_node(node)
        while rclpy.ok() and not stop_requested:
            executor.spin_once(timeout_sec=0.1)
        if stop_requested:
            # the stop is under way: later signals change nothing. Ignored, not just noted: Python's
            # finalisation puts a handler of ours back to the default (die by the signal), and
            # ``ros2 launch`` forwards a Ctrl-C while we may be exiting already
            for signum in (signal.SIGINT, signal.SIGTERM):
                signal.signal(signum, signal.SIG_IGN)
        if stop_requested and isinstance(node, LifecycleNode):
            try:
                node.trigger_shutdown()
            except RuntimeError:  # rclpy's RCLError: finalized already
                pass
    except ExternalShutdownException:
        pass
    except (DroilError, ParameterException) as exc:
        print(f"{Path(sys.argv[0]).stem}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        # Fast DDS 3.2 can deadlock destroying a writer while its peers leave (eProsima/Fast-DDS#6193,
        # #6502), holding the GIL: only faulthandler's thread (C, no GIL) can end such a process,
        # with status 1 and every thread's stack on stderr
        faulthandler.dump_traceback_later(TEARDOWN_LIMIT_S, exit=True)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
        faulthandler.cancel_dump_traceback_later()
    return 0
