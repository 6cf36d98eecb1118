"""A user's robot from its own folder, through the command line, without editing package files:
DROIL_ROBOT_PATH finds it, the dataset and the policy carry its spec, a changed spec is refused."""

import numpy as np
import onnx
import pytest
import yaml
from conftest import run_droil

from droil_ros.data import load_dataset
from droil_ros.data.dataset import ARRAYS, DatasetError, TransitionDataset, concatenate
from droil_ros.policy import OnnxPolicy
from droil_ros.robots import load_spec


def user_spec(folder, robot_id, model):
    """wheel_legged under another id; ``model``: None (no model) or a path written as is."""
    raw = yaml.safe_load(load_spec("wheel_legged").source.read_text())
    raw["id"] = robot_id
    if model is None:
        del raw["model"]
    else:
        raw["model"] = model
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{robot_id}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture
def robots(tmp_path, monkeypatch):
    """A folder of user specs on DROIL_ROBOT_PATH: 'rover' without a model, 'twin' with a model
    beside it (a relative path)."""
    folder = tmp_path / "my_robots"
    user_spec(folder, "rover", None)
    user_spec(folder, "twin", "twin.xml")
    (folder / "twin.xml").write_text(load_spec("wheel_legged").model_path.read_text())
    monkeypatch.setenv("DROIL_ROBOT_PATH", str(folder))
    return folder


def one_line_exit_2(proc, message):
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def onnx_meta(path):
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def test_a_robot_without_a_model_trains_from_its_dataset_alone(robots, tmp_path, monkeypatch):
    """Before: 'droil train' said "unknown robot" for a user's dataset (no --robot; DROIL_SHARE hid
    the shipped robots) and a spec needed a model. Now the dataset carries the spec."""
    spec = load_spec("rover")
    assert spec.model_path is None
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(300, spec.obs_dim))
    dataset = TransitionDataset.from_arrays(spec, "test", observations=obs,
                                            actions=rng.uniform(-1, 1, (300, 1)),
                                            next_observations=obs + 0.01)
    data = dataset.save(tmp_path / "rover.npz")
    one_line_exit_2(run_droil("sim", "--robot", "rover"), "robot 'rover' has no model")

    monkeypatch.delenv("DROIL_ROBOT_PATH")  # the dataset is enough
    policy = tmp_path / "rover.onnx"
    proc = run_droil("train", "--algo", "bc", "--data", str(data), "--out", str(policy),
                     "--steps", "5", "--config", "fast")
    assert proc.returncode == 0, proc.stderr
    meta = onnx_meta(policy)
    assert (meta["robot_id"], meta["robot_hash"]) == ("rover", spec.hash)
    assert meta["robot_spec"] == (robots / "rover.yaml").read_text()
    assert OnnxPolicy(policy, spec)(obs[:2]).shape == (2, 1)


def test_a_robot_without_a_model_converts_a_bag(robots, tmp_path):
    from test_bag import scenario, write_rosbags

    bag, data = write_rosbags(tmp_path / "bag", scenario()), tmp_path / "rover.npz"
    proc = run_droil("dataset", "from-bag", str(bag), "--robot", "rover", "--out", str(data))
    assert proc.returncode == 0, proc.stderr
    dataset = load_dataset(data)
    assert dataset.robot_id == "rover" and len(dataset) > 100
    assert dataset.meta["robot_spec"] == (robots / "rover.yaml").read_text()


def test_collect_train_and_a_changed_spec_refused(robots, tmp_path, monkeypatch):
    """A relative model resolves beside the spec (before: against the package). A dataset of one
    spec version no longer trains under another (before: only id and dims were compared)."""
    data, policy = tmp_path / "twin.npz", tmp_path / "twin.onnx"
    proc = run_droil("collect", "--robot", "twin", "--episodes", "1", "--seconds", "0.5",
                     "--out", str(data))
    assert proc.returncode == 0, proc.stderr
    spec = load_spec("twin")
    assert load_dataset(data).meta["robot_spec"] == spec.text
    proc = run_droil("train", "--algo", "bc", "--data", str(data), "--out", str(policy),
                     "--steps", "5", "--config", "fast", "--robot", "twin")
    assert proc.returncode == 0, proc.stderr
    assert onnx_meta(policy)["robot_spec"] == spec.text
    grid = tmp_path / "grid.yaml"
    grid.write_text("robot: twin\ntask: stand\nepisodes: 1\nseconds: 0.2\n"
                    "perturbations:\n  mass: {x: [1.0], perturb: 'mass={x}'}\n")
    proc = run_droil("eval", "--policy", str(policy), "--robot", str(spec.source), "--grid", str(grid))
    assert proc.returncode == 0, proc.stderr  # before: the sim took the grid's id only

    changed = spec.source.read_text().replace("high: 2.0", "high: 3.0")
    assert changed != spec.text
    spec.source.write_text(changed)
    proc = run_droil("train", "--algo", "bc", "--data", str(data), "--out", str(policy),
                     "--steps", "5", "--config", "fast", "--robot", "twin")
    one_line_exit_2(proc, f"dataset was made with robot 'twin' hash {spec.hash} ({spec.source}), "
                          f"not 'twin' hash {load_spec('twin').hash} ({spec.source}): another version")
    monkeypatch.delenv("DROIL_ROBOT_PATH")
    proc = run_droil("train", "--algo", "bc", "--data", str(data), "--out", str(policy),
                     "--steps", "5", "--config", "fast")
    assert proc.returncode == 0, proc.stderr  # with no --robot, the dataset's own version


@pytest.mark.parametrize("case, message", [
    ("unknown_key", "unknown key 'topics'"),
    ("broken_model", "cannot load model"),
    ("ambiguous", "robot 'wheel_legged' is ambiguous"),
])
def test_bad_user_robots_are_one_line(robots, case, message):
    """Before: an unknown key was ignored and a broken model ended in a traceback."""
    if case == "unknown_key":
        path = robots / "twin.yaml"
        path.write_text(path.read_text() + "topics: {state: /js}\n")
        message += " (known: id, description"
        assert str(path) in run_droil("sim", "--robot", "twin").stderr
    elif case == "broken_model":
        (robots / "twin.xml").write_text("<mujoco><worldbody>")
    else:
        user_spec(robots, "wheel_legged", None)
    robot = "wheel_legged" if case == "ambiguous" else "twin"
    one_line_exit_2(run_droil("sim", "--robot", robot), message)


def test_datasets_of_two_spec_versions_do_not_mix(lqr_dataset):
    other = TransitionDataset(**{k: getattr(lqr_dataset, k) for k in ARRAYS},
                              meta=dict(lqr_dataset.meta, robot_hash="0" * 16))
    with pytest.raises(DatasetError, match="different versions of its spec"):
        concatenate([lqr_dataset, other], "mixed")


def test_datasets_without_an_embedded_spec_load_by_id(lqr_dataset):
    old = TransitionDataset(**{k: getattr(lqr_dataset, k) for k in ARRAYS}, meta=dict(lqr_dataset.meta))
    del old.meta["robot_spec"], old.meta["robot_spec_file"]
    assert old.robot_spec().hash == load_spec("wheel_legged").hash == lqr_dataset.robot_spec().hash
