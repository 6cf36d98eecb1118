"""Robot specs: every spec loads, agrees with its model, and bad specs fail clearly."""

import math

import mujoco
import numpy as np
import pytest
import yaml

from droil_ros.errors import SpecError
from droil_ros.robots import SensorReadings, available_robots, load_spec
from droil_ros.robots.spec import quaternion_to_rpy
from droil_ros.sim.envs import make_env

ROBOTS = ["wheel_legged", "hopper", "walker2d", "halfcheetah", "ant"]


def test_all_robots_ship_a_spec():
    assert set(ROBOTS) <= set(available_robots())


@pytest.mark.parametrize("robot", ROBOTS)
def test_spec_matches_environment(robot):
    spec = load_spec(robot)
    env = make_env(spec)
    model = env.unwrapped.model
    assert env.observation_space.shape == (spec.obs_dim,)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (spec.obs_dim,)
    assert env.action_space.shape == (spec.act_dim,)
    for joint in spec.joints:
        assert mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, joint) >= 0, joint
    substeps = getattr(env.unwrapped, "frame_skip", None) or env.unwrapped.substeps
    assert math.isclose(1.0 / (model.opt.timestep * substeps), spec.control_rate_hz)
    # action limits are the model's control ranges (per actuator, via the gains)
    for element in spec.action:
        for actuator_name in element.actuators:
            joint = spec.actuators[actuator_name]
            joint_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, joint)
            (actuator,) = np.flatnonzero(model.actuator_trnid[:, 0] == joint_id)
            assert model.actuator_ctrlrange[actuator].tolist() == [element.low, element.high]


def test_wheel_radius_in_spec_is_the_models():
    spec = load_spec("wheel_legged")
    model = make_env(spec).unwrapped.model
    for name in ("left_wheel", "right_wheel"):
        geom = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, name)
        assert model.geom_size[geom][0] == spec.geometry["wheel_radius"]


def test_spec_hash_is_stable_and_content_based(tmp_path):
    a, b = load_spec("wheel_legged"), load_spec("wheel_legged")
    assert a.hash == b.hash and len(a.hash) == 16
    raw = yaml.safe_load(a.source.read_text())
    raw["control_rate_hz"] = 100
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(raw))
    assert load_spec(changed).hash != a.hash


def readings(names, position, velocity, pitch=0.0, pitch_rate=0.0):
    return SensorReadings(
        joint_names=tuple(names), position=np.array(position), velocity=np.array(velocity),
        effort=np.zeros(len(names)),
        orientation=np.array([0.0, math.sin(pitch / 2), 0.0, math.cos(pitch / 2)]),
        angular_velocity=np.array([0.0, pitch_rate, 0.0]), linear_acceleration=np.zeros(3),
    )


def test_observation_is_built_by_joint_name_not_order():
    spec = load_spec("wheel_legged")
    r = spec.geometry["wheel_radius"]
    ordered = readings(["left_wheel_joint", "right_wheel_joint"], [1.0, 3.0], [0.5, 1.5], 0.1, 0.2)
    swapped = readings(["right_wheel_joint", "left_wheel_joint"], [3.0, 1.0], [1.5, 0.5], 0.1, 0.2)
    obs = spec.build_observation(ordered)
    np.testing.assert_allclose(obs, spec.build_observation(swapped))
    np.testing.assert_allclose(obs, [0.1, r * (2.0 + 0.1), 0.2, r * (1.0 + 0.2)])


def test_observation_rejects_missing_joints_and_fields():
    spec = load_spec("wheel_legged")
    with pytest.raises(ValueError, match="lacks joints"):
        spec.build_observation(readings(["left_wheel_joint"], [0.0], [0.0]))
    no_velocity = readings(["left_wheel_joint", "right_wheel_joint"], [0.0, 0.0], [])
    with pytest.raises(ValueError, match="no joint_velocity"):
        spec.build_observation(no_velocity)


def test_quaternion_to_rpy_round_trip():
    roll, pitch, yaw = 0.1, -0.3, 0.7
    q = np.zeros(4)
    mujoco.mju_euler2Quat(q, [roll, pitch, yaw], "XYZ")  # extrinsic x-y-z == intrinsic z-y-x
    np.testing.assert_allclose(quaternion_to_rpy([q[1], q[2], q[3], q[0]]), [roll, pitch, yaw],
                               atol=1e-12)


