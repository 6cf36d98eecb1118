"""The robot's ROS interface as the nodes speak it, from the spec's ``ros`` section: the command
message of any type (the field paths that hold the actuators' values), joints by name or by
index, and the ``source: topic`` inputs of the observation. The topics themselves are the spec's
``ros.*_topic`` names, used as written (relative ones resolve in the node's namespace)."""

from __future__ import annotations

import array
import importlib

import numpy as np
from rclpy.serialization import deserialize_message, serialize_message
from rosidl_parser.definition import AbstractNestedType
from sensor_msgs.msg import Imu, JointState

from droil_ros.errors import DroilError
from droil_ros.nodes.common import readings_from_msgs
from droil_ros.robots.spec import RobotSpec, SensorReadings, field_path_parts, message_field

ARRAY_TYPECODES = {"double": "d", "float": "f"}
STANDARD_COMMANDS = ("std_msgs/msg/Float64MultiArray", "sensor_msgs/msg/JointState",
                     "trajectory_msgs/msg/JointTrajectory")


def message_class(msgtype: str):
    """The rclpy class of ``pkg/msg/Name``, or None when it is not installed."""
    package, kind, name = (msgtype.split("/") + ["", ""])[:3]
    try:
        return getattr(importlib.import_module(f"{package}.{kind}"), name)
    except (ImportError, AttributeError, ValueError):
        return None


def require_message_class(msgtype: str, what: str):
    cls = message_class(msgtype)
    if cls is None:
        raise DroilError(f"{what} type {msgtype} is not importable here: source the workspace that "
                         f"builds {msgtype.split('/')[0]} (standard command types need nothing: "
                         f"{', '.join(STANDARD_COMMANDS)})")
    return cls


def _element_class(msg, name: str):
    """The message class of the elements of sequence field ``name`` of ``msg``."""
    element = _slot(msg, name).value_type
    return getattr(importlib.import_module(".".join(element.namespaces)), element.name)


def _owner(msg, path: str):
    """The message that holds the last field of ``path`` (``points[0].velocities``: points[0]),
    message sequences grown on the way, and that field's (name, indexes)."""
    *leading, last = field_path_parts(path)
    for name, indexes in leading:
        if len(indexes) > 1:
            raise ValueError(f"{path}: one index per field")
        if not indexes:
            msg = getattr(msg, name)
            continue
        sequence = getattr(msg, name)
        while len(sequence) <= indexes[0]:
            sequence.append(_element_class(msg, name)())
        msg = sequence[indexes[0]]
    return msg, last


def _assign(msg, path: str, value) -> None:
    """Set the field at ``path`` (``data``, ``points[0].velocities``, ``wheels[1].speed``),
    growing message sequences on the way."""
    msg, (name, index) = _owner(msg, path)
    if not index:
        setattr(msg, name, value)
        return
    if len(index) > 1:
        raise ValueError(f"{path}: one index per field")
    values = list(getattr(msg, name))  # a number in a numeric sequence
    values += [0.0] * (index[0] + 1 - len(values))
    values[index[0]] = value
    setattr(msg, name, values)


def _slot(msg, name: str):
    return msg.SLOT_TYPES[list(msg.get_fields_and_field_types()).index(name)]


def _sequence_slot(msg, path: str) -> AbstractNestedType | None:
    """The type of the sequence field ``path`` ends at (``data``, ``points[0].velocities``); None
    where it ends at a number (``data[1]``, ``wheels[0].speed``)."""
    msg, (name, indexes) = _owner(msg, path)
    slot = _slot(msg, name)
    return slot if not indexes and isinstance(slot, AbstractNestedType) else None


def _has_field(kind, path: str) -> bool:
    """Whether ``path`` names a field of message type ``kind`` (the last field's indexes are not
    checked: they depend on the message)."""
    try:
        msg, (name, _) = _owner(kind(), path)
        return name in msg.get_fields_and_field_types()
    except (AttributeError, ImportError, TypeError, ValueError):  # a number or a list where a message must be
        return False


