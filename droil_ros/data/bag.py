"""rosbag2 bags <-> transition datasets (ROS-free: rosbags, numpy, yaml).

Reading: ``dataset_from_bag`` turns a bag recorded by ``demo_recorder`` or by ``ros2 bag record``
on a robot (MCAP or sqlite3; a bag directory, or a bare ``.mcap``/``.db3`` file), or the bags of
one session (joints and IMU recorded apart: their messages side by side on the shared clock),
into a ``TransitionDataset`` through the robot spec. The rules:

- **Topics and types.** The spec's ``ros`` section names the JointState, Imu and command topics
  (defaults ``/joint_states``, ``/imu/data``, ``/effort_controller/commands``), the command's
  type (default ``std_msgs/msg/Float64MultiArray``) and the field path(s) holding one value per
  actuator (default ``data``). A type rosbags' Kilted store lacks (the robot's own message) is
  decoded from the definition the bag embeds (MCAP ``ros2msg`` schemas, rosbag2 metadata), as
  ``ros2 bag record`` writes it. With ``joints: by_index`` a JointState's values are read in the
  order of the spec's ``joints`` and its names are ignored. A spec whose observation uses no Imu
  source needs no Imu topic; its ``source: topic`` terms read the latest message of their topic
  out when the state's leading message was (what a node's latest-message builder sees).
- **Time.** Messages are ordered by their publish time where the bag has one (MCAP
  ``publish_time``: the DDS send time that ``demo_recorder`` and rosbag2 record; on one host it
  follows cause and effect exactly), else by their log time. A state's own time is its header
  stamp, or its order time in bags whose JointStates or Imus are all unstamped (zero).
- **State.** A JointState and the Imu at its time, as ``sync`` says: ``nearest`` (default) the
  closest Imu at most half a control period away (ties: the closest in order);
  ``interpolate_imu`` the Imus just before and after the JointState's stamp blended (both
  within a control period: an IMU at another rate than the joints); ``interpolate_joints`` the
  other way, a state at each Imu's stamp with the JointStates around it blended (the positions
  of ``unwrap`` joints the short way round). One state per control period is assumed, as
  sim_bridge and a ros2_control broadcaster at the controller rate publish. Observation terms
  with ``unwrap`` are followed across +-pi along the recording (one ``ObservationBuilder``).
- **Action.** ``pairing: answer`` (default): the action of state k is the first command
  published after state k (after both of its messages) and before state k+1: the command
  computed from that state, as lockstep and the LQR node do. ``pairing: hold``: the last command
  published before state k's JointState, the setpoint in force (zero-order hold, as a robot
  holding a teleop's few setpoints a second); with ``hold_max_age`` a setpoint older than that
  at the state is no longer in force (a driver's command timeout) and the state is dropped.
  Commands (one per actuator, ``spec.actuators`` order) become the action through the least-squares inverse of
  ``spec.action_gains``, as in sim_bridge. s' is state k+1.
- **Dropped.** A state without such a command, or whose command is unusable (wrong number of
  values, NaN; counted apart), or more than 1.5 control periods before the next state (a state
  was lost in between), gives no transition; the episode goes on after the hole
  (the run before it ends with ``timeouts``; the run after it has no ``episode_starts``).
- **Episodes.** A new episode starts at the first state, where the state time does not advance
  (sim_bridge's clock stays put across ``~/reset``) or jumps by more than ``reset_gap`` seconds
  (default 5 control periods), and after a ``False`` on ``marker_topic`` (sim_bridge publishes
  it on ``~/fallen`` at every episode start). Wheel odometry or tilt jumps are not used.
- **Falls.** A transition whose s' has ``|theta| > task.fall_tilt`` is terminal and ends its
  episode: the states after it (the robot lying) are dropped until a new episode starts, or
  until ``|theta|`` has stayed below ``task.init_tilt`` for ``resume_after`` seconds (default 1;
  a continuous recording where someone picked the robot up): a new episode starts there. An
  episode's last transition that is not terminal is a timeout; the first is an episode start.
- **Rewards.** ``robots.spec.task_rewards`` (what the simulator uses) on s' and the action,
  with the time since the episode's first state (NaN for tasks without reward weights).
- **Report.** Kept transitions, drops by rule and skipped messages by reason: one line in the
  dataset's ``meta['source']``, and ``BagTransitions.details`` (``from-bag --report``).
- **Damage.** Messages that cannot be decoded or used are skipped and counted; the conversion
  fails (one line) only when nothing usable remains. An MCAP file cut short (a recorder killed
  while writing) is read up to its last complete record; when a topic then has nothing usable,
  the error says the bag is truncated and how many messages could be read. JointStates whose
  trailing sequences are empty carry 8 extra bytes when Fast CDR serialised them (rclpy); they
  are decoded anyway.

Writing: ``BagWriter`` writes a rosbag2 bag (MCAP storage, ``metadata.yaml``) that is complete
after every ``flush()``: each flush appends a chunk and rewrites, in one write at its end, the
MCAP summary and footer, and replaces ``metadata.yaml``. A process killed between flushes leaves
a bag that rosbags, ``ros2 bag`` and this module read up to the last flush; one killed during
the flush's write leaves a torn tail, which only this module's reader salvages.
"""

from __future__ import annotations

import bisect
import importlib
import math
import os
import struct
import threading
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePath

import numpy as np
import yaml

from droil_ros.data.dataset import DatasetError, TransitionDataset
from droil_ros.robots.spec import (
    PAIRINGS,
    RobotSpec,
    SensorReadings,
    Task,
    message_field,
    task_rewards,
)

JOINT_STATE = "sensor_msgs/msg/JointState"
IMU = "sensor_msgs/msg/Imu"
MARKER = "std_msgs/msg/Bool"
STEP_TOLERANCE = 1.5  # control periods between a state and its s'
FASTCDR_EXTRA = 8  # trailing bytes Fast CDR adds after empty trailing sequences

MCAP_MAGIC = b"\x89MCAP0\r\n"
OP_HEADER, OP_FOOTER, OP_SCHEMA, OP_CHANNEL, OP_MESSAGE, OP_CHUNK = 0x01, 0x02, 0x03, 0x04, 0x05, 0x06
OP_MESSAGE_INDEX, OP_CHUNK_INDEX, OP_STATISTICS = 0x07, 0x08, 0x0B
OP_METADATA, OP_METADATA_INDEX, OP_SUMMARY_OFFSET, OP_DATA_END = 0x0C, 0x0D, 0x0E, 0x0F
CHUNK_LIMIT = 8 << 20  # bytes kept in memory before a flush is forced


