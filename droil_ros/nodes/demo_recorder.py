"""Records demonstrations (the robot's topics) into rosbag2 bags (MCAP), crash-safe.

Subscriptions take the CDR bytes as they come (``raw=True``) and the bag stores them unchanged,
with the DDS receive time as log time and the send time as publish time (the order
``droil dataset from-bag`` pairs states and commands by). ``~/start`` opens a new bag under
``output_dir`` named with the UTC time, ``~/stop`` closes it; both answer with the bag's path.

What a crash leaves: every ``flush_period`` (in a thread of its own, so that writing and
syncing never hold up the subscriptions) the bag on disk becomes complete: an indexed MCAP file
plus ``metadata.yaml``. A recorder killed by SIGKILL, or by a power cut with ``fsync``, leaves a
bag that rosbags, ``ros2 bag`` and ``droil dataset from-bag`` read up to the last flush; only
the messages since then are lost.

Topics: the robot's (its spec's ``ros`` section and topic inputs) and the demonstration's
(cmd_vel, joy, ...) are subscribed at once with their type and a QoS that
matches their usual publishers (sensors best effort; commands reliable, as ros2_control's effort
controller needs; ``sim_bridge/fallen`` reliable and transient-local, to get its latched value).
Any other topic of ``topics`` is subscribed once the graph shows its publishers, with their type
and QoS (reliable if all of them are, transient-local if all of them are, as ``ros2 bag record``
does). A topic is subscribed again when a publisher has another type or a QoS the subscription
cannot match, or to take the publishers' QoS while nothing has been received on it yet. A topic
enters the bag with its first message, so topics that are never published are not in it. A type
rosbags' typestore does not know (a robot's own message) goes in with the definition its package
installs (``share/<package>/msg``, found through AMENT_PREFIX_PATH as a sourced workspace sets it),
so the bag decodes anywhere.
"""

from __future__ import annotations

import sys
import threading
import time
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.clock import Clock, ClockType
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.subscription import MessageInfo
from std_srvs.srv import Trigger

from droil_ros.data.bag import BagError, BagWriter
from droil_ros.errors import DroilError
from droil_ros.nodes.common import declare_robot, describe, spin_node
from droil_ros.nodes.interface import message_class
from droil_ros.robots.spec import RobotSpec

OTHER_TOPICS = {  # name: (type, reliable, transient local), as their usual publishers offer them
    "cmd_vel": ("geometry_msgs/msg/Twist", False, False),
    "joy": ("sensor_msgs/msg/Joy", False, False),
    "droil/policy_updates": ("std_msgs/msg/String", False, False),
    "sim_bridge/fallen": ("std_msgs/msg/Bool", True, True),
}


def known_topics(spec: RobotSpec) -> dict[str, tuple[str, bool, bool]]:
    """The demonstration's topics and the robot's (its spec's ``ros`` section and topic inputs,
    as written: a relative one resolves in the node's namespace, and its type wins), with their
    types and the QoS their usual publishers offer."""
    ros = spec.ros
    return {**OTHER_TOPICS, ros.state_topic: ("sensor_msgs/msg/JointState", False, False),
            **({ros.imu_topic: ("sensor_msgs/msg/Imu", False, False)} if spec.uses_imu else {}),
            ros.command_topic: (ros.command_type, True, False),
            **{topic: (msgtype, False, False) for topic, msgtype in spec.topic_inputs.items()}}


DEPTH = 5000  # the subscription queue absorbs a recorder lagging by seconds without losing messages
DISCOVERY_PERIOD = 0.25


def record_qos(reliable: bool, latched: bool) -> QoSProfile:
    return QoSProfile(
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
        history=HistoryPolicy.KEEP_LAST, depth=DEPTH)


def _matches(qos: QoSProfile, reliable: bool, latched: bool) -> bool:
    """Whether a subscription with ``qos`` receives from every publisher offering these."""
    return ((reliable or qos.reliability != ReliabilityPolicy.RELIABLE)
            and (latched or qos.durability != DurabilityPolicy.TRANSIENT_LOCAL))