class CommandCodec:
    """Actuator commands (one value per actuator, in the order of ``spec.actuators``) to and from
    the robot's command message: ``ros.command_type``, the values at ``ros.command_field`` (one
    path for all actuators, or one per actuator); with joints by name, a JointState or
    JointTrajectory command names the actuators' joints."""

    def __init__(self, spec: RobotSpec):
        ros = spec.ros
        self.n = len(spec.actuators)
        self.msg_type = require_message_class(ros.command_type, "command")
        self.paths = ros.command_field
        if len(self.paths) not in (1, self.n):
            raise DroilError(f"ros.command_field has {len(self.paths)} paths: one for all actuators "
                             f"or one per actuator ({self.n})")
        self.names = list(spec.actuators.values()) if ros.joints == "by_name" else []
        self.kind = ros.command_kind
        fits = "does not fit"
        try:
            # one path for all actuators names a sequence, unless it names a single number
            sequence = _sequence_slot(self.msg_type(), self.paths[0]) if len(self.paths) == 1 else None
            self.scalar = len(self.paths) == 1 and sequence is None
            # rclpy takes an array.array of the field's own type as it is; a list it checks value by value
            self.typecode = ARRAY_TYPECODES.get(getattr(sequence and sequence.value_type, "typename", None))
            if self.scalar and self.n != 1:
                raise ValueError(f"a single number for {self.n} actuators")
            distinct = np.arange(1.0, self.n + 1.0)  # each actuator's value must come back as sent
            back = self.decode(deserialize_message(serialize_message(self.encode(distinct)), self.msg_type))
            if not np.array_equal(back, distinct):
                fits = "does not carry"
                raise ValueError(f"{self.n} values sent, {back.tolist()} read back")
        except Exception as exc:  # rclpy's setters assert, its serialisation has its own errors
            raise DroilError(f"ros.command_field {' + '.join(self.paths)} {fits} {ros.command_type}: "
                             f"{type(exc).__name__}: {exc}"[:300]) from None

    def encode(self, command: np.ndarray, stamp=None):
        msg = self.msg_type()
        values = [float(v) for v in command]
        if self.scalar:
            _assign(msg, self.paths[0], values[0])
        elif len(self.paths) == 1:
            _assign(msg, self.paths[0], array.array(self.typecode, values) if self.typecode else values)
        else:
            for path, value in zip(self.paths, values, strict=True):
                _assign(msg, path, value)
        if self.names:
            if hasattr(msg, "joint_names"):
                msg.joint_names = self.names
            elif isinstance(msg, JointState):
                msg.name = self.names
        if stamp is not None and hasattr(msg, "header"):
            msg.header.stamp = stamp
        return msg

    def decode(self, msg) -> np.ndarray:
        """The command's values; ValueError (with the reason) when it cannot be applied."""
        try:
            values = np.concatenate([message_field(msg, path) for path in self.paths])
        except (AttributeError, IndexError, TypeError, ValueError) as exc:
            raise ValueError(f"command without {' + '.join(self.paths)} ({exc})") from None
        if values.shape != (self.n,):
            raise ValueError(f"command has {values.size} values, expected {self.n}")
        if not np.all(np.isfinite(values)):
            raise ValueError("command contains NaN or Inf")
        return values


class RobotInterface:
    """What a node needs to talk to the robot of ``spec``: its command codec, the classes of
    its topic inputs (DroilError, one line, when a type is not importable) and readings from
    its messages."""

    def __init__(self, spec: RobotSpec):
        self.spec = spec
        self.command = CommandCodec(spec)
        self.inputs = {topic: require_message_class(msgtype, f"observation input {topic}:")
                       for topic, msgtype in spec.topic_inputs.items()}
        for element in spec.observation:
            for term in element.terms:
                if term.source == "topic" and not _has_field(self.inputs[term.topic], term.field):
                    raise DroilError(f"observation '{element.name}': {term.type} has no field {term.field}")
        self.joint_names = spec.joints if spec.ros.joints == "by_index" else None

    def readings(self, joint_state: JointState, imu: Imu | None, orientation: np.ndarray | None = None,
                 messages: dict | None = None) -> SensorReadings:
        return readings_from_msgs(joint_state, imu, orientation, self.joint_names, messages)
