"""ONNX policies: export matches torch, metadata round-trips, outputs are safe, bad files fail clearly."""

import json
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from droil_ros.errors import DroilError
from droil_ros.policy import OnnxPolicy, PolicyError, export_onnx
from droil_ros.policy.runtime import PolicyOutputError
from droil_ros.robots import load_spec

torch.set_num_threads(1)
METADATA = {"learner": "bc", "config": {"epochs": 3, "lr": 1e-3}, "dataset_hash": "0123456789", "seed": 7}


class TinyPolicy(torch.nn.Module):
    """What a learner builds: normalise raw obs, MLP, tanh, scale to the robot's action limits."""

    def __init__(self, spec, seed=0, bounded=True):
        super().__init__()
        torch.manual_seed(seed)
        self.net = torch.nn.Sequential(torch.nn.Linear(spec.obs_dim, 32), torch.nn.ReLU(),
                                       torch.nn.Linear(32, spec.act_dim))
        self.register_buffer("obs_mean", torch.randn(spec.obs_dim))
        self.register_buffer("obs_std", torch.rand(spec.obs_dim) + 0.5)
        low, high = (torch.tensor(v, dtype=torch.float32) for v in (spec.action_low, spec.action_high))
        self.register_buffer("half_range", (high - low) / 2)
        self.register_buffer("mid", (high + low) / 2)
        self.bounded = bounded

    def forward(self, obs):
        y = self.net((obs - self.obs_mean) / self.obs_std)
        # unbounded: a deliberately bad policy that overshoots, to exercise the runtime's clipping
        return self.mid + self.half_range * (torch.tanh(y) if self.bounded else 100.0 * y)


@pytest.fixture(scope="module")
def wheel():
    return load_spec("wheel_legged")


@pytest.fixture(scope="module")
def exported(wheel, tmp_path_factory):
    module = TinyPolicy(wheel)
    path = export_onnx(module, tmp_path_factory.mktemp("policy") / "policy.onnx", wheel, METADATA)
    return module, path


def random_obs(n, dim, seed=1):
    return np.random.default_rng(seed).normal(scale=2.0, size=(n, dim)).astype(np.float32)


def test_onnx_matches_torch_batch_and_single(exported, wheel):
    module, path = exported
    policy = OnnxPolicy(path, wheel)
    obs = random_obs(100, wheel.obs_dim)
    with torch.no_grad():
        expected = module(torch.from_numpy(obs)).numpy()
    batch = policy(obs)
    assert batch.shape == (100, wheel.act_dim) and batch.dtype == np.float64
    np.testing.assert_allclose(batch, expected, atol=1e-5)
    singles = np.stack([policy(o) for o in obs])
    assert singles.shape == (100, wheel.act_dim)
    np.testing.assert_allclose(singles, expected, atol=1e-5)
    assert policy(obs[0].astype(np.float64).tolist()).shape == (wheel.act_dim,)  # lists and float64 work
    # the control loop's call (pre-bound buffers): the same actions, each a new array
    acts = [policy.act(o.astype(np.float64)) for o in obs]
    np.testing.assert_array_equal(np.stack(acts), singles)
    assert acts[0] is not acts[1] and acts[0].dtype == np.float64


def test_metadata_round_trip(exported, wheel):
    _, path = exported
    policy = OnnxPolicy(path)
    meta = policy.metadata
    assert policy.robot_id == meta["robot_id"] == "wheel_legged"
    assert meta["robot_hash"] == wheel.hash
    assert meta["obs_names"] == wheel.obs_names and meta["action_names"] == wheel.action_names
    assert meta["action_low"] == wheel.action_low.tolist()
    assert meta["action_high"] == wheel.action_high.tolist()
    assert meta["control_rate_hz"] == wheel.control_rate_hz
    assert meta["format_version"] == 1
    assert meta["learner"] == "bc" and meta["config"] == METADATA["config"] and meta["seed"] == 7
    assert meta["dataset_hash"] == "0123456789"  # a digit-only string stays a string
    assert (policy.obs_dim, policy.act_dim) == (wheel.obs_dim, wheel.act_dim)
    assert policy.path == path
    assert policy.policy_id.startswith("policy-") and len(policy.policy_id) == len("policy-") + 8
    assert OnnxPolicy(path).policy_id == policy.policy_id