class BagError(DatasetError):
    """A bag is missing, unreadable, or holds nothing that makes a transition."""


# --------------------------------------------------------------------------------------------
# typestore and decoding


_TYPESTORE = None


def typestore():
    """rosbags' Kilted typestore (built once)."""
    global _TYPESTORE
    if _TYPESTORE is None:
        from rosbags.typesys import Stores, get_typestore

        _TYPESTORE = get_typestore(Stores.ROS2_KILTED)
    return _TYPESTORE


def installed_definitions(msgtype: str, known) -> dict[str, str]:
    """``msgtype`` and the types it uses that ``known`` (a typestore) lacks, as the .msg text their
    packages install: ``<prefix>/share/<package>/msg/<Name>.msg`` for each prefix of
    AMENT_PREFIX_PATH, as a sourced workspace sets it. How a robot's own message, built in the
    user's workspace, gets its definition into a bag; BagError (one line) when no prefix has it."""
    from rosbags.typesys import get_types_from_msg

    prefixes = [Path(p) for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    found: dict[str, str] = {}
    todo = [msgtype]
    while todo:
        name = todo.pop()
        if name in found or name in known.fielddefs:
            continue
        package, kind, short = (name.split("/") + ["", ""])[:3]
        files = [p / "share" / package / kind / f"{short}.msg" for p in prefixes]
        path = next((f for f in files if kind == "msg" and f.is_file()), None)
        if path is None:
            raise BagError(f"unknown message type {name}: rosbags does not know it and no prefix of "
                           f"AMENT_PREFIX_PATH has share/{package}/msg/{short}.msg (source the "
                           f"workspace that builds {package})")
        found[name] = path.read_text()
        try:
            fields = get_types_from_msg(found[name], name)[name][1]
        except Exception as exc:  # rosbags raises several kinds for a malformed file
            raise BagError(f"{path} is not a usable message definition ({type(exc).__name__}: "
                           f"{exc})"[:300]) from None
        todo += [used for _, node in fields for used in _used_types(node)]
    return found


def _used_types(node) -> list[str]:
    """The message types a rosbags field descriptor names (in sequences and arrays too)."""
    kind, value = node
    if kind.name == "NAME":
        return [value]
    if kind.name in ("ARRAY", "SEQUENCE"):
        return _used_types(value[0])
    return []


def bag_typestore(definitions: dict[str, str]):
    """The Kilted typestore plus the types defined in ``definitions`` (``msgtype -> .msg text``
    with its dependencies, as rosbag2 embeds them in a bag): a robot's own messages decode from
    the bag alone. A type the store knows keeps the store's definition."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    ts = get_typestore(Stores.ROS2_KILTED)
    for msgtype, text in definitions.items():
        if msgtype in ts.types:
            continue
        try:
            found = get_types_from_msg(text, msgtype)
            ts.register({k: v for k, v in found.items() if k not in ts.fielddefs})
        except Exception as exc:  # untrusted text: rosbags raises several kinds
            raise BagError(f"the bag's definition of {msgtype} is not usable "
                           f"({exc.__class__.__name__}: {exc})") from None
    return ts


def decode_cdr(raw: bytes | memoryview, msgtype: str, ts=None):
    """Deserialise CDR bytes with rosbags (``ts``: default the Kilted typestore), tolerating Fast
    CDR's trailing bytes.

    rosbags rejects a message followed by more than padding, which is what rclpy sends when a
    message ends in empty sequences; the payload itself is intact, so it is decoded without the
    size check, and with rclpy (when importable) as the last resort. ValueError when it fails.
    """
    ts = ts or typestore()
    if msgtype not in ts.types:
        raise ValueError(f"unknown message type {msgtype}")
    try:
        return ts.deserialize_cdr(raw, msgtype)
    except Exception as exc:  # untrusted bytes: rosbags' SerdeError and whatever numpy raises
        error = exc
    if "size mismatch" in str(error):
        msgdef = ts.get_msgdef(msgtype)
        parse = msgdef.deserialize_cdr_le if bytes(raw[1:2]) == b"\x01" else msgdef.deserialize_cdr_be
        try:
            message, pos = parse(memoryview(raw)[4:], 0, msgdef.cls, ts)
        except Exception:
            message, pos = None, 0
        if message is not None and len(raw) - 4 - pos <= 3 + FASTCDR_EXTRA:
            return message
    message = _decode_with_rclpy(raw, msgtype)
    if message is None:
        raise ValueError(str(error))
    return message


def _decode_with_rclpy(raw, msgtype: str):
    try:
        from rclpy.serialization import deserialize_message

        package, _, name = msgtype.split("/")
        cls = getattr(importlib.import_module(f"{package}.msg"), name)
        return deserialize_message(bytes(raw), cls)
    except Exception:  # no rclpy, no such type, or rclpy cannot read it either
        return None


# --------------------------------------------------------------------------------------------
# reading storage files


@dataclass
class _Topic:
    msgtype: str
    # (order time, log time, raw CDR) in the order read
    messages: list[tuple[int, int, bytes]] = field(default_factory=list)


@dataclass
class _Bag:
    path: Path
    custom: dict = field(default_factory=dict)  # metadata.yaml custom_data
    definitions: dict[str, str] = field(default_factory=dict)  # msgtype -> embedded .msg text
    topics: dict[str, _Topic] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    truncated: bool = False  # a storage file ends early: what is missing may be past its end
    messages_read: int = 0  # on every topic

    def missing(self, what: str) -> BagError:
        """The error for a topic with nothing usable; a cut-short file is named as the cause."""
        if self.truncated:
            return BagError(f"bag is truncated ({'; '.join(self.notes)}): {self.messages_read} "
                            f"messages could be read, {what}")
        return BagError(f"bag has {what}")

    def add(self, topic: str, msgtype: str, log_time: int, publish_time: int, data: bytes) -> None:
        entry = self.topics.setdefault(topic, _Topic(msgtype))
        entry.messages.append((publish_time or log_time, log_time, data))


def _storage_files(path: Path) -> tuple[list[Path], dict]:
    if not path.exists():
        raise BagError(f"bag not found: {path}")
    if path.is_file():
        if path.suffix in (".mcap", ".db3"):
            return [path], {}
        raise BagError(f"{path}: not a rosbag2 bag (a bag directory, .mcap or .db3 file)")
    info: dict = {}
    listed: list[Path] = []
    metadata = path / "metadata.yaml"
    if metadata.is_file():
        try:
            info = yaml.safe_load(metadata.read_text())["rosbag2_bagfile_information"]
            listed = [path / PurePath(p).name for p in info.get("relative_file_paths") or []]
        except (yaml.YAMLError, OSError, KeyError, TypeError, AttributeError):
            info = {}  # a damaged metadata.yaml: the storage files speak for themselves
    found = sorted(p for p in path.iterdir() if p.suffix in (".mcap", ".db3"))
    files = [p for p in listed if p.is_file()] + [p for p in found if p not in listed]
    if not files and not (info.get("compression_mode") and any(p.is_file() for p in listed)):
        if metadata.is_file():
            names = ", ".join(p.name for p in listed) or "none"
            raise BagError(f"{path}: the storage file is missing: metadata.yaml is there, no .mcap or "
                           f".db3 file (metadata.yaml lists: {names})")
        raise BagError(f"{path}: not a rosbag2 bag (no metadata.yaml, .mcap or .db3 file)")
    return files, info


def _read_bag(path: Path, topics: set[str]) -> _Bag:
    """Messages of ``topics`` (all topics' types are kept, for error messages)."""
    files, info = _storage_files(path)
    bag = _Bag(path, custom=info.get("custom_data") or {})
    if info.get("compression_mode"):  # zstd per file or per message: rosbags decompresses
        _read_with_rosbags(path, topics, bag)
        return bag
    for file in files:
        if file.suffix == ".mcap":
            _read_mcap(file, topics, bag)
        else:
            _read_with_rosbags(file, topics, bag)
    return bag


def _read_with_rosbags(path: Path, topics: set[str], bag: _Bag) -> None:
    import sqlite3

    from rosbags.rosbag2 import Reader, ReaderError

    try:
        with Reader(path) as reader:
            for c in reader.connections:
                bag.topics.setdefault(c.topic, _Topic(c.msgtype))
                if c.msgdef.format.name == "MSG" and c.msgdef.data:
                    bag.definitions.setdefault(c.msgtype, c.msgdef.data)
            wanted = [c for c in reader.connections if c.topic in topics]
            for connection, log_time, data in reader.messages(connections=wanted) if wanted else ():
                bag.add(connection.topic, connection.msgtype, log_time, 0, data)
    except (ReaderError, sqlite3.Error, OSError, KeyError, ValueError) as exc:
        raise BagError(f"{path}: cannot read the bag ({exc.__class__.__name__}: {exc})") from None


def _read_mcap(path: Path, topics: set[str], bag: _Bag) -> None:
    """Scan an MCAP file record by record: finished, unfinished (no summary) or cut short."""
    schemas: dict[int, str] = {}
    channels: dict[int, tuple[str, str, str]] = {}  # id -> topic, msgtype, encoding

    def handle(op: int, body: bytes | memoryview) -> None:
        if op == OP_MESSAGE:
            bag.messages_read += 1
            channel, _, log_time, publish_time = struct.unpack_from("<HIQQ", body)
            topic, msgtype, encoding = channels.get(channel, ("", "", ""))
            if topic in topics and encoding == "cdr":
                bag.add(topic, msgtype, log_time, publish_time, bytes(body[22:]))
        elif op == OP_SCHEMA:
            (key,) = struct.unpack_from("<H", body)
            schemas[key], pos = _string(body, 2)
            encoding, pos = _string(body, pos)
            definition = _string(body, pos)[0]
            if encoding == "ros2msg" and definition:
                bag.definitions.setdefault(schemas[key], definition)
        elif op == OP_CHANNEL:
            key, schema = struct.unpack_from("<HH", body)
            topic, pos = _string(body, 4)
            encoding, _ = _string(body, pos)
            channels[key] = (topic, schemas.get(schema, ""), encoding)
            bag.topics.setdefault(topic, _Topic(schemas.get(schema, "")))

    size = path.stat().st_size
    with path.open("rb") as f:
        if f.read(8) != MCAP_MAGIC:
            raise BagError(f"{path}: not an MCAP file")
        while True:
            head = f.read(9)
            if len(head) < 9:
                bag.notes.append(f"{path.name}: unfinished (no footer), read to its end")
                bag.truncated = True
                return
            op, length = head[0], int.from_bytes(head[1:], "little")
            if op in (OP_DATA_END, OP_FOOTER):
                return
            if f.tell() + length > size:
                bag.notes.append(f"{path.name}: cut short at byte {f.tell() - 9}, read up to there")
                bag.truncated = True
                return
            if op not in (OP_MESSAGE, OP_SCHEMA, OP_CHANNEL, OP_CHUNK):
                f.seek(length, os.SEEK_CUR)
                continue
            body = f.read(length)
            if op != OP_CHUNK:
                handle(op, body)
                continue
            try:
                records = _chunk_records(body)
            except (ValueError, struct.error) as exc:
                bag.notes.append(f"{path.name}: skipped a damaged chunk ({exc})")
                continue
            pos = 0
            while pos + 9 <= len(records):
                op, length = records[pos], int.from_bytes(records[pos + 1:pos + 9], "little")
                handle(op, memoryview(records)[pos + 9:pos + 9 + length])
                pos += 9 + length


def _string(body, pos: int) -> tuple[str, int]:
    (n,) = struct.unpack_from("<I", body, pos)
    return bytes(body[pos + 4:pos + 4 + n]).decode(), pos + 4 + n


def _chunk_records(body: bytes) -> bytes:
    _, _, uncompressed_size, crc = struct.unpack_from("<QQQI", body)
    compression, pos = _string(body, 28)
    (n,) = struct.unpack_from("<Q", body, pos)
    data = body[pos + 8:pos + 8 + n]
    if compression == "zstd":
        try:
            from compression import zstd
        except ImportError:
            from backports import zstd
        data = zstd.decompress(data)
    elif compression == "lz4":
        import lz4.frame

        data = lz4.frame.decompress(data)
    elif compression:
        raise ValueError(f"unsupported compression '{compression}'")
    if len(data) != uncompressed_size or (crc and zlib.crc32(data) != crc):
        raise ValueError("size or checksum mismatch")
    return data


# --------------------------------------------------------------------------------------------
# bag -> transitions


def bag_topic(name: str) -> str:
    """A spec's topic as a bag records it: a relative name resolves at the root."""
    return name if name.startswith("/") else "/" + name


def _stamp(msg) -> int:
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


def _vector(v) -> np.ndarray:
    return np.array([v.x, v.y, v.z], dtype=np.float64)


@dataclass
class BagTransitions:
    """Transitions read from a bag, in float64, before they become a dataset."""

    observations: np.ndarray
    actions: np.ndarray
    next_observations: np.ndarray
    rewards: np.ndarray
    terminals: np.ndarray
    timeouts: np.ndarray
    episode_starts: np.ndarray
    times: np.ndarray  # s' time since its episode's first state, seconds
    report: str  # one line: kept, dropped and skipped, with the reasons
    source: str  # the bags read
    details: list[str] = field(default_factory=list)  # what ``from-bag --report`` prints

    def __len__(self) -> int:
        return len(self.observations)

    def to_dataset(self, robot: RobotSpec) -> TransitionDataset:
        """The dataset; its ``meta['source']`` holds the bags and the one-line report."""
        return TransitionDataset.from_arrays(
            robot, f"{self.source}: {self.report}", observations=self.observations,
            actions=self.actions, next_observations=self.next_observations, rewards=self.rewards,
            terminals=self.terminals, timeouts=self.timeouts, episode_starts=self.episode_starts)


def _needed_joints(robot: RobotSpec) -> set[str]:
    return {j for element in robot.observation for term in element.terms for j in term.joints}


def _read_bags(paths: list[Path], topics: set[str]) -> _Bag:
    """The bags of one session as one: their topics' messages side by side on the shared clock."""
    bag = _read_bag(paths[0], topics)
    for path in paths[1:]:
        other = _read_bag(path, topics)
        for name, topic in other.topics.items():
            mine = bag.topics.setdefault(name, _Topic(topic.msgtype))
            if mine.msgtype != topic.msgtype:
                raise BagError(f"{name} has type {mine.msgtype} in {paths[0]} and {topic.msgtype} "
                               f"in {path}")
            mine.messages += topic.messages
        for msgtype, text in other.definitions.items():
            bag.definitions.setdefault(msgtype, text)
        bag.notes += other.notes
        bag.truncated |= other.truncated
        bag.messages_read += other.messages_read
        if not bag.custom and isinstance(other.custom, dict):
            bag.custom = other.custom
    return bag


def read_bag_transitions(bag_path: str | Path | list, robot: RobotSpec, task: str | None = None,
                         joint_topic: str | None = None, imu_topic: str | None = None,
                         command_topic: str | None = None, reset_gap: float | None = None,
                         marker_topic: str | None = "/sim_bridge/fallen", pairing: str | None = None,
                         resume_after: float = 1.0, hold_max_age: float | None = None) -> BagTransitions:
    """Transitions of a bag, or of the bags of one session (a list), in float64 (the rules are in
    the module docstring); topics and pairing not given are the spec's (``ros`` section)."""
    if not robot.uses_sensor_observation:
        raise BagError(f"robot '{robot.id}' observes through Gymnasium; bags carry JointState + Imu")
    the_task = robot.task(task or robot.default_task)
    joint_topic, imu_topic, command_topic = map(bag_topic, (joint_topic or robot.ros.state_topic,
                                                            imu_topic or robot.ros.imu_topic,
                                                            command_topic or robot.ros.command_topic))
    pairing = pairing or robot.ros.pairing
    if pairing not in PAIRINGS:
        raise BagError(f"pairing must be one of {', '.join(PAIRINGS)}, got '{pairing}'")
    marker_topic = bag_topic(marker_topic) if marker_topic else None
    dt_ns = 1e9 * robot.control_dt
    reset_gap_ns = 5 * dt_ns if reset_gap is None else 1e9 * reset_gap
    if not reset_gap_ns > 0:
        raise BagError(f"reset_gap must be positive, got {reset_gap}")
    if not resume_after > 0:
        raise BagError(f"resume_after must be positive, got {resume_after}")
    if hold_max_age is not None and not hold_max_age > 0:
        raise BagError(f"hold_max_age must be positive, got {hold_max_age}")

    paths = [Path(p) for p in (bag_path if isinstance(bag_path, (list, tuple)) else [bag_path])]
    uses_imu = robot.uses_imu
    extra = robot.topic_inputs
    required = [(joint_topic, JOINT_STATE), *([(imu_topic, IMU)] if uses_imu else []),
                (command_topic, robot.ros.command_type), *((bag_topic(t), m) for t, m in extra.items())]
    wanted = {t for t, _ in required} | ({marker_topic} if marker_topic else set())
    bag = _read_bags(paths, wanted)
    recorded_for = bag.custom.get("droil_robot") if isinstance(bag.custom, dict) else None
    if recorded_for and recorded_for != robot.id:
        bag.notes.append(f"recorded with robot '{recorded_for}' (converted as '{robot.id}')")
    for topic, msgtype in required:
        if topic not in bag.topics:
            raise bag.missing(f"no {topic} (topics: {', '.join(sorted(bag.topics)) or 'none'})")
        if bag.topics[topic].msgtype != msgtype:
            raise BagError(f"{topic} has type {bag.topics[topic].msgtype}, expected {msgtype}")
    ts = bag_typestore({msgtype: bag.definitions[msgtype] for _, msgtype in required
                        if msgtype in bag.definitions})
    if robot.ros.command_type not in ts.types:
        raise BagError(f"{command_topic} has type {robot.ros.command_type}, which the bag does not "
                       f"define (no message definition in its storage file or metadata)")
    skipped: Counter[str] = Counter()  # reason -> count

    def decoded(topic: str, msgtype: str):
        messages = bag.topics[topic].messages if topic in bag.topics else []
        for order, _, raw in sorted(messages, key=lambda m: m[0]):
            try:
                yield order, decode_cdr(raw, msgtype, ts)
            except ValueError as exc:
                skipped[f"undecodable {topic} ({exc})"] += 1

    needed = _needed_joints(robot)
    joints = []  # (order, stamp, names, position, velocity, effort)
    by_index = robot.ros.joints == "by_index"
    for order, m in decoded(joint_topic, JOINT_STATE):
        names = robot.joints if by_index else tuple(m.name)
        missing = sorted(needed - set(names))
        if missing:
            skipped[f"{joint_topic} lacks joints {missing} of robot '{robot.id}' "
                    f"(it has {list(names)})"] += 1
            continue
        joints.append((order, _stamp(m), names, np.asarray(m.position, np.float64),
                       np.asarray(m.velocity, np.float64), np.asarray(m.effort, np.float64)))
    imus = [(order, _stamp(m), np.array([m.orientation.x, m.orientation.y, m.orientation.z,
                                         m.orientation.w]),
             _vector(m.angular_velocity), _vector(m.linear_acceleration))
            for order, m in (decoded(imu_topic, IMU) if uses_imu else ())]
    commands = []  # (order, action or None)
    n_actuators, fields_ = len(robot.actuators), robot.ros.command_field
    for order, m in decoded(command_topic, robot.ros.command_type):
        try:
            values = np.concatenate([message_field(m, path) for path in fields_])
        except (AttributeError, IndexError, TypeError, ValueError) as exc:
            skipped[f"{command_topic} without {' + '.join(fields_)} ({exc.__class__.__name__}: "
                    f"{exc})"] += 1
            commands.append((order, None))
            continue
        if values.shape != (n_actuators,) or not np.all(np.isfinite(values)):
            skipped[f"{command_topic} with {values.size} values or NaN/Inf in {' + '.join(fields_)} "
                    f"(expected {n_actuators} finite {robot.ros.command_kind} commands)"] += 1
            commands.append((order, None))  # still the answer to its state: that state is dropped
            continue
        commands.append((order, robot.command_to_action(values)))
    markers = sorted(order for order, m in decoded(marker_topic, MARKER) if not m.data) \
        if marker_topic else []
    extras = {topic: list(decoded(bag_topic(topic), msgtype)) for topic, msgtype in extra.items()}
    for topic, usable in ((joint_topic, joints), (imu_topic, imus or not uses_imu),
                          (command_topic, any(c[1] is not None for c in commands)),
                          *extras.items()):
        if not usable:
            raise bag.missing(f"no usable messages on {topic}" + _reasons(skipped))

    states = _pair_states(joints, imus if uses_imu else None, extras, dt_ns, robot, skipped)
    if not states:
        raise BagError(f"bag has no state: {_SYNC_RULE[robot.ros.sync]}"
                       + _reasons(skipped))
    counts: Counter[str] = Counter()
    episodes: list[list] = []
    transitions = _transitions(states, commands, markers, dt_ns, reset_gap_ns, robot, the_task,
                               pairing, 1e9 * resume_after, counts, episodes,
                               math.inf if hold_max_age is None else 1e9 * hold_max_age)
    if transitions is None or not len(transitions[0]):
        rule = ("no state answered by a command before the next state" if pairing == "answer"
                else "no state after a command")
        raise BagError(f"bag has no transitions: {len(states)} states, {len(commands)} commands on "
                       f"{command_topic}, {rule}" + _reasons(skipped))
    obs, actions, next_obs, times, terminals, timeouts, starts = transitions
    rewards = task_rewards(robot, the_task, next_obs, actions, times)
    no_command = "without a command" if pairing == "answer" else "before the first command"
    report = (f"{len(obs)} transitions, {int(starts.sum())} episode starts, {int(terminals.sum())} "
              f"falls from {len(states)} states ({pairing} pairing); dropped: "
              f"{counts['no_command']} states {no_command}, {counts['lost']} before a lost state, "
              f"{counts['fallen']} after a fall"
              + (f", {counts['bad_command']} whose command was unusable" if counts["bad_command"] else "")
              + (f", {counts['old_command']} whose setpoint was older than {hold_max_age:g} s"
                 if counts["old_command"] else "")
              + (f", {counts['resumed']} episodes resumed after a fall" if counts["resumed"] else "")
              + "".join(f"; skipped {n} {reason}" for reason, n in skipped.most_common())
              + "".join(f"; {note}" for note in bag.notes))
    details = [f"bags: {', '.join(map(str, paths))}",
               *(f"  {topic}: {len(bag.topics[topic].messages)} messages ({msgtype})"
                 for topic, msgtype in required),
               f"states: {len(states)} (JointState"
               + (f" + Imu, {robot.ros.sync})" if uses_imu else " only)"),
               f"pairing: {pairing}",
               f"kept: {len(obs)} transitions in {len(episodes)} episodes",
               *(f"  episode {n}: {first:.3f}-{last:.3f} s, {count} transitions, ends {end}"
                 for n, (_, first, last, count, end) in enumerate(episodes)),
               "dropped:",
               f"  {counts['no_command']} states {no_command}",
               f"  {counts['bad_command']} states whose command was unusable (see skipped)",
               *([f"  {counts['old_command']} states whose setpoint was older than {hold_max_age:g} s"]
                 if hold_max_age is not None else []),
               f"  {counts['lost']} states before a lost state (more than {STEP_TOLERANCE} control "
               f"periods to the next)",
               f"  {counts['fallen']} states after a fall (until a reset or {resume_after:g} s "
               f"upright within the task's init_tilt)",
               *(f"skipped: {n} {reason}" for reason, n in skipped.most_common()),
               *(f"note: {note}" for note in bag.notes)]
    return BagTransitions(obs, actions, next_obs, rewards, terminals, timeouts, starts, times,
                          report, f"bag {' + '.join(map(str, paths))}", details)


_SYNC_RULE = {"nearest": "JointStates without an Imu within half a control period",
              "interpolate_imu": "JointStates without Imus on both sides within a control period",
              "interpolate_joints": "Imus without JointStates on both sides within a control period "
                                    "(or with other joints)"}


def _reasons(skipped: Counter) -> str:
    if not skipped:
        return ""
    return " (skipped " + ", ".join(f"{n} {reason}" for reason, n in skipped.most_common(3)) + ")"


@dataclass
class _State:
    order: int  # when both messages were out: the earliest a command can answer it
    measured: int  # when its JointState was out: the setpoint then is the one in force
    time: int  # header stamp (ns), or order time in bags without stamps
    obs: np.ndarray


_LEVEL = (np.array([0.0, 0.0, 0.0, 1.0]), np.zeros(3), np.zeros(3))  # no Imu: level and still


def _around(keys: list[int], t: int, dt_ns: float):
    """Indices of the samples just before and after ``t`` and the weight of the later one; the
    sample itself at an exact match; None unless both are within a control period of ``t``."""
    i = bisect.bisect_left(keys, t)
    if i < len(keys) and keys[i] == t:
        return i, i, 0.0
    if i == 0 or i == len(keys) or t - keys[i - 1] > dt_ns or keys[i] - t > dt_ns:
        return None
    return i - 1, i, (t - keys[i - 1]) / (keys[i] - keys[i - 1])


def _blend_imu(a, b, w: float):
    """Quaternions blended on the same hemisphere and normalised, vectors linearly."""
    qb = b[2] if np.dot(a[2], b[2]) >= 0 else -b[2]
    q = (1 - w) * a[2] + w * qb
    return (b[0], b[1], q / np.linalg.norm(q), (1 - w) * a[3] + w * b[3], (1 - w) * a[4] + w * b[4])


def _blend_joints(a, b, w: float, wrapped: set[str]):
    """Values linearly; the positions of ``wrapped`` joints (``unwrap`` terms) along the shorter
    way round. None where the two messages name other joints or carry other fields."""
    if a[2] != b[2] or any(np.shape(x) != np.shape(y) for x, y in zip(a[3:], b[3:], strict=True)):
        return None
    step = b[3] - a[3]
    turn = np.array([i < len(a[2]) and a[2][i] in wrapped for i in range(len(step))], bool)
    step[turn] = np.mod(step[turn] + math.pi, 2 * math.pi) - math.pi
    velocity, effort = ((1 - w) * x + w * y for x, y in zip(a[4:], b[4:], strict=True))
    return b[0], b[1], b[2], a[3] + w * step, velocity, effort


def _pair_states(joints, imus, extras: dict[str, list], dt_ns: float, robot: RobotSpec,
                 skipped: Counter) -> list[_State]:
    """States from JointStates and Imus synchronised as ``ros.sync`` says (``imus`` None: the
    robot uses none, its states are the JointStates), with the latest message of each topic in
    ``extras`` (topic -> [(order, message)] in order) out when the state's leading message was,
    as a node's latest-message builder sees them."""
    sync = robot.ros.sync if imus is not None else "nearest"
    stamped = any(j[1] for j in joints) and (imus is None or any(i[1] for i in imus))
    key = 1 if stamped else 0
    joints = sorted(joints, key=lambda j: j[key])
    imus = sorted(imus, key=lambda i: i[key]) if imus is not None else None
    pairs = []  # (time, when the leading message was out, JointState, Imu) in time order
    if sync == "interpolate_joints":
        wrapped = {j for e in robot.observation for term in e.terms
                   if term.unwrap and term.source == "joint_position" for j in term.joints}
        keys = [j[key] for j in joints]
        for imu in imus:
            t, found = imu[key], _around(keys, imu[key], dt_ns)
            joint = _blend_joints(joints[found[0]], joints[found[1]], found[2], wrapped) \
                if found else None
            pairs.append((t, imu[0], joint, imu))
    else:
        keys = [i[key] for i in imus] if imus is not None else []
        for joint in joints:
            t, order = joint[key], joint[0]
            if imus is None:
                imu = (order, t, *_LEVEL)
            elif sync == "interpolate_imu":
                found = _around(keys, t, dt_ns)
                imu = _blend_imu(imus[found[0]], imus[found[1]], found[2]) if found else None
            else:
                lo = bisect.bisect_left(keys, t - dt_ns / 2)
                hi = bisect.bisect_right(keys, t + dt_ns / 2)
                imu = min(imus[lo:hi], key=lambda i: (abs(i[key] - t), abs(i[0] - order))) \
                    if lo < hi else None
            pairs.append((t, order, joint, imu))
    extra_orders = {topic: [order for order, _ in items] for topic, items in extras.items()}
    builder = robot.observation_builder()
    states = []
    for t, measured, joint, imu in pairs:
        if joint is None or imu is None:
            skipped[_SYNC_RULE[sync]] += 1
            continue
        messages = {}
        for topic, items in extras.items():
            i = bisect.bisect_right(extra_orders[topic], measured) - 1
            if i >= 0:
                messages[topic] = items[i][1]
        readings = SensorReadings(joint[2], *joint[3:], *imu[2:], messages)
        try:
            obs = builder(readings)
        except ValueError as exc:
            skipped[f"states ({exc})"] += 1
            continue
        if not np.all(np.isfinite(obs)):
            skipped["states with NaN/Inf in the observation"] += 1
            continue
        states.append(_State(max(joint[0], imu[0]), measured, t, obs))
    states.sort(key=lambda s: s.order)
    return states


def _transitions(states: list[_State], commands, markers: list[int], dt_ns: float,
                 reset_gap_ns: float, robot: RobotSpec, task: Task, pairing: str,
                 resume_ns: float, counts: Counter, episodes: list, hold_max_ns: float = math.inf):
    """Rows of transitions; ``counts`` gets the drops by reason, ``episodes`` one entry per
    episode: its first state's index, first and last time (seconds since the first state),
    transitions, how it ends."""
    commands = sorted(commands, key=lambda c: c[0])
    command_orders = [c[0] for c in commands]
    theta = robot.obs_names.index("theta") if "theta" in robot.obs_names else None
    rows: dict[str, list] = defaultdict(list)
    counts.update(no_command=0, bad_command=0, old_command=0, lost=0, fallen=0, resumed=0)
    episode_start = 0  # index of the current episode's first state
    fallen = False
    upright_since = None  # after a fall: time of the first state of the current upright run
    previous = None  # index of the state that ended the last transition
    t0 = states[0].time

    def start(k: int) -> None:
        nonlocal episode_start, fallen, upright_since
        episode_start, fallen, upright_since = k, False, None

    for k in range(len(states) - 1):
        s, s1 = states[k], states[k + 1]
        if k == 0 or _new_episode(states[k - 1], s, markers, reset_gap_ns):
            start(k)
        if _new_episode(s, s1, markers, reset_gap_ns):
            continue  # s is its episode's last state
        if fallen:
            if abs(s.obs[theta]) >= task.init_tilt:
                upright_since = None
            elif upright_since is None:
                upright_since = s.time
            if upright_since is None or s.time - upright_since < resume_ns:
                counts["fallen"] += 1
                continue
            start(k)  # back up for a while on a continuous recording: a new episode
            counts["resumed"] += 1
        if s1.time - s.time > STEP_TOLERANCE * dt_ns:
            counts["lost"] += 1
            continue
        if pairing == "answer":
            i = bisect.bisect_right(command_orders, s.order)
            valid = i < len(commands) and command_orders[i] < s1.order
        else:
            i = bisect.bisect_right(command_orders, s.measured) - 1
            valid = i >= 0
        if not valid or commands[i][1] is None:
            counts["no_command" if not valid else "bad_command"] += 1
            continue
        if pairing == "hold" and s.measured - command_orders[i] > hold_max_ns:
            counts["old_command"] += 1
            continue
        terminal = theta is not None and abs(s1.obs[theta]) > task.fall_tilt
        if previous != k and rows["timeouts"]:
            rows["timeouts"][-1] = not rows["terminals"][-1]  # the run before a hole is cut
        if not episodes or episodes[-1][0] != episode_start:
            episodes.append([episode_start, (s.time - t0) / 1e9, 0.0, 0, ""])
        for name, value in (("obs", s.obs), ("actions", commands[i][1]), ("next_obs", s1.obs),
                            ("times", (s1.time - states[episode_start].time) / 1e9),
                            ("terminals", terminal), ("timeouts", False),
                            ("starts", k == episode_start)):
            rows[name].append(value)
        episodes[-1][2:] = [(s1.time - t0) / 1e9, episodes[-1][3] + 1,
                            "in a fall" if terminal else "in a time-out"]
        previous, fallen = k + 1, terminal
    if not rows["obs"]:
        return None
    timeouts = np.array(rows["timeouts"], bool)
    timeouts[-1] = not rows["terminals"][-1]
    return (np.array(rows["obs"]), np.array(rows["actions"]), np.array(rows["next_obs"]),
            np.array(rows["times"]), np.array(rows["terminals"], bool), timeouts,
            np.array(rows["starts"], bool))


def _new_episode(before: _State, after: _State, markers: list[int], reset_gap_ns: float) -> bool:
    gap = after.time - before.time
    if gap <= 0 or gap > reset_gap_ns:
        return True
    i = bisect.bisect_right(markers, before.order)
    return i < len(markers) and markers[i] <= after.order


def dataset_from_bag(bag_path: str | Path | list, robot: RobotSpec, task: str | None = None,
                     joint_topic: str | None = None, imu_topic: str | None = None,
                     command_topic: str | None = None, reset_gap: float | None = None,
                     marker_topic: str | None = "/sim_bridge/fallen", pairing: str | None = None,
                     resume_after: float = 1.0, hold_max_age: float | None = None) -> TransitionDataset:
    """A transition dataset from a rosbag2 bag, or the bags of one session (rules in the module
    docstring), seen as the task's policy sees it (its ``observation``); BagError (a DatasetError,
    one line) when a bag is missing, unreadable or has no transition."""
    task = task or robot.default_task
    dataset = read_bag_transitions(bag_path, robot, task, joint_topic, imu_topic, command_topic,
                                   reset_gap, marker_topic, pairing, resume_after,
                                   hold_max_age).to_dataset(robot)
    return dataset.observe(robot.task_spec(task))


# --------------------------------------------------------------------------------------------
# writing


def _record(op: int, body: bytes) -> bytes:
    return struct.pack("<BQ", op, len(body)) + body


def _str(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<I", len(data)) + data


def _map(items: dict[str, str]) -> bytes:
    body = b"".join(_str(k) + _str(v) for k, v in items.items())
    return struct.pack("<I", len(body)) + body


class BagWriter:
    """A rosbag2 bag (MCAP storage, ``metadata.yaml``) that is a complete bag after each flush.

    ``add_topic`` then ``write`` CDR bytes (e.g. from an rclpy ``raw=True`` subscription);
    ``flush`` makes everything written so far durable and readable; ``close`` is the last flush.
    Messages are kept in memory between flushes: a killed process loses those, nothing else.
    Thread-safe: ``flush`` may run in another thread than ``write``, which it blocks only while
    it takes the pending messages, not while it writes or syncs them.
    """

    def __init__(self, path: str | Path, custom_data: dict[str, str] | None = None,
                 fsync: bool = True):
        self.path = Path(path)
        try:
            self.path.mkdir(parents=True)
        except FileExistsError:
            raise BagError(f"{self.path} exists already, not overwriting") from None
        self.file = self.path / f"{self.path.name}_0.mcap"
        self.custom_data = dict(custom_data or {})
        self.fsync = fsync
        self.fd = os.open(self.file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self.closed = False
        self.lock = threading.Lock()  # the in-memory state
        self.flush_lock = threading.Lock()  # one flush at a time, in file order
        self.schemas: dict[str, int] = {}
        self.schema_records: list[bytes] = []
        self.channel_records: list[bytes] = []
        self.topics: list[tuple[str, str, str]] = []  # channel id - 1 -> topic, msgtype, rihs01
        self.counts: dict[int, int] = {}
        self.chunk_indexes: list[bytes] = []
        self.start_time, self.end_time = 2**63 - 1, 0
        self.pending_top = bytearray()  # schema and channel records not yet on disk
        self.chunk = bytearray()
        self.chunk_index: dict[int, list[tuple[int, int]]] = defaultdict(list)
        self.chunk_times = [2**63 - 1, 0]
        header = MCAP_MAGIC + _record(OP_HEADER, _str("ros2") + _str("droil_ros"))
        self._write_at(0, header)
        self.data_end = len(header)
        self.dirty = True
        self.flush()

    @property
    def message_count(self) -> int:
        return sum(self.counts.values())

    def add_topic(self, topic: str, msgtype: str, ts=None) -> int:
        """Register a topic whose type ``ts`` (default rosbags' Kilted typestore, or the package
        that installs it: ``installed_definitions``) knows; its definition goes into the file.
        Returns the channel id."""
        ts = ts or typestore()
        if msgtype not in ts.fielddefs:
            try:
                ts = bag_typestore(installed_definitions(msgtype, ts))
            except BagError as exc:
                raise BagError(f"cannot record {topic}: {exc}") from None
        try:
            msgdef, _ = ts.generate_msgdef(msgtype, ros_version=2)
            rihs01 = ts.hash_rihs01(msgtype)
        except Exception as exc:  # rosbags raises several kinds for unknown types
            raise BagError(f"cannot record {topic}: unknown message type {msgtype} ({exc})") from None
        with self.lock:
            return self._add_topic(topic, msgtype, msgdef, rihs01)

    def _add_topic(self, topic: str, msgtype: str, msgdef: str, rihs01: str) -> int:
        if msgtype not in self.schemas:
            self.schemas[msgtype] = len(self.schemas) + 1
            record = _record(OP_SCHEMA, struct.pack("<H", self.schemas[msgtype]) + _str(msgtype)
                             + _str("ros2msg") + _str(msgdef))
            self.schema_records.append(record)
            self.pending_top += record
        channel = len(self.topics) + 1
        self.topics.append((topic, msgtype, rihs01))
        self.counts[channel] = 0
        record = _record(OP_CHANNEL, struct.pack("<HH", channel, self.schemas[msgtype]) + _str(topic)
                         + _str("cdr") + _map({"offered_qos_profiles": "[]",
                                               "topic_type_hash": rihs01}))
        self.channel_records.append(record)
        self.pending_top += record
        self.dirty = True
        return channel

    def write(self, channel: int, log_time: int, data: bytes | memoryview,
              publish_time: int | None = None) -> None:
        with self.lock:
            if self.closed:
                raise BagError(f"{self.path} is closed")
            self.chunk_index[channel].append((log_time, len(self.chunk)))
            self.chunk += _record(OP_MESSAGE, struct.pack("<HIQQ", channel, self.counts[channel],
                                                          log_time, publish_time or log_time) + data)
            self.counts[channel] += 1
            self.chunk_times = [min(self.chunk_times[0], log_time),
                                max(self.chunk_times[1], log_time)]
            self.dirty = True
            full = len(self.chunk) > CHUNK_LIMIT
        if full:
            self.flush()

    def flush(self) -> None:
        """Write what is pending as one chunk, then the summary and footer, in one write."""
        with self.flush_lock:
            self._flush()

    def close(self) -> None:
        with self.flush_lock:
            if not self.closed:
                self._flush()
                with self.lock:
                    self.closed = True
                os.close(self.fd)

    def _flush(self) -> None:
        with self.lock:
            if self.closed or not self.dirty:
                return
            at = self.data_end
            data = bytes(self.pending_top) + self._close_chunk(at + len(self.pending_top))
            tail = self._tail(at + len(data))
            metadata = self._metadata()
            self.data_end += len(data)
            self.pending_top.clear()
            self.dirty = False
        self._write_at(at, data + tail)
        os.ftruncate(self.fd, at + len(data) + len(tail))  # no-op unless the tail shrank
        if self.fsync:
            os.fsync(self.fd)
        self._write_metadata(metadata)

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _write_at(self, offset: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.pwrite(self.fd, view, offset)
            view, offset = view[n:], offset + n

    def _close_chunk(self, chunk_start: int) -> bytes:
        if not self.chunk:
            return b""
        records = bytes(self.chunk)
        start, end = self.chunk_times
        chunk = _record(OP_CHUNK, struct.pack("<QQQI", start, end, len(records), zlib.crc32(records))
                        + _str("") + struct.pack("<Q", len(records)) + records)
        indexes, offsets = b"", {}
        for channel, entries in self.chunk_index.items():
            offsets[channel] = chunk_start + len(chunk) + len(indexes)
            pairs = b"".join(struct.pack("<QQ", t, o) for t, o in entries)
            indexes += _record(OP_MESSAGE_INDEX, struct.pack("<HI", channel, len(pairs)) + pairs)
        offset_map = b"".join(struct.pack("<HQ", c, o) for c, o in offsets.items())
        self.chunk_indexes.append(_record(OP_CHUNK_INDEX, struct.pack(
            "<QQQQI", start, end, chunk_start, len(chunk), len(offset_map)) + offset_map
            + struct.pack("<Q", len(indexes)) + _str("") + struct.pack("<QQ", len(records),
                                                                       len(records))))
        self.start_time, self.end_time = min(self.start_time, start), max(self.end_time, end)
        self.chunk.clear()
        self.chunk_index.clear()
        self.chunk_times = [2**63 - 1, 0]
        return chunk + indexes

    def _tail(self, at: int) -> bytes:
        """rosbag2 metadata record, data end, summary, summary offsets and footer at ``at``."""
        metadata = _record(OP_METADATA, _str("rosbag2") + _map(
            {"serialized_metadata": yaml.safe_dump(self._metadata(), sort_keys=False),
             "ros_distro": os.environ.get("ROS_DISTRO", "")}))
        out = bytearray(metadata + _record(OP_DATA_END, struct.pack("<I", 0)))
        summary_start = at + len(out)
        groups = []
        for op, records in ((OP_SCHEMA, self.schema_records), (OP_CHANNEL, self.channel_records),
                            (OP_CHUNK_INDEX, self.chunk_indexes),
                            (OP_METADATA_INDEX, [_record(OP_METADATA_INDEX, struct.pack(
                                "<QQ", at, len(metadata)) + _str("rosbag2"))])):
            if records:
                groups.append((op, at + len(out), sum(map(len, records))))
                out += b"".join(records)
        counts = b"".join(struct.pack("<HQ", c, n) for c, n in sorted(self.counts.items()))
        statistics_start = at + len(out)
        out += _record(OP_STATISTICS, struct.pack(
            "<QHIIIIQQI", self.message_count, len(self.schema_records), len(self.channel_records),
            0, 1, len(self.chunk_indexes), self.start_time if self.message_count else 0,
            self.end_time, len(counts)) + counts)
        groups.append((OP_STATISTICS, statistics_start, at + len(out) - statistics_start))
        offsets_start = at + len(out)
        for op, start, length in groups:
            out += _record(OP_SUMMARY_OFFSET, struct.pack("<BQQ", op, start, length))
        out += _record(OP_FOOTER, struct.pack("<QQI", summary_start, offsets_start, 0)) + MCAP_MAGIC
        return bytes(out)

    def _metadata(self) -> dict:
        start = self.start_time if self.message_count else 0
        duration = self.end_time - start if self.message_count else 0
        return {
            "version": 9,
            "storage_identifier": "mcap",
            "relative_file_paths": [self.file.name],
            "duration": {"nanoseconds": duration},
            "starting_time": {"nanoseconds_since_epoch": start},
            "message_count": self.message_count,
            "topics_with_message_count": [
                {"topic_metadata": {"name": topic, "type": msgtype, "serialization_format": "cdr",
                                    "offered_qos_profiles": [], "type_description_hash": rihs01},
                 "message_count": self.counts[k + 1]}
                for k, (topic, msgtype, rihs01) in enumerate(self.topics)],
            "compression_format": "",
            "compression_mode": "",
            "files": [{"path": self.file.name, "starting_time": {"nanoseconds_since_epoch": start},
                       "duration": {"nanoseconds": duration}, "message_count": self.message_count}],
            "custom_data": self.custom_data or None,
            "ros_distro": os.environ.get("ROS_DISTRO", ""),
        }

    def _write_metadata(self, metadata: dict) -> None:
        """Replace metadata.yaml atomically: a reader sees the old or the new one, whole."""
        target = self.path / "metadata.yaml"
        tmp = target.with_suffix(".yaml.tmp")
        with tmp.open("w") as f:
            yaml.safe_dump({"rosbag2_bagfile_information": metadata}, f, sort_keys=False)
            if self.fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, target)
