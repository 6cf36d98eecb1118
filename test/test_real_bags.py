"""Bags as a real robot records them, with a robot unlike ours (issue #17, "Bring your own robot").

The worked example: a wheeled rover driven by wheel-speed setpoints in a message of its own
package (``rover_msgs/msg/WheelCommand``, defined only in the bag), publishing JointStates
without names at 50 Hz and its IMU at 100 Hz into another bag, setpoints held at 5 Hz, an IMU
mounted 0.05 rad nose-up, wheel angles that wrap at +-pi, and a fall in the middle of one
continuous recording. The signals encode time so that every pairing can be checked exactly: the
yaw rate is the time in seconds, the wheels turn at 5 rad/s, setpoint j is 0.1 * j rad/s.
"""

import math

import numpy as np
import onnx
import pytest
import yaml
from conftest import REPO, run_droil
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from test_bag import SPEC, check_scenario, scenario, write_rosbags

from droil_ros.data import load_dataset
from droil_ros.data.bag import BagError, BagWriter, dataset_from_bag, read_bag_transitions
from droil_ros.errors import SpecError
from droil_ros.robots import load_spec

WHEEL_COMMAND = "rover_msgs/msg/WheelCommand"
TS = get_typestore(Stores.ROS2_KILTED)
TS.register(get_types_from_msg("std_msgs/Header header\nfloat64[] velocity\n", WHEEL_COMMAND))
JS, IMU, TWIST = "sensor_msgs/msg/JointState", "sensor_msgs/msg/Imu", "geometry_msgs/msg/Twist"
T0 = 1_700_000_000_000_000_000
MS = 1_000_000
OMEGA, MOUNT, FALL, UP = 5.0, 0.05, (3.0, 4.0), 1.0  # wheel speed, IMU pitch offset, fall [s]

ROVER = {
    "id": "rover",
    "description": "Skid-steer rover driven by wheel speeds (worked example of a user's robot).",
    "control_rate_hz": 50,
    "joints": ["left_wheel", "right_wheel"],
    "actuators": [{"name": "left_drive", "joint": "left_wheel"},
                  {"name": "right_drive", "joint": "right_wheel"}],
    "observation": [
        {"name": "theta", "unit": "rad", "terms": [{"source": "imu_pitch", "offset": -MOUNT}]},
        {"name": "x", "unit": "m", "terms": [{"source": "joint_position", "joints": [
            "left_wheel", "right_wheel"], "unwrap": True, "scale": 0.1}]},
        {"name": "x_dot", "unit": "m/s", "terms": [{"source": "joint_velocity", "joints": [
            "left_wheel", "right_wheel"], "scale": 0.1}]},
        {"name": "yaw_rate", "unit": "rad/s", "terms": [{"source": "imu_angular_velocity_z"}]},
    ],
    "action": [{"name": "wheel_speed", "unit": "rad/s", "low": -10.0, "high": 10.0,
                "actuators": {"left_drive": 1.0, "right_drive": 1.0}}],
    "tasks": {"drive": {"seconds": 60.0, "v_ref": 0.5, "init_tilt": 0.2, "fall_tilt": 0.6,
                        "reward": {"alive": 1.0, "x_dot_error": 1.0}}},
    "ros": {"state_topic": "/rover/joint_states", "imu_topic": "/rover/imu",
            "command_topic": "/rover/wheel_cmd", "command_type": WHEEL_COMMAND,
            "command_field": "velocity", "command_kind": "velocity", "joints": "by_index",
            "pairing": "hold", "sync": "interpolate_imu"},
}