def test_export_is_one_self_contained_file(exported):
    _, path = exported
    assert os.listdir(path.parent) == ["policy.onnx"]  # no .data sidecar, no leftover temp file
    model = onnx.load(path, load_external_data=False)
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    assert [i.name for i in model.graph.input] == ["obs"]
    assert [o.name for o in model.graph.output] == ["action"]


def test_actions_stay_within_limits_and_finite(wheel, tmp_path):
    path = export_onnx(TinyPolicy(wheel, bounded=False), tmp_path / "wild.onnx", wheel, {})
    policy = OnnxPolicy(path, wheel)
    actions = policy(random_obs(1000, wheel.obs_dim) * 100)
    assert np.all(actions >= wheel.action_low) and np.all(actions <= wheel.action_high)
    assert np.any(actions == wheel.action_high) and np.any(actions == wheel.action_low)  # clipping was needed

    # NaN propagates through the graph (Gemm, Relu, Tanh keep NaN); the runtime turns it into 0
    nan_obs = np.full((1, wheel.obs_dim), np.nan, dtype=np.float32)
    raw = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"obs": nan_obs})[0]
    assert np.isnan(raw).all()
    np.testing.assert_array_equal(policy(nan_obs[0]), np.zeros(wheel.act_dim))
    np.testing.assert_array_equal(policy.act(nan_obs[0]), np.zeros(wheel.act_dim))
    with pytest.raises(PolicyOutputError):
        policy.act(nan_obs[0], strict=True)
    np.testing.assert_array_equal(policy.act(random_obs(1, wheel.obs_dim)[0] * 100),
                                  policy(random_obs(1, wheel.obs_dim)[0] * 100))
    inf_obs = np.array([np.inf, 0, 0, 0])
    assert np.isfinite(policy(inf_obs)).all() and np.isfinite(policy.act(inf_obs)).all()


def missing(path, out):
    return out


def truncated(path, out):
    out.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return out


def random_bytes(path, out):
    out.write_bytes(np.random.default_rng(0).bytes(4096))
    return out


def without_metadata(path, out):
    model = onnx.load(path)
    del model.metadata_props[:]
    onnx.save(model, out)
    return out


def tampered(**props):
    def write(path, out):
        model = onnx.load(path)
        for prop in model.metadata_props:
            if prop.key in props:
                prop.value = props[prop.key]
        onnx.save(model, out)
        return out
    return write


@pytest.mark.parametrize("make_file, reason", [
    (missing, "policy file not found"),
    (truncated, "not a valid ONNX model"),
    (random_bytes, "not a valid ONNX model"),
    (without_metadata, "not a droil policy: no robot_id in metadata"),
    (tampered(robot_hash="0000000000000000"),
     "policy was trained for a different version of robot spec 'wheel_legged' "
     "(hash 0000000000000000, expected"),
    (tampered(obs_names=json.dumps(["a", "b", "c", "d", "e"])), "metadata says float (batch, 5)"),
])
def test_bad_files_fail_with_a_clear_reason(exported, wheel, tmp_path, make_file, reason):
    path = make_file(exported[1], tmp_path / "bad.onnx")
    with pytest.raises(PolicyError) as info:
        OnnxPolicy(path, wheel)
    message = str(info.value)
    assert reason in message and str(path) in message and "\n" not in message
    assert isinstance(info.value, DroilError)


def test_policy_for_another_robot_is_refused(wheel, tmp_path):
    hopper = load_spec("hopper")
    path = export_onnx(TinyPolicy(hopper), tmp_path / "hopper.onnx", hopper, {})
    assert OnnxPolicy(path, hopper).act_dim == 3
    with pytest.raises(PolicyError, match="policy is for robot 'hopper', this is 'wheel_legged'"):
        OnnxPolicy(path, wheel)
    with pytest.raises(PolicyError, match="this is 'wheel_legged'"):
        OnnxPolicy(path).validate_against(wheel)  # the hot-swap path


@pytest.mark.parametrize("shape", [(3,), (5,), (2, 5), (1, 2, 4), ()])
def test_wrong_observation_shape_is_refused(exported, wheel, shape):
    policy = OnnxPolicy(exported[1], wheel)
    with pytest.raises(PolicyError, match=r"policy expects \(4,\) or \(batch, 4\)"):
        policy(np.zeros(shape))
    with pytest.raises(PolicyError, match=r"policy expects \(4,\)"):
        policy.act(np.zeros(shape))
