"""Bags -> transition datasets, and the crash-safe bag writer (no ROS graph).

The synthetic bags encode the state index in the joint velocity (x_dot = r * k) and the index of
the state a command answers in the command (effort 0.001 * k on each wheel -> action 0.001 * k),
so every pairing can be checked exactly.
"""

import math
import shutil
import subprocess
import sys

import numpy as np
import pytest
from rosbags.rosbag2 import Reader, ReaderError, StoragePlugin, Writer

from droil_ros.data.bag import (
    BagError,
    BagWriter,
    dataset_from_bag,
    decode_cdr,
    read_bag_transitions,
    typestore,
)
from droil_ros.data.dataset import DatasetError
from droil_ros.robots import load_spec
from droil_ros.sim.envs import make_env

SPEC = load_spec("wheel_legged")
TASK = SPEC.task("stand")
RADIUS = SPEC.geometry["wheel_radius"]
X_DOT, THETA = SPEC.obs_names.index("x_dot"), SPEC.obs_names.index("theta")
DT = 5_000_000  # ns at 200 Hz
T0 = 1_700_000_000_000_000_000
TS = typestore()
JS, IMU = "sensor_msgs/msg/JointState", "sensor_msgs/msg/Imu"
CMD, BOOL = "std_msgs/msg/Float64MultiArray", "std_msgs/msg/Bool"