def test_actions_are_clipped_and_never_nan():
    spec = load_spec("wheel_legged")
    high = spec.action_high[0]
    np.testing.assert_array_equal(spec.clip_action([1e9]), [high])
    np.testing.assert_array_equal(spec.clip_action([np.nan]), [0.0])
    np.testing.assert_array_equal(spec.clip_action([-np.inf]), [0.0])
    np.testing.assert_array_equal(spec.action_to_command([1e9]), [high, high])


def write(tmp_path, text):
    path = tmp_path / "robot.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("mutate, message", [
    (lambda s: s.pop("joints"), "missing 'joints'"),
    (lambda s: s["observation"][0]["terms"].__setitem__(0, {"source": "imu_warp"}), "unknown source"),
    (lambda s: s["observation"][1]["terms"][0].__setitem__("joints", ["knee"]), "unknown joints"),
    (lambda s: s["action"][0].__setitem__("low", 5.0), "low must be below high"),
    # an infinite bound would let an infinite reading through the node's one range test
    (lambda s: s["observation"][0].__setitem__("high", float("inf")), "low and high must be finite"),
    (lambda s: s["action"][0]["actuators"].__setitem__("elbow", 1.0), "unknown actuators"),
    (lambda s: s.__setitem__("model", "models/robots/missing.xml"), "model file not found"),
    (lambda s: s["tasks"]["stand"]["reward"].__setitem__("speed", 1), "unknown reward terms"),
    (lambda s: s.__setitem__("control_rate_hz", "fast"), "malformed spec"),
])
def test_malformed_specs_fail_with_a_clear_message(tmp_path, mutate, message):
    raw = yaml.safe_load(load_spec("wheel_legged").source.read_text())
    mutate(raw)
    with pytest.raises(SpecError, match=message):
        load_spec(write(tmp_path, yaml.safe_dump(raw)))


def test_missing_and_unknown_specs(tmp_path):
    with pytest.raises(SpecError, match="unknown robot 'rover'"):
        load_spec("rover")
    with pytest.raises(SpecError, match="not found"):
        load_spec(tmp_path / "nope.yaml")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(write(tmp_path, "a: [1,"))
    with pytest.raises(SpecError, match="must be a YAML mapping"):
        load_spec(write(tmp_path, "- 1\n- 2\n"))


def wheel_legged_raw() -> dict:
    return yaml.safe_load(load_spec("wheel_legged").source.read_text())


@pytest.mark.parametrize("mutate, message", [
    (lambda s: s.__setitem__("topics", {"state": "/js"}), "unknown key 'topics'"),
    (lambda s: s.__setitem__("contol_rate_hz", 100), "unknown key 'contol_rate_hz'"),
    (lambda s: s.__setitem__("ros", {"state": "/js"}), "ros: unknown key 'state'"),
    (lambda s: s.__setitem__("ros", {"command_kind": "torque"}), "ros.command_kind 'torque' is not"),
    (lambda s: s.__setitem__("ros", {"command_type": "JointState"}),
     "ros.command_type 'JointState' is not a message type"),
    (lambda s: s.__setitem__("ros", {"command_field": "points[0]..velocities"}),
     "ros.command_field 'points\\[0\\]..velocities' is not a field path"),
    (lambda s: s.__setitem__("ros", {"pairing": "latest"}), "ros.pairing 'latest' is not supported"),
    (lambda s: s.__setitem__("ros", {"state_topic": "robot joints"}),
     "ros.state_topic 'robot joints' is not a topic name"),
    (lambda s: s.__setitem__("ros", {"joints": "by_number"}), "ros.joints 'by_number'"),
    (lambda s: s.__setitem__("gymnasium_id", "Hopper-v5"), "not both"),
])
def test_unknown_keys_and_bad_ros_section_are_refused(tmp_path, mutate, message):
    """Before: a typo or an unsupported section was silently ignored."""
    raw = wheel_legged_raw()
    mutate(raw)
    with pytest.raises(SpecError, match=message) as err:
        load_spec(write(tmp_path, yaml.safe_dump(raw)))
    assert str(tmp_path / "robot.yaml") in str(err.value) and "\n" not in str(err.value)


