"""Minari interchange: exact round trips, foreign datasets, and clear errors."""

import json
import os
import sys

import numpy as np
import pytest

from droil_ros.data import DatasetError, TransitionDataset
from droil_ros.data.collect import collect
from droil_ros.data.dataset import ARRAYS
from droil_ros.robots import load_spec
from droil_ros.sim.envs import make_env

pytest.importorskip("minari")
pytest.importorskip("h5py")

from droil_ros.data.minari_io import from_minari, to_minari  # noqa: E402

WHEEL = load_spec("wheel_legged")


@pytest.fixture(autouse=True)
def _default_root(tmp_path, monkeypatch):
    """Even a call without ``root`` must never touch ~/.minari."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "default-root"))


@pytest.fixture(scope="module")
def lqr():
    return collect("wheel_legged", "lqr", episodes=3, seconds=1.0, progress=False)


@pytest.fixture(scope="module")
def falls():
    """Noisy LQR at seed 1: two episodes end in a fall (terminal), one in a timeout."""
    data = collect("wheel_legged", "noisy_lqr", episodes=3, seconds=1.0, noise=3.0, seed=1,
                   progress=False)
    assert data.terminals.sum() == 2 and data.timeouts.sum() == 1
    return data


def hopper_random(episodes=2, max_steps=40, seed=0) -> TransitionDataset:
    """Random actions on Hopper; the last episode is cut at ``max_steps`` with no timeout flag,
    as a recording stopped by hand."""
    env = make_env("hopper")
    rng = np.random.default_rng(seed)
    rows = {k: [] for k in ("observations", "actions", "next_observations", "rewards",
                            "terminals", "episode_starts")}
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        for step in range(max_steps):
            action = rng.uniform(-1, 1, 3)
            next_obs, reward, terminated, _, _ = env.step(action)
            for key, value in zip(rows, (obs, action, next_obs, reward, terminated, step == 0),
                                  strict=True):
                rows[key].append(value)
            obs = next_obs
            if terminated:
                break
    return TransitionDataset.from_arrays(env.robot, "hopper random", **rows)


def assert_same(a: TransitionDataset, b: TransitionDataset):
    for name, dtype in ARRAYS.items():
        x, y = getattr(a, name), getattr(b, name)
        assert y.dtype == dtype, name
        assert x.shape == y.shape and x.tobytes() == y.tobytes(), name  # bit for bit, NaN included
    assert a.meta == b.meta


def test_round_trip_lqr(lqr, tmp_path):
    path = to_minari(lqr, "droil/wheel_legged-lqr-v0", root=tmp_path)
    assert path == tmp_path / "droil" / "wheel_legged-lqr-v0" and path.is_dir()
    assert_same(lqr, from_minari("droil/wheel_legged-lqr-v0", root=tmp_path, robot=WHEEL))
    assert not (tmp_path / "default-root" / "droil").exists()
    assert os.environ["MINARI_DATASETS_PATH"] == str(tmp_path / "default-root")


def load_plain(root, dataset_id):
    """The dataset as any Minari user sees it."""
    import minari

    os.environ["MINARI_DATASETS_PATH"] = str(root)  # restored by the autouse fixture
    return minari.load_dataset(dataset_id)


def test_round_trip_with_falls_is_plain_minari(falls, tmp_path):
    to_minari(falls, "droil/wheel_legged-noisy-v0", root=tmp_path)
    assert_same(falls, from_minari("droil/wheel_legged-noisy-v0", root=tmp_path))
    episodes = list(load_plain(tmp_path, "droil/wheel_legged-noisy-v0").iterate_episodes())
    ends = np.flatnonzero(falls.terminals | falls.timeouts)
    assert [bool(e.terminations[-1]) for e in episodes] == falls.terminals[ends].tolist()
    assert [bool(e.truncations[-1]) for e in episodes] == falls.timeouts[ends].tolist()
    assert all(len(e.observations) == len(e.actions) + 1 for e in episodes)
    assert episodes[0].observations.dtype == np.float32


def test_round_trip_hopper_with_nan_rewards_and_a_cut(tmp_path):
    data = hopper_random()
    data.rewards[::3] = np.nan
    assert not data.terminals[-1] and not data.timeouts[-1]  # the cut episode
    to_minari(data, "droil/hopper-random-v0", root=tmp_path)
    back = from_minari("droil/hopper-random-v0", root=tmp_path, robot=load_spec("hopper"))
    assert_same(data, back)
    plain = load_plain(tmp_path, "droil/hopper-random-v0")
    assert plain.spec.env_spec.id == "Hopper-v5" and plain.total_episodes == 2
    assert plain[1].truncations[-1]  # the cut is a truncation for Minari users


def test_gaps_and_tag_changes_split_episodes_and_round_trip(lqr, tmp_path):
    """Two gaps in episode 0 (rows dropped, as between bags), episode 1 without its true start
    and with a quality change inside: 3 + 2 + 1 Minari episodes."""
    keep = np.ones(len(lqr), bool)
    keep[50:60] = keep[120:130] = keep[200:210] = False
    data = lqr.select(keep, source="gappy")
    data.quality[250:] = 1
    to_minari(data, "droil/gappy-v0", root=tmp_path)
    assert_same(data, from_minari("droil/gappy-v0", root=tmp_path))
    assert load_plain(tmp_path, "droil/gappy-v0").total_episodes == 3 + 2 + 1


def strip_droil_meta(path):
    file = path / "data" / "metadata.json"
    metadata = json.loads(file.read_text())
    del metadata["droil"]
    file.write_text(json.dumps(metadata))


def test_foreign_dataset_needs_the_robot(falls, tmp_path):
    strip_droil_meta(to_minari(falls, "other/balancer-v0", root=tmp_path))
    with pytest.raises(DatasetError, match="not written by droil_ros"):
        from_minari("other/balancer-v0", root=tmp_path)
    dims = f"dims {WHEEL.obs_dim}/{WHEEL.act_dim}, robot 'hopper' has 11/3"
    with pytest.raises(DatasetError, match=dims):
        from_minari("other/balancer-v0", root=tmp_path, robot=load_spec("hopper"))
    back = from_minari("other/balancer-v0", root=tmp_path, robot=WHEEL)
    for name in ("observations", "actions", "next_observations", "rewards", "terminals",
                 "timeouts", "episode_starts"):
        np.testing.assert_array_equal(getattr(back, name), getattr(falls, name), err_msg=name)
    assert back.meta["source"] == "minari other/balancer-v0"
    back.check_trainable(WHEEL, need_rewards=True)


def test_errors(lqr, tmp_path, monkeypatch):
    with pytest.raises(DatasetError, match="no Minari dataset 'droil/missing-v0'"):
        from_minari("droil/missing-v0", root=tmp_path)
    with pytest.raises(DatasetError, match="bad Minari dataset id"):
        to_minari(lqr, "no version", root=tmp_path)
    to_minari(lqr, "droil/once-v0", root=tmp_path)
    with pytest.raises(DatasetError, match="already exists"):
        to_minari(lqr, "droil/once-v0", root=tmp_path)
    with pytest.raises(DatasetError, match="is for robot 'wheel_legged', not 'hopper'"):
        from_minari("droil/once-v0", root=tmp_path, robot=load_spec("hopper"))
    with pytest.raises(DatasetError, match="empty"):
        to_minari(lqr.select(np.zeros(len(lqr), bool)), "droil/empty-v0", root=tmp_path)
    assert not (tmp_path / "droil" / "empty-v0").exists()
    monkeypatch.setitem(sys.modules, "minari", None)
    with pytest.raises(DatasetError, match=r"pip install \"minari\[hdf5\]\""):
        from_minari("droil/once-v0", root=tmp_path)