def _time(ns: int):
    return TS.types["builtin_interfaces/msg/Time"](sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def _header(ns: int):
    return TS.types["std_msgs/msg/Header"](stamp=_time(ns), frame_id="")


def joint_state(k: int, stamp: int, names=("left_wheel_joint", "right_wheel_joint")) -> bytes:
    msg = TS.types[JS](header=_header(stamp), name=list(names), position=np.zeros(2),
                       velocity=np.full(2, float(k)), effort=np.zeros(2))
    return TS.serialize_cdr(msg, JS)


def imu(theta: float, stamp: int) -> bytes:
    v3 = TS.types["geometry_msgs/msg/Vector3"]
    q = TS.types["geometry_msgs/msg/Quaternion"](x=0.0, y=math.sin(theta / 2), z=0.0,
                                                 w=math.cos(theta / 2))
    msg = TS.types[IMU](header=_header(stamp), orientation=q, orientation_covariance=np.zeros(9),
                        angular_velocity=v3(x=0.0, y=0.0, z=0.0), angular_velocity_covariance=np.zeros(9),
                        linear_acceleration=v3(x=0.0, y=0.0, z=0.0),
                        linear_acceleration_covariance=np.zeros(9))
    return TS.serialize_cdr(msg, IMU)


def command(values) -> bytes:
    layout = TS.types["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0)
    return TS.serialize_cdr(TS.types[CMD](layout=layout, data=np.asarray(values, float)), CMD)


def boolean(value: bool) -> bytes:
    return TS.serialize_cdr(TS.types[BOOL](data=value), BOOL)


def scenario():
    """(topic, msgtype, log time, bytes) of four episodes; see the expected rows below.

    A: states 0-39. A 1 s gap. B: 40-79, state 50 unanswered, state 60 lost. A reset marker.
    C: 80-119, tilting 0.04 rad per step: state 98 is beyond the fall tilt. D: 120-139, at the
    same stamp as state 119 (sim_bridge's clock stays put across a reset).
    """
    msgs = []
    stamp = clock = T0  # header stamps (sim time) and log times (wall time)
    for k in range(140):
        if k == 40:
            stamp += 1_000_000_000
            clock += 1_000_000_000
        if k == 80:
            msgs.append(("/sim_bridge/fallen", BOOL, clock - DT // 2, boolean(False)))
        if k == 120:
            stamp -= DT
        theta = 0.04 * (k - 80) if 80 <= k < 120 else 0.01
        if k != 60:
            msgs.append(("/imu/data", IMU, clock + 100_000, imu(theta, stamp)))
            msgs.append(("/joint_states", JS, clock + 200_000, joint_state(k, stamp)))
            if k != 50:
                msgs.append(("/effort_controller/commands", CMD, clock + 1_000_000,
                             command([0.001 * k] * 2)))
        stamp += DT
        clock += DT
    return msgs


EXPECTED = {  # state index of each transition's s -> (episode start, timeout, terminal)
    **{k: (k == 0, k == 38, False) for k in range(0, 39)},
    **{k: (k == 40, k == 49, False) for k in range(40, 50)},
    **{k: (False, k == 58, False) for k in range(51, 59)},
    **{k: (False, k == 78, False) for k in range(61, 79)},
    **{k: (k == 80, False, k == 97) for k in range(80, 98)},
    **{k: (k == 120, k == 138, False) for k in range(120, 139)},
}


def write_rosbags(path, msgs, storage=StoragePlugin.MCAP):
    with Writer(path, version=9, storage_plugin=storage) as writer:
        connections = {}
        for topic, msgtype, t, data in msgs:
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msgtype, typestore=TS)
            writer.write(connections[topic], t, data)
    return path


def write_ours(path, msgs):
    with BagWriter(path, fsync=False) as writer:
        channels = {}
        for topic, msgtype, t, data in msgs:
            if topic not in channels:
                channels[topic] = writer.add_topic(topic, msgtype)
            writer.write(channels[topic], t + 5_000, data, publish_time=t)
    return path


def check_scenario(ds):
    index = np.rint(ds.observations[:, X_DOT] / RADIUS).astype(int)
    assert sorted(index.tolist()) == sorted(EXPECTED)
    # each action is the command computed from its own state, s' is the next state
    np.testing.assert_array_equal(np.rint(ds.actions[:, 0] / 0.001).astype(int), index)
    np.testing.assert_array_equal(np.rint(ds.next_observations[:, X_DOT] / RADIUS).astype(int),
                                  np.where(index == 59, 61, index + 1))
    for row, k in enumerate(index):
        assert (ds.episode_starts[row], ds.timeouts[row], ds.terminals[row]) == EXPECTED[k], k
    assert ds.n_episodes == 4 and ds.terminals.sum() == 1
    assert np.isfinite(ds.rewards).all() and ds.meta["has_rewards"]


@pytest.mark.parametrize("storage", [StoragePlugin.MCAP, StoragePlugin.SQLITE3])
def test_pairing_episodes_falls_and_holes(tmp_path, storage):
    bag = write_rosbags(tmp_path / "bag", scenario(), storage)
    ds = dataset_from_bag(bag, SPEC, "stand")
    check_scenario(ds)
    assert ds.robot_id == "wheel_legged" and "dropped: 1 states without a command" in ds.meta["source"]
    assert "1 before a lost state" in ds.meta["source"] and "21 after a fall" in ds.meta["source"]
    # the bare storage file (no metadata.yaml needed) gives the same dataset
    storage_file = next(p for p in bag.iterdir() if p.suffix in (".mcap", ".db3"))
    assert dataset_from_bag(storage_file, SPEC).hash == ds.hash


def test_rewards_match_wheel_legged_env(tmp_path):
    """The environment's reward on (s', a) at the time of s' since the episode's first state."""
    t = read_bag_transitions(write_rosbags(tmp_path / "bag", scenario()), SPEC, "drive")
    env = make_env(SPEC, "drive").unwrapped  # v_ref != 0: the time since the reset matters
    index = np.rint(t.observations[:, X_DOT] / RADIUS).astype(int)
    for row, k in enumerate(index):
        first = max(e for e in (0, 40, 80, 120) if e <= k)
        assert t.times[row] == pytest.approx((k + 1 - first) * SPEC.control_dt)
        env.time = t.times[row]
        assert t.rewards[row] == pytest.approx(env.reward(t.next_observations[row], t.actions[row]))


def test_our_writer_orders_by_publish_time(tmp_path):
    # log times 5 us late, as a recorder's receive times: publish times keep the pairing exact
    check_scenario(dataset_from_bag(write_ours(tmp_path / "bag", scenario()), SPEC, "stand"))


def test_fast_cdr_trailing_bytes_are_tolerated(tmp_path):
    rclpy_serialization = pytest.importorskip("rclpy.serialization")
    from sensor_msgs.msg import JointState

    raw = rclpy_serialization.serialize_message(JointState(name=["a", "b"], position=[1.0, 2.0]))
    with pytest.raises(Exception, match="size mismatch"):
        TS.deserialize_cdr(raw, JS)
    msg = decode_cdr(raw, JS)
    assert list(msg.name) == ["a", "b"] and list(msg.position) == [1.0, 2.0] and not len(msg.effort)
    # a bag of rclpy JointStates with velocity but no effort (trailing empty sequence) converts
    msgs = []
    for topic, msgtype, t, data in scenario():
        if msgtype == JS:
            k = int(TS.deserialize_cdr(data, JS).velocity[0])
            stamp = TS.deserialize_cdr(data, JS).header.stamp
            js = JointState(name=["left_wheel_joint", "right_wheel_joint"], position=[0.0, 0.0],
                            velocity=[float(k)] * 2)
            js.header.stamp.sec, js.header.stamp.nanosec = stamp.sec, stamp.nanosec
            data = rclpy_serialization.serialize_message(js)
        msgs.append((topic, msgtype, t, data))
    check_scenario(dataset_from_bag(write_rosbags(tmp_path / "bag", msgs), SPEC, "stand"))


def test_malformed_messages_are_skipped_and_counted(tmp_path):
    msgs = scenario()
    msgs[10] = (*msgs[10][:3], b"\x00\x01\x00\x00garbage")  # a JointState or an Imu
    msgs.append(("/effort_controller/commands", CMD, T0 + 7 * DT + 1_000_000 + 1, command([1.0])))
    ds = dataset_from_bag(write_rosbags(tmp_path / "bag", msgs), SPEC, "stand")
    assert "skipped 1 undecodable" in ds.meta["source"]
    assert "skipped 1 /effort_controller/commands with 1 values" in ds.meta["source"]
    assert 3 not in np.rint(ds.observations[:, X_DOT] / RADIUS)  # state 3 lost its Imu or itself


def _without(msgs, topic):
    return [m for m in msgs if m[0] != topic]


@pytest.mark.parametrize("case, message", [
    ("missing", "bag not found"),
    ("text_file", "not a rosbag2 bag"),
    ("empty_dir", "not a rosbag2 bag"),
    ("fake_mcap", "not an MCAP file"),
    ("no_imu", "bag has no /imu/data (topics: /effort_controller/commands, /joint_states, "
               "/sim_bridge/fallen)"),
    ("wrong_type", "/imu/data has type std_msgs/msg/Bool, expected sensor_msgs/msg/Imu"),
    ("no_pairs", "bag has no transitions: 139 states, 138 commands"),
    ("joint_names", "/joint_states lacks joints ['left_wheel_joint', 'right_wheel_joint'] of robot "
                    "'wheel_legged' (it has ['a', 'b'])"),
    ("all_garbage", "bag has no usable messages on /effort_controller/commands (skipped 138 "
                    "undecodable"),
    ("gymnasium", "observes through Gymnasium"),
    # before: "bag has no /joint_states (topics: none)", and "no metadata.yaml" for the folder
    ("truncated", "bag is truncated (bag.mcap: cut short at byte 43, read up to there): 0 messages "
                  "could be read, no /joint_states (topics: none)"),
    ("metadata_only", "bag: the storage file is missing: metadata.yaml is there, no .mcap or .db3 "
                      "file (metadata.yaml lists: bag.mcap)"),
])
def test_errors_are_one_line(tmp_path, case, message):
    msgs, robot, path = scenario(), SPEC, tmp_path / "bag"
    if case == "text_file":
        path = tmp_path / "notes.txt"
        path.write_text("hello")
    elif case == "empty_dir":
        path.mkdir()
    elif case == "fake_mcap":
        path = tmp_path / "x.mcap"
        path.write_bytes(b"not an mcap")
    elif case != "missing":
        if case == "no_imu":
            msgs = _without(msgs, "/imu/data")
        elif case == "wrong_type":
            msgs = [("/imu/data", BOOL, t, boolean(True)) if topic == "/imu/data" else (topic, ty, t, d)
                    for topic, ty, t, d in msgs]
        elif case == "no_pairs":  # commands, but all before the first state (an earlier run)
            msgs = [(topic, ty, t - 10_000_000_000 if ty == CMD else t, d) for topic, ty, t, d in msgs]
        elif case == "joint_names":
            msgs = [(topic, ty, t, joint_state(0, T0, names=("a", "b")) if ty == JS else d)
                    for topic, ty, t, d in msgs]
        elif case == "all_garbage":
            msgs = [(topic, ty, t, b"\x00\x01\x00\x00" if ty == CMD else d) for topic, ty, t, d in msgs]
        elif case == "gymnasium":
            robot = load_spec("hopper")
        write_rosbags(path, msgs)
        if case == "truncated":
            path = path / "bag.mcap"
            path.write_bytes(path.read_bytes()[:1000])
        elif case == "metadata_only":
            (path / "bag.mcap").unlink()
    with pytest.raises(DatasetError) as info:
        dataset_from_bag(path, robot, "stand" if robot is SPEC else None)
    assert isinstance(info.value, BagError)
    text = str(info.value)
    assert message in text and "\n" not in text, text


def test_topics_and_joint_order_come_from_the_spec(tmp_path):
    """A robot's own topic names and nameless JointStates (``ros`` in its spec), no arguments."""
    text = SPEC.text + "ros: {state_topic: /robot/joints, command_topic: /robot/torque, joints: by_index}\n"
    (tmp_path / "robot.yaml").write_text(text)
    robot = load_spec(tmp_path / "robot.yaml")
    renamed = {"/joint_states": "/robot/joints", "/effort_controller/commands": "/robot/torque"}
    msgs = [(renamed.get(topic, topic), ty, t, joint_state(int(TS.deserialize_cdr(d, JS).velocity[0]),
                                                           _stamp_ns(d), names=()) if ty == JS else d)
            for topic, ty, t, d in scenario()]
    check_scenario(dataset_from_bag(write_rosbags(tmp_path / "bag", msgs), robot, "stand"))
    with pytest.raises(BagError, match="bag has no /joint_states"):
        dataset_from_bag(tmp_path / "bag", SPEC, "stand")


def _stamp_ns(data: bytes) -> int:
    stamp = TS.deserialize_cdr(data, JS).header.stamp
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def test_writer_bag_is_readable_after_every_flush(tmp_path):
    """What a SIGKILL leaves: the file as of the last flush (later messages are in memory)."""
    msgs = scenario()
    writer = BagWriter(tmp_path / "bag", custom_data={"droil_robot": "wheel_legged"}, fsync=False)
    channels = {}
    for n, (topic, msgtype, t, data) in enumerate(msgs):
        if topic not in channels:
            channels[topic] = writer.add_topic(topic, msgtype)
        writer.write(channels[topic], t, data)
        if n == 200:
            writer.flush()
    # never closed: what is on disk is a complete bag with the first 201 messages
    for path in (tmp_path / "bag", writer.file):
        with Reader(path) as reader:
            assert reader.message_count == 201
            assert len(list(reader.messages())) == 201
    partial = dataset_from_bag(tmp_path / "bag", SPEC, "stand")
    assert partial.hash == dataset_from_bag(write_rosbags(tmp_path / "ref", msgs[:201]), SPEC).hash
    assert 40 < len(partial) < len(EXPECTED) and partial.episode_starts[0]
    writer.close()
    with Reader(tmp_path / "bag") as reader:
        assert reader.message_count == len(msgs)
        assert {t: c.msgcount for t, c in reader.topics.items()}["/sim_bridge/fallen"] == 1
    check_scenario(dataset_from_bag(tmp_path / "bag", SPEC, "stand"))


def test_a_torn_mcap_is_salvaged_up_to_its_last_whole_chunk(tmp_path):
    bag = tmp_path / "bag"
    with BagWriter(bag, fsync=False) as writer:
        channels = {}
        for n, (topic, msgtype, t, data) in enumerate(scenario()):
            if topic not in channels:
                channels[topic] = writer.add_topic(topic, msgtype)
            writer.write(channels[topic], t, data)
            if n % 50 == 49:
                writer.flush()  # a chunk every 50 messages
    torn = tmp_path / "torn.mcap"
    shutil.copy(writer.file, torn)
    with torn.open("r+b") as f:  # killed in the middle of a flush's write
        f.truncate(torn.stat().st_size * 2 // 3)
    with pytest.raises(ReaderError):
        with Reader(torn) as reader:
            list(reader.messages())
    ds = dataset_from_bag(torn, SPEC, "stand")
    assert "torn.mcap: cut short at byte" in ds.meta["source"]
    assert 40 < len(ds) < len(EXPECTED)


def test_conversion_needs_no_ros(tmp_path):
    bag = write_rosbags(tmp_path / "bag", scenario())
    code = ("import sys; sys.modules['rclpy'] = None\n"
            "from droil_ros.data.bag import dataset_from_bag\n"
            "from droil_ros.robots import load_spec\n"
            f"print(len(dataset_from_bag({str(bag)!r}, load_spec('wheel_legged'))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.split() == [str(len(EXPECTED))], result.stderr