def test_ros_section_defaults_are_todays_topics_and_keep_the_hash(tmp_path):
    spec = load_spec("wheel_legged")
    assert (spec.ros.state_topic, spec.ros.imu_topic, spec.ros.command_topic, spec.ros.command_type,
            spec.ros.command_kind, spec.ros.joints) == (
        "joint_states", "imu/data", "effort_controller/commands",  # relative: in a node's namespace
        "std_msgs/msg/Float64MultiArray", "effort", "by_name")
    raw = wheel_legged_raw()
    raw["ros"] = {"state_topic": "robot/joint_states", "command_type": "std_msgs/Float64MultiArray",
                  "joints": "by_index"}
    custom = load_spec(write(tmp_path, yaml.safe_dump(raw)))
    assert custom.ros.state_topic == "robot/joint_states" and custom.ros.joints == "by_index"
    assert custom.ros.command_type == "std_msgs/msg/Float64MultiArray"
    assert custom.hash != spec.hash and spec.text == spec.source.read_text()


def user_spec(folder, robot_id="my_robot", model: str | None = "keep"):
    """A copy of wheel_legged under another id in ``folder``; model: keep (the shipped file by its
    share-relative path), None (no model) or a path written as is."""
    raw = wheel_legged_raw()
    raw["id"] = robot_id
    if model is None:
        del raw["model"]
    elif model != "keep":
        raw["model"] = model
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{robot_id}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_robot_path_adds_user_specs_and_refuses_an_ambiguous_id(tmp_path, monkeypatch):
    """Before: only config/robots (or DROIL_SHARE, which hid every shipped robot)."""
    user_spec(tmp_path / "a")
    monkeypatch.setenv("DROIL_ROBOT_PATH", f"{tmp_path / 'a'}:")
    assert {"my_robot", "wheel_legged", "hopper"} <= set(available_robots())
    assert load_spec("my_robot").source == tmp_path / "a" / "my_robot.yaml"
    assert load_spec("wheel_legged").id == "wheel_legged"
    user_spec(tmp_path / "b")
    user_spec(tmp_path / "b", "wheel_legged")
    monkeypatch.setenv("DROIL_ROBOT_PATH", f"{tmp_path / 'a'}:{tmp_path / 'b'}")
    with pytest.raises(SpecError, match="robot 'my_robot' is ambiguous: .*a/my_robot.yaml and .*b/my_robot"):
        load_spec("my_robot")
    with pytest.raises(SpecError, match="robot 'wheel_legged' is ambiguous: .*config/robots/wheel_legged"):
        load_spec("wheel_legged")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "rover.yaml").write_text((tmp_path / "a" / "my_robot.yaml").read_text())
    monkeypatch.setenv("DROIL_ROBOT_PATH", str(tmp_path / "c"))
    with pytest.raises(SpecError, match="rover.yaml: its id is 'my_robot'"):
        load_spec("rover")
    monkeypatch.setenv("DROIL_ROBOT_PATH", str(tmp_path / "missing"))
    with pytest.raises(SpecError, match="DROIL_ROBOT_PATH names a folder that does not exist"):
        load_spec("wheel_legged")


def test_model_is_optional_and_relative_to_the_spec(tmp_path):
    """Before: 'model' was required and resolved against the package, not the spec's folder."""
    shipped = load_spec("wheel_legged").model_path
    no_model = load_spec(user_spec(tmp_path / "none", model=None))
    assert no_model.model_path is None and no_model.obs_dim == 4
    with pytest.raises(SpecError, match="robot 'my_robot' has no model"):
        make_env(no_model)
    (tmp_path / "rel" / "mjcf").mkdir(parents=True)
    (tmp_path / "rel" / "mjcf" / "robot.xml").write_text(shipped.read_text())
    relative = load_spec(user_spec(tmp_path / "rel", model="mjcf/robot.xml"))
    assert relative.model_path == tmp_path / "rel" / "mjcf" / "robot.xml"
    assert make_env(relative).reset(seed=0)[0].shape == (4,)
    assert load_spec(user_spec(tmp_path / "copy")).model_path == shipped  # copies of shipped specs
    (tmp_path / "rel" / "mjcf" / "robot.xml").write_text("<mujoco><worldbody><body>")
    with pytest.raises(SpecError, match="cannot load model .*robot.xml: XML parse error") as err:
        make_env(load_spec(tmp_path / "rel" / "my_robot.yaml"))
    assert "\n" not in str(err.value)