def _same(qos: QoSProfile, reliable: bool, latched: bool) -> bool:
    return ((qos.reliability == ReliabilityPolicy.RELIABLE) == reliable
            and (qos.durability == DurabilityPolicy.TRANSIENT_LOCAL) == latched)


class DemoRecorder(Node):
    def __init__(self):
        super().__init__("demo_recorder")
        self.spec = declare_robot(self)
        declare = self.declare_parameter
        self.output_dir = Path(declare("output_dir", "./bags", describe(
            "folder of the bags; each recording is a sub-folder named with the UTC start time",
            read_only=True)).value)
        known = known_topics(self.spec)
        by_name = {topic.strip("/"): kind for topic, kind in known.items()}
        topics = declare("topics", list(known), describe(
            "topics to record (relative names resolve in the node's namespace); those never "
            "published are not in the bag. Default: the robot spec's (ros section and topic "
            "inputs), cmd_vel, joy, droil/policy_updates and sim_bridge/fallen", read_only=True)).value
        autostart = declare("autostart", False, describe(
            "start recording at launch instead of waiting for ~/start", read_only=True)).value
        self.flush_period = declare("flush_period", 0.5, describe(
            "seconds between flushes: a crash loses at most the messages of the last period",
            read_only=True)).value
        self.fsync = declare("fsync", True, describe(
            "fsync at every flush, so the bag also survives a power cut", read_only=True)).value
        if not self.flush_period > 0:
            raise DroilError(f"flush_period must be positive, got {self.flush_period}")
        if not topics or any(not t for t in topics):
            raise DroilError("topics must be a list of topic names")

        self.requested = {self.resolve_topic_name(t): t.strip("/") for t in topics}
        self.subscribed: dict[str, tuple[str, object]] = {}  # topic -> (type, subscription)
        self.received: set[str] = set()  # topics that delivered a message
        self.warned: set[str] = set()
        self.writer: BagWriter | None = None
        self.channels: dict[tuple[str, str], int] = {}
        self.create_timer(DISCOVERY_PERIOD, self._discover,
                          clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.create_service(Trigger, "~/start", self._on_start)
        self.create_service(Trigger, "~/stop", self._on_stop)
        for topic, name in self.requested.items():
            if name in by_name:
                msgtype, reliable, latched = by_name[name]
                self._subscribe(topic, msgtype, record_qos(reliable, latched))
        self.done = threading.Event()
        self.flusher = threading.Thread(target=self._flush_loop, name="bag_flush", daemon=True)
        self.flusher.start()
        self.get_logger().info(f"{self.spec.id}: topics {', '.join(sorted(self.requested))}; flush every "
                               f"{self.flush_period:g} s{' with fsync' if self.fsync else ''}")
        if autostart:
            self.start()

    # -- subscriptions

    def _discover(self) -> None:
        for topic in self.requested:
            publishers = self.get_publishers_info_by_topic(topic)
            types = sorted({p.topic_type for p in publishers})
            current, sub = self.subscribed.get(topic, (None, None))
            if len(types) > 1:
                self._warn_once(topic, f"{topic} is published with several types {types}; "
                                       f"recording {current or 'none'}")
                continue
            if not types:
                continue
            offered = [p.qos_profile for p in publishers]
            reliable = all(q.reliability == ReliabilityPolicy.RELIABLE for q in offered)
            latched = all(q.durability == DurabilityPolicy.TRANSIENT_LOCAL for q in offered)
            if (types[0] != current or not _matches(sub.qos_profile, reliable, latched)
                    or (topic not in self.received and not _same(sub.qos_profile, reliable, latched))):
                self._subscribe(topic, types[0], record_qos(reliable, latched))

    def _subscribe(self, topic: str, msgtype: str, qos: QoSProfile) -> None:
        cls = message_class(msgtype)
        if cls is None:
            self._warn_once(topic, f"{topic}: type {msgtype} is not installed, not recorded")
            return
        if topic in self.subscribed:
            self.destroy_subscription(self.subscribed.pop(topic)[1])
        sub = self.create_subscription(
            cls, topic, partial(self._on_message, topic, msgtype), qos, raw=True,
            event_callbacks=SubscriptionEventCallbacks(matched=partial(self._on_matched, topic)))
        self.subscribed[topic] = (msgtype, sub)
        self.get_logger().info(
            f"subscribed to {topic} ({msgtype}, {qos.reliability.name.lower()}"
            f"{', transient local' if qos.durability == DurabilityPolicy.TRANSIENT_LOCAL else ''})")

    def _on_matched(self, topic: str, info) -> None:
        if info.current_count_change:
            self.get_logger().info(f"{topic}: {info.current_count} publisher(s)")

    def _warn_once(self, key: str, text: str) -> None:
        if key not in self.warned:
            self.warned.add(key)
            self.get_logger().warning(text)

    # -- recording

    def _on_message(self, topic: str, msgtype: str, raw: bytes, info: MessageInfo) -> None:
        self.received.add(topic)
        writer = self.writer
        if writer is None:
            return
        channel = self.channels.get((topic, msgtype))
        if channel is None:
            try:
                channel = self.channels[(topic, msgtype)] = writer.add_topic(topic, msgtype)
            except BagError as exc:
                self._warn_once(topic, str(exc))
                return
            self.get_logger().info(f"recording {topic}")
        received = info.get("received_timestamp") or time.time_ns()
        try:
            writer.write(channel, received, raw, publish_time=info.get("source_timestamp"))
        except BagError:
            pass  # stopped between the check and the write

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        """A simulation's lockstep counters go into the bag's metadata (custom_data), so a bag
        says whether a state was ever stepped without its command."""
        writer = self.writer
        for status in msg.status if writer is not None else ():
            values = {v.key: v.value for v in status.values}
            if "lockstep_timeouts" in values:
                writer.custom_data = {**writer.custom_data, **{
                    f"{status.name.partition(':')[0]}_{key}": values[key]
                    for key in ("lockstep_timeouts", "stepped_without_command") if key in values}}

    def _flush_loop(self) -> None:
        while not self.done.wait(self.flush_period):
            writer = self.writer
            if writer is None:
                continue
            try:
                writer.flush()
            except OSError as exc:
                self.get_logger().error(f"cannot write {writer.path} ({exc}): recording stopped")
                self.writer = None

    def start(self) -> str:
        if self.writer is not None:
            raise DroilError(f"already recording to {self.writer.path}")
        now = datetime.now(UTC)
        path = self.output_dir / f"demo_{now:%Y%m%dT%H%M%S}_{now.microsecond // 1000:03d}Z"
        self.channels.clear()
        self.writer = BagWriter(path, custom_data={"droil_robot": self.spec.id,
                                                   "droil_robot_hash": self.spec.hash},
                                fsync=self.fsync)
        self.get_logger().info(f"recording to {path}")
        return str(path)

    def stop(self) -> str:
        if self.writer is None:
            raise DroilError("not recording")
        writer, self.writer = self.writer, None
        writer.close()
        text = f"{writer.path}: {writer.message_count} messages"
        self.get_logger().info(f"stopped: {text}")
        return text

    def _on_start(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        return self._answer(response, self.start, "recording to {}")

    def _on_stop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        return self._answer(response, self.stop, "stopped: {}")

    @staticmethod
    def _answer(response: Trigger.Response, action, template: str) -> Trigger.Response:
        try:
            response.message, response.success = template.format(action()), True
        except (DroilError, OSError) as exc:
            response.message, response.success = str(exc), False
        return response

    def destroy_node(self) -> None:
        self.done.set()
        self.flusher.join(timeout=5.0)
        if self.writer is not None:  # SIGINT/SIGTERM: close the bag properly
            self.stop()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    return spin_node(DemoRecorder, args)


if __name__ == "__main__":
    sys.exit(main())