def rover_spec(folder, **changes):
    """The rover's spec in ``folder`` (``ros`` keys and top-level keys changed as given)."""
    raw = yaml.safe_load(yaml.safe_dump(ROVER))
    for key, value in changes.items():
        if key in raw["ros"]:
            raw["ros"][key] = value
        else:
            raw[key] = value
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "rover.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _header(ns: int):
    time = TS.types["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9)
    return TS.types["std_msgs/msg/Header"](stamp=time, frame_id="")


def pitch(t: float) -> float:
    return MOUNT + (1.0 if FALL[0] <= t < FALL[1] else 0.0)


def session(seconds=8.0, command_type=WHEEL_COMMAND, reference=False):
    """(bag, topic, msgtype, log time, bytes): joints and setpoints in 'joints', the IMU in 'imu'.
    ``command_type``: the setpoints as a WheelCommand or as a JointState's velocity; ``reference``:
    a speed reference (Twist, linear.x 0.5 m/s) on /rover/cmd_vel at 10 Hz too."""
    v3, quat = TS.types["geometry_msgs/msg/Vector3"], TS.types["geometry_msgs/msg/Quaternion"]
    msgs = []
    for k in range(int(seconds * 50)):  # 50 Hz, unnamed, angles wrapped
        t = k * 0.02
        angle = math.remainder(OMEGA * t, 2 * math.pi)
        js = TS.types[JS](header=_header(T0 + k * 20 * MS), name=[], position=np.full(2, angle),
                          velocity=np.full(2, OMEGA), effort=np.zeros(0))
        msgs.append(("joints", "/rover/joint_states", JS, T0 + k * 20 * MS + MS // 2,
                     TS.serialize_cdr(js, JS)))
    for k in range(int(seconds * 100)):  # 100 Hz, 5 ms before the joints' clock
        ns = T0 + k * 10 * MS - 5 * MS
        t = (ns - T0) / 1e9
        q = quat(x=0.0, y=math.sin(pitch(t) / 2), z=0.0, w=math.cos(pitch(t) / 2))
        msg = TS.types[IMU](header=_header(ns), orientation=q, orientation_covariance=np.zeros(9),
                            angular_velocity=v3(x=0.0, y=0.0, z=t),
                            angular_velocity_covariance=np.zeros(9),
                            linear_acceleration=v3(x=0.0, y=0.0, z=9.81),
                            linear_acceleration_covariance=np.zeros(9))
        msgs.append(("imu", "/rover/imu", IMU, ns + MS // 2, TS.serialize_cdr(msg, IMU)))
    for j in range(int(seconds * 5)):  # setpoints at 5 Hz, 7 ms after the period starts
        ns = T0 + j * 200 * MS + 7 * MS
        if command_type == WHEEL_COMMAND:
            cmd = TS.types[WHEEL_COMMAND](header=_header(ns), velocity=np.full(2, 0.1 * j))
        else:
            cmd = TS.types[JS](header=_header(ns), name=[], position=np.zeros(0),
                               velocity=np.full(2, 0.1 * j), effort=np.zeros(0))
        msgs.append(("joints", "/rover/wheel_cmd", command_type, ns, TS.serialize_cdr(cmd, command_type)))
    for k in range(int(seconds * 10) if reference else 0):
        twist = TS.types[TWIST](linear=v3(x=0.5, y=0.0, z=0.0), angular=v3(x=0.0, y=0.0, z=0.0))
        msgs.append(("joints", "/rover/cmd_vel", TWIST, T0 + k * 100 * MS + 2 * MS,
                     TS.serialize_cdr(twist, TWIST)))
    return sorted(msgs, key=lambda m: m[3])


def write_session(folder, msgs, storage=StoragePlugin.MCAP):
    """One rosbag2 per bag name, every type's definition embedded as rosbag2 does."""
    paths = {}
    for name in dict.fromkeys(m[0] for m in msgs):
        with Writer(folder / name, version=9, storage_plugin=storage) as writer:
            connections = {}
            for bag, topic, msgtype, t, data in msgs:
                if bag != name:
                    continue
                if topic not in connections:
                    connections[topic] = writer.add_connection(topic, msgtype, typestore=TS)
                writer.write(connections[topic], t, data)
        paths[name] = folder / name
    return list(paths.values())


def state_time(obs) -> np.ndarray:
    return obs[:, 3]  # the yaw rate is the IMU's time, interpolated to the JointState stamp


@pytest.fixture
def rover(tmp_path):
    return load_spec(rover_spec(tmp_path / "robots")), write_session(tmp_path, session())


@pytest.mark.parametrize("storage", [StoragePlugin.MCAP, StoragePlugin.SQLITE3])
def test_custom_command_type_from_the_bag_and_bags_of_one_session(tmp_path, storage):
    """Before: the spec refused rover_msgs/msg/WheelCommand (only Float64MultiArray), and one bag
    had to hold joints, IMU and commands. Now the type decodes from the definition embedded in
    the bag (MCAP schema or rosbag2 metadata) and the session's bags are read as one."""
    robot = load_spec(rover_spec(tmp_path / "robots"))
    t = read_bag_transitions(write_session(tmp_path, session(), storage), robot)
    times = state_time(t.observations)
    # zero-order hold: the setpoint published last before the state, 0.1 rad/s per 200 ms
    np.testing.assert_allclose(t.actions[:, 0], 0.1 * np.floor((times - 0.007) / 0.2), atol=1e-9)
    # the IMU interpolated to the JointState stamps (every 20 ms), the 0.05 rad mount removed
    np.testing.assert_allclose(times * 50, np.rint(times * 50), atol=1e-9)
    upright = (times < FALL[0] - 0.02) | (times > FALL[1])
    np.testing.assert_allclose(t.observations[upright, 0], 0.0, atol=1e-9)


def test_unknown_command_type_is_one_line(rover, tmp_path):
    robot, bags = rover
    other = load_spec(rover_spec(tmp_path / "other", command_type="rover_msgs/msg/Drive"))
    with pytest.raises(BagError, match="/rover/wheel_cmd has type rover_msgs/msg/WheelCommand, "
                                       "expected rover_msgs/msg/Drive"):
        read_bag_transitions(bags, other)
    typo = load_spec(rover_spec(tmp_path / "typo", command_field="velocty"))
    with pytest.raises(BagError, match="no usable messages on /rover/wheel_cmd .*without velocty"):
        read_bag_transitions(bags, typo)
    broken = tmp_path / "broken"
    with Writer(broken, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        writer.add_connection("/rover/wheel_cmd", WHEEL_COMMAND, msgdef="float64[ velocity",
                              rihs01="RIHS01_" + "0" * 64)
    with pytest.raises(BagError, match="the bag's definition of rover_msgs/msg/WheelCommand is "
                                       "not usable"):
        read_bag_transitions([broken, *bags], robot)


def test_a_field_path_into_a_standard_message(tmp_path):
    """trajectory_msgs/JointTrajectory: the efforts of its first point (``points[0].effort``)."""
    from test_bag import TS as KILTED

    point = KILTED.types["trajectory_msgs/msg/JointTrajectoryPoint"]
    duration = KILTED.types["builtin_interfaces/msg/Duration"](sec=0, nanosec=0)
    msgs = []
    for topic, msgtype, t, data in scenario():
        if topic == "/effort_controller/commands":
            effort = KILTED.deserialize_cdr(data, msgtype).data
            msgtype = "trajectory_msgs/msg/JointTrajectory"
            traj = KILTED.types[msgtype](
                header=KILTED.types["std_msgs/msg/Header"](
                    stamp=KILTED.types["builtin_interfaces/msg/Time"](sec=0, nanosec=0), frame_id=""),
                joint_names=[], points=[point(positions=np.zeros(0), velocities=np.zeros(0),
                                               accelerations=np.zeros(0), effort=effort,
                                               time_from_start=duration)])
            data = KILTED.serialize_cdr(traj, msgtype)
        msgs.append((topic, msgtype, t, data))
    path = tmp_path / "robot.yaml"
    path.write_text(SPEC.text + "ros: {command_type: trajectory_msgs/msg/JointTrajectory, "
                                "command_field: 'points[0].effort'}\n")
    check_scenario(dataset_from_bag(write_rosbags(tmp_path / "bag", msgs), load_spec(path), "stand"))


def test_held_setpoints_pair_by_zero_order_hold(rover, tmp_path):
    """Before: 5 Hz setpoints against 50 Hz states left 9 states in 10 "without a command" (the
    issue's 14 transitions out of 1,371 states). ``hold`` keeps all but the states before the
    first setpoint; ``--pairing`` overrides the spec."""
    robot, bags = rover
    answer = read_bag_transitions(bags, robot, pairing="answer")
    hold = read_bag_transitions(bags, robot)
    assert len(answer) < 40 and "states without a command" in answer.report
    assert "1 states before the first command" in hold.report and len(hold) > 250
    out = tmp_path / "answer.npz"
    proc = run_droil("dataset", "from-bag", *map(str, bags), "--robot", str(robot.source),
                     "--out", str(out), "--pairing", "answer")
    assert proc.returncode == 0, proc.stderr
    assert len(load_dataset(out)) == len(answer)
    assert "(answer pairing); dropped:" in proc.stdout and "states without a command" in proc.stdout
    # a setpoint with 3 values for 2 wheels: the 10 states that hold it give no transition
    msgs = [(*m[:4], TS.serialize_cdr(TS.types[WHEEL_COMMAND](header=_header(m[3]),
                                                              velocity=np.ones(3)), WHEEL_COMMAND))
            if m[2] == WHEEL_COMMAND and m[3] == T0 + 2007 * MS else m for m in session()]
    bad = read_bag_transitions(write_session(tmp_path / "bad", msgs), robot)
    assert len(bad) == len(hold) - 10 and "10 whose command was unusable" in bad.report
    assert "skipped 1 /rover/wheel_cmd with 3 values" in bad.report


def test_a_held_setpoint_expires_at_hold_max_age(rover, tmp_path):
    """A robot's driver stops holding a setpoint after its command timeout: with ``hold_max_age``
    (here 0.1 s against setpoints every 0.2 s) the states whose setpoint is older are dropped,
    counted, and every kept state's setpoint is at most that old."""
    robot, bags = rover
    t = read_bag_transitions(bags, robot, hold_max_age=0.1)
    times = state_time(t.observations)
    age = times + 0.0005 - (0.2 * np.floor((times - 0.007) / 0.2) + 0.007)  # JointStates log 0.5 ms late
    assert len(t) > 100 and np.all((age > 0) & (age <= 0.1)), age.max()
    assert ", 148 whose setpoint was older than 0.1 s" in t.report  # about half: 4-5 of 10 per setpoint
    proc = run_droil("dataset", "from-bag", *map(str, bags), "--robot", str(robot.source),
                     "--out", str(tmp_path / "d.npz"), "--hold-max-age", "0.1", "--report")
    assert proc.returncode == 0 and "states whose setpoint was older than 0.1 s" in proc.stdout, proc.stderr


def test_report_says_what_was_kept_and_dropped(rover, tmp_path):
    """Before: from-bag printed the kept transitions only; the reasons were in the dataset's
    meta. Now it prints the drops, and ``--report`` each rule's count and each episode."""
    robot, bags = rover
    proc = run_droil("dataset", "from-bag", *map(str, bags), "--robot", str(robot.source),
                     "--out", str(tmp_path / "d.npz"), "--report")
    assert proc.returncode == 0, proc.stderr
    for line in ("  /rover/wheel_cmd: 40 messages (rover_msgs/msg/WheelCommand)",
                 "  /rover/imu: 800 messages (sensor_msgs/msg/Imu)",
                 "states: 400 (JointState + Imu, interpolate_imu)", "pairing: hold",
                 "kept: ", "  episode 0: 0.020-", "ends in a fall", "ends in a time-out",
                 "  1 states before the first command", "  100 states after a fall",
                 "  0 states whose command was unusable"):
        assert line in proc.stdout, (line, proc.stdout)
    proc = run_droil("dataset", "info", *map(str, bags))
    assert proc.returncode == 2 and "info takes one source, got 2" in proc.stderr


def test_fall_then_back_up_resumes_on_a_continuous_recording(rover):
    """Before: everything after the first fall was dropped (no reset, no time gap). Now the
    episode ends at the fall and a new one starts after the robot has been upright (within the
    task's init_tilt) for ``resume_after`` seconds."""
    robot, bags = rover
    t = read_bag_transitions(bags, robot)
    # the recording's first state has no setpoint yet: the run from the second one has no start
    assert t.terminals.sum() == 1 and t.episode_starts.sum() == 1
    assert abs(t.next_observations[t.terminals][0, 0]) > robot.task("drive").fall_tilt
    first_after = state_time(t.observations)[np.flatnonzero(t.episode_starts)[0]]
    # upright from the state at 4.02 s (at 4.00 s the IMU is interpolated across the step)
    assert first_after == pytest.approx(FALL[1] + 0.02 + UP, abs=1e-9)
    assert "100 after a fall, 1 episodes resumed after a fall" in t.report
    assert t.timeouts[-1] and t.times[-1] == pytest.approx(8.0 - 0.02 - first_after)
    later = read_bag_transitions(bags, robot, resume_after=2.0)
    assert "150 after a fall" in later.report


def test_offset_and_unwrapped_wheel_angle(rover):
    """Before: no offset (the IMU mount showed as a 0.05 rad tilt) and wheel odometry jumped by
    2 pi * r at each wrap. The converter unwraps along the recording; ``build_observation`` (one
    message, no history) takes the angle as read."""
    robot, bags = rover
    t = read_bag_transitions(bags, robot)
    x, times = t.observations[:, 1], state_time(t.observations)
    np.testing.assert_allclose(x, 0.1 * OMEGA * times, atol=1e-9)  # 4 m: six wraps
    np.testing.assert_allclose(t.next_observations[:-1, 1] - x[:-1], 0.1 * OMEGA * 0.02, atol=1e-9)

    from droil_ros.robots.spec import SensorReadings

    def readings(angle):
        return SensorReadings(robot.joints, np.full(2, angle), np.zeros(2), np.zeros(2),
                              np.array([0.0, 0.0, 0.0, 1.0]), np.zeros(3), np.zeros(3))

    builder = robot.observation_builder()
    assert [round(builder(readings(a))[1], 6) for a in (3.0, -3.0, -0.5)] == \
        [0.3, round(0.1 * (2 * math.pi - 3.0), 6), round(0.1 * (2 * math.pi - 0.5), 6)]
    assert robot.build_observation(readings(-3.0))[1] == pytest.approx(-0.3)
    assert robot.build_observation(readings(0.0))[0] == pytest.approx(-MOUNT)


def test_states_at_the_imu_stamps_with_joints_interpolated(tmp_path):
    """``sync: interpolate_joints``: a state at each Imu (100 Hz), the JointStates around it
    blended; wheel angles the short way round across the wrap, so odometry stays exact."""
    robot = load_spec(rover_spec(tmp_path / "robots", sync="interpolate_joints"))
    t = read_bag_transitions(write_session(tmp_path, session()), robot)
    assert "from 798 states" in t.report
    times = state_time(t.observations)
    np.testing.assert_allclose((times + 0.005) * 100, np.rint((times + 0.005) * 100), atol=1e-6)
    np.testing.assert_allclose(t.observations[:, 1], 0.1 * OMEGA * times, atol=1e-9)
    assert "skipped 2 Imus without JointStates on both sides" in t.report


def test_a_term_reads_a_field_of_any_topic(tmp_path):
    """Before: terms came only from JointState and Imu ("unknown source 'topic'"). Now a term
    reads a field of any message, here the odometry's speed at 10 Hz: the latest message out
    when the state's JointState was, as a node's latest-message builder sees it."""
    odometry = "nav_msgs/msg/Odometry"
    observation = [*ROVER["observation"], {"name": "odom_v", "unit": "m/s", "terms": [
        {"source": "topic", "topic": "rover/odom", "type": odometry,
         "field": "twist.twist.linear.x"}]}]
    robot = load_spec(rover_spec(tmp_path / "robots", observation=observation))
    assert robot.topic_inputs == {"rover/odom": odometry}  # relative: the bag's /rover/odom
    msgs = session()
    for k in range(80):  # 10 Hz, 3 ms after the joints' clock, the speed field holds the time
        ns = T0 + k * 100 * MS + 3 * MS
        msg = TS.types[odometry](
            header=_header(ns), child_frame_id="base_link",
            pose=TS.types["geometry_msgs/msg/PoseWithCovariance"](
                pose=TS.types["geometry_msgs/msg/Pose"](
                    position=TS.types["geometry_msgs/msg/Point"](x=0.0, y=0.0, z=0.0),
                    orientation=TS.types["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0)),
                covariance=np.zeros(36)),
            twist=TS.types["geometry_msgs/msg/TwistWithCovariance"](
                twist=TS.types["geometry_msgs/msg/Twist"](
                    linear=TS.types["geometry_msgs/msg/Vector3"](x=k * 0.1, y=0.0, z=0.0),
                    angular=TS.types["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0)),
                covariance=np.zeros(36)))
        msgs.append(("imu", "/rover/odom", odometry, ns, TS.serialize_cdr(msg, odometry)))
    t = read_bag_transitions(write_session(tmp_path, sorted(msgs, key=lambda m: m[3])), robot)
    times = state_time(t.observations)
    np.testing.assert_allclose(t.observations[:, -1], np.floor((times - 0.0035) / 0.1) * 0.1,
                               atol=1e-9)
    with pytest.raises(SpecError, match="source topic needs 'topic', 'type'"):
        load_spec(rover_spec(tmp_path / "bad", observation=[{"name": "v", "terms": [
            {"source": "topic", "topic": "/rover/odom", "field": "twist"}]}]))


def test_a_robot_without_imu_terms_needs_no_imu_topic(tmp_path):
    """Before: "bag has no /imu/data" for a spec whose observation uses no IMU."""
    observation = [o for o in ROVER["observation"] if o["name"] in ("x", "x_dot")]
    robot = load_spec(rover_spec(tmp_path / "robots", observation=observation))
    joints_only = [m for m in session() if m[0] == "joints"]
    t = read_bag_transitions(write_session(tmp_path, joints_only), robot)
    assert len(t) == 398 and "JointState only" in t.details[3]


def test_bad_term_keys_are_refused(tmp_path):
    observation = [{"name": "x", "terms": [{"source": "imu_pitch", "ofset": 0.1}]}]
    with pytest.raises(SpecError, match="term: unknown key 'ofset'"):
        load_spec(rover_spec(tmp_path, observation=observation))


def test_worked_example_from_bags_to_onnx(rover, tmp_path, monkeypatch):
    """The README's worked example: the rover's two bags -> dataset -> ONNX, by its id on
    DROIL_ROBOT_PATH for the conversion and with no --robot at all for training."""
    robot, bags = rover
    monkeypatch.setenv("DROIL_ROBOT_PATH", str(robot.source.parent))
    data, policy = tmp_path / "rover.npz", tmp_path / "rover.onnx"
    proc = run_droil("dataset", "from-bag", *map(str, bags), "--robot", "rover", "--out", str(data))
    assert proc.returncode == 0, proc.stderr
    assert "falls, robot rover" in proc.stdout and "dropped: 1 states before" in proc.stdout
    monkeypatch.delenv("DROIL_ROBOT_PATH")
    proc = run_droil("train", "--algo", "bc", "--data", str(data), "--out", str(policy),
                     "--steps", "5", "--config", "fast")
    assert proc.returncode == 0, proc.stderr
    meta = {p.key: p.value for p in onnx.load(str(policy)).metadata_props}
    assert (meta["robot_id"], meta["robot_hash"]) == ("rover", robot.hash)
    readme = (REPO / "README.md").read_text().split("### Real bags: the worked example")[1]
    shown = yaml.safe_load(readme.split("```yaml\n")[1].split("```")[0])
    assert shown == {k: v for k, v in ROVER.items() if k != "description"}  # the spec tested here
    assert f"rover.npz: {len(load_dataset(data))} transitions" in readme


def test_a_cut_short_bag_with_a_custom_type_is_salvaged(tmp_path):
    """A recorder killed mid-write: the custom type still decodes from the schema at the file's
    start, and the bag is read up to its last complete chunk (our writer, flushed every 100)."""
    robot, msgs = load_spec(rover_spec(tmp_path / "robots")), session()
    bags = write_session(tmp_path, [m for m in msgs if m[0] == "imu"])
    with BagWriter(tmp_path / "joints", fsync=False) as writer:
        channels = {}
        for n, (_, topic, msgtype, t, data) in enumerate(m for m in msgs if m[0] == "joints"):
            if topic not in channels:
                channels[topic] = writer.add_topic(topic, msgtype, TS)
            writer.write(channels[topic], t, data)
            if n % 100 == 99:
                writer.flush()
    mcap = writer.file
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 2])
    t = read_bag_transitions([mcap, *bags], robot)
    assert "joints_0.mcap: cut short at byte" in t.report
    assert 100 < len(t) < 300


def test_a_robots_own_message_is_recorded_with_the_definition_its_package_installs(tmp_path, monkeypatch):
    """The recorder's writer with no typestore given: rosbags does not know WheelCommand, the
    package installs it (``share/rover_msgs/msg`` under AMENT_PREFIX_PATH, as a sourced workspace
    sets it), and the bag then reads as the rosbags-written one, anywhere."""
    share = tmp_path / "install" / "share" / "rover_msgs" / "msg"
    share.mkdir(parents=True)
    (share / "WheelCommand.msg").write_text("std_msgs/Header header  # the stamp\nfloat64[] velocity\n")
    (share / "Wheel.msg").write_text("float64 speed\n")
    (share / "Status.msg").write_text("Wheel[2] wheels\nrover_msgs/Wheel[] spare\n")
    monkeypatch.setenv("AMENT_PREFIX_PATH", f"{tmp_path / 'elsewhere'}:{tmp_path / 'install'}")
    robot, msgs = load_spec(rover_spec(tmp_path / "robots")), session()
    bags = write_session(tmp_path, [m for m in msgs if m[0] == "imu"])
    with BagWriter(tmp_path / "joints", fsync=False) as writer:
        channels = {}
        for _, topic, msgtype, t, data in (m for m in msgs if m[0] == "joints"):
            if topic not in channels:
                channels[topic] = writer.add_topic(topic, msgtype)
            writer.write(channels[topic], t, data)
        writer.add_topic("/rover/status", "rover_msgs/msg/Status")  # a type of its package's types
        with pytest.raises(BagError, match="cannot record /rover/mode: unknown message type "
                                           "rover_msgs/msg/Mode: .* share/rover_msgs/msg/Mode.msg"):
            writer.add_topic("/rover/mode", "rover_msgs/msg/Mode")
    assert b"MSG: rover_msgs/Wheel\nfloat64 speed" in writer.file.read_bytes()  # its dependency too
    monkeypatch.delenv("AMENT_PREFIX_PATH")  # read where the package is not installed
    ours = read_bag_transitions([tmp_path / "joints", *bags], robot)
    reference = read_bag_transitions(write_session(tmp_path / "reference", msgs), robot)
    np.testing.assert_array_equal(ours.observations, reference.observations)
    np.testing.assert_array_equal(ours.actions, reference.actions)
