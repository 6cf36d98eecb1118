"""Shared fixtures: tests run in a temporary cwd (MuJoCo appends MUJOCO_LOG.TXT to the cwd)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _in_tmp_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def run_droil(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the installed ``droil`` command line as a user would."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "droil_ros.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


@pytest.fixture(autouse=True, scope="session")
def _torch_single_thread():
    import torch

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)


@pytest.fixture(scope="session")
def lqr_dataset():
    """A small LQR dataset of the wheel-legged robot (4 episodes of 2 s from random tilts)."""
    from droil_ros.data.collect import collect

    return collect("wheel_legged", "lqr", episodes=4, seconds=2.0, seed=0, progress=False)


@pytest.fixture(scope="session")
def quality_mixed_dataset(lqr_dataset):
    """The LQR expert data plus noisy-LQR data tagged 'other' (DWBC, D2MIL)."""
    from droil_ros.data.collect import collect
    from droil_ros.data.dataset import concatenate

    noisy = collect("wheel_legged", "noisy_lqr", episodes=4, seconds=2.0, seed=10, noise=0.5, progress=False)
    return concatenate([lqr_dataset, noisy], "mixed")


@pytest.fixture(scope="session")
def domain_mixed_dataset(lqr_dataset):
    """Target: the nominal robot's LQR data; source: the same expert on a simulator with the wrong
    mass and friction (DROCO)."""
    from droil_ros.data.collect import collect
    from droil_ros.data.dataset import concatenate

    source = collect("wheel_legged", "lqr", episodes=3, seconds=2.0, seed=5, perturb=SOURCE_SHIFT,
                     domain="source", progress=False)
    return concatenate([source, lqr_dataset], "mixed")


SOURCE_SHIFT = "mass=2,friction=0.5"
QUALITY_LEARNERS = ("dwbc", "d2mil")  # learn from data tagged expert / other
DOMAIN_LEARNERS = ("droco",)  # learn from data tagged source / target


@pytest.fixture
def data_for(lqr_dataset, quality_mixed_dataset, domain_mixed_dataset):
    """The test data a learner needs: LQR demonstrations, or the mixed set its tags call for."""
    return lambda name: (quality_mixed_dataset if name in QUALITY_LEARNERS
                         else domain_mixed_dataset if name in DOMAIN_LEARNERS else lqr_dataset)


def assert_exported_member_matches(learner, spec, tmp_path) -> None:
    """Member 1 of a learner trained with 2 seeds, exported: ONNX Runtime equals torch (1e-5),
    and both equal the training network's deterministic action (1e-6)."""
    import numpy as np
    import torch

    from droil_ros.policy import OnnxPolicy, export_onnx

    module = learner.export_modules()[1]
    path = export_onnx(module, tmp_path / f"{learner.name}.onnx", spec, {"learner": learner.name})
    obs = np.random.default_rng(0).normal(size=(100, spec.obs_dim)).astype(np.float32) * 0.5
    with torch.no_grad():
        expected = module(torch.as_tensor(obs)).numpy()
        u = learner.act(learner.normalise(torch.as_tensor(obs)).expand(2, -1, -1))[1]
    np.testing.assert_allclose(OnnxPolicy(path, spec)(obs), expected, atol=1e-5)
    np.testing.assert_allclose(expected, (u * spec.action_high[0]).numpy(), atol=1e-6)
