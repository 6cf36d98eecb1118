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
