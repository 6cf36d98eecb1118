"""RL experts (stable-baselines3) on the real Hopper env: resumable training, ONNX export with
parity to SB3, the nominal-return JSON, the DRBC-protocol dataset and the robustness bench's use
of the committed expert. Runs are a few hundred steps: they test the plumbing, not the return."""

import csv
import json
import shutil

import numpy as np
import pytest
from conftest import REPO, run_droil

from droil_ros import experts
from droil_ros.bench import robustness
from droil_ros.data.dataset import load_dataset
from droil_ros.errors import DroilError
from droil_ros.policy.runtime import OnnxPolicy
from droil_ros.resources import share_dir
from droil_ros.robots import load_spec
from droil_ros.sim.envs import make_env

TINY = dict(learning_starts=50, eval_every=50, eval_episodes=1, buffer_size=1000)


@pytest.fixture(scope="module")
def hopper_run(tmp_path_factory):
    """A 100-step TD3 run of the hopper, resumed to 150 steps, and its export."""
    root = tmp_path_factory.mktemp("expert")
    lines = []
    first = experts.train("hopper", 100, run_dir=root / "run", seed=0, command="first", log=lines.append,
                          **TINY)
    first = dict(first)
    state = experts.train("hopper", 150, run_dir=root / "run", log=lines.append)
    policy = experts.export("hopper", root / "hopper.onnx", root / "run", which="last")
    return {"root": root, "run": root / "run", "first": first, "state": state, "lines": lines,
            "policy": policy}


def observations(n: int = 64) -> np.ndarray:
    """Real Hopper observations (a short zero-torque rollout) plus random ones."""
    env = make_env("hopper")
    obs, _ = env.reset(seed=0)
    rows = [obs]
    for _ in range(n // 2 - 1):
        obs, *_ = env.step(np.zeros(3))
        rows.append(obs)
    rows.extend(np.random.default_rng(0).normal(0, 2, (n - len(rows), len(obs))))
    return np.asarray(rows, dtype=np.float32)


def test_train_checkpoints_and_resume_continues(hopper_run):
    run, first, state = hopper_run["run"], hopper_run["first"], hopper_run["state"]
    assert first["steps"] == 100 and state["steps"] == 150
    assert any(line.startswith(f"resumed {run} at 100 steps") for line in hopper_run["lines"])
    for name in (experts.CHECKPOINT, experts.BUFFER, experts.STATE, experts.BEST, experts.CURVE):
        assert (run / name).is_file(), name
    saved = json.loads((run / experts.STATE).read_text())
    assert saved["steps"] == 150 and saved["algo"] == "td3"
    assert saved["robot_hash"] == load_spec("hopper").hash
    assert saved["config"]["learning_starts"] == 50  # the run's config survives the resume
    assert saved["command"] == "first" and saved["wall_seconds"] >= first["wall_seconds"]
    rows = list(csv.DictReader((run / experts.CURVE).open()))
    assert [int(r["steps"]) for r in rows] == [50, 100, 150]
    model, _ = experts.load_run("hopper", run, which="last")
    assert model.num_timesteps == 150 and model.replay_buffer.size() == 0  # buffer lives beside it
    from stable_baselines3.common.save_util import load_from_pkl

    assert load_from_pkl(run / experts.BUFFER).size() == 150


def test_export_matches_sb3_predict(hopper_run):
    spec = load_spec("hopper")
    policy = OnnxPolicy(hopper_run["policy"], spec)
    meta = policy.metadata
    assert meta["learner"] == "expert_td3" and meta["train_steps"] == 150 and meta["robot_hash"] == spec.hash
    assert meta["wall_seconds"] == hopper_run["state"]["wall_seconds"] and meta["command"] == "first"
    model, _ = experts.load_run("hopper", hopper_run["run"], which="last")
    obs = observations()
    expected = model.predict(obs, deterministic=True)[0]
    assert np.abs(expected).max() > 0.05  # not a trivially zero policy
    np.testing.assert_allclose(policy(obs), expected, atol=1e-5)


def test_sac_export_matches_sb3_predict(tmp_path):
    experts.train("hopper", 40, algo="sac", run_dir=tmp_path / "sac", log=lambda _: None,
                  learning_starts=20, eval_every=40, eval_episodes=1, buffer_size=1000)
    path = experts.export("hopper", tmp_path / "sac.onnx", tmp_path / "sac")
    model, state = experts.load_run("hopper", tmp_path / "sac")
    meta = OnnxPolicy(path).metadata
    best = [r for r in csv.DictReader((tmp_path / "sac" / experts.CURVE).open())
            if int(r["steps"]) == state["best_steps"]]
    assert meta["train_steps"] == state["best_steps"] and meta["checkpoint"] == "best"
    assert meta["wall_seconds"] == float(best[0]["wall_seconds"])
    obs = observations()
    np.testing.assert_allclose(OnnxPolicy(path)(obs), model.predict(obs, deterministic=True)[0], atol=1e-5)


def test_eval_json_and_cli_consumers(hopper_run, tmp_path):
    result = experts.evaluate("hopper", hopper_run["policy"], episodes=2)
    assert result["episodes"] == 2 and len(result["episode_returns"]) == 2
    assert result["return_mean"] == pytest.approx(np.mean(result["episode_returns"]), abs=0.01)
    assert result["algo"] == "td3" and result["steps_trained"] == 150 and result["target"] == 3000.0
    assert result["reached_target"] is False and result["eval_seeds"] == [1000, 1001]
    assert result["command"] == "first && droil expert export --robot hopper"
    path = experts.write_report(result, tmp_path / "hopper.onnx")
    assert path.name == "hopper.json" and json.loads(path.read_text()) == result
    # the expert is an ordinary droil policy for the rest of the CLI
    proc = run_droil("sim", "--robot", "hopper", "--controller", str(hopper_run["policy"]),
                     "--seconds", "0.5")
    assert proc.returncode == 0, proc.stderr
    assert "hopper/run" in proc.stdout


def test_dataset_command_writes_requested_transitions(hopper_run, tmp_path):
    out = tmp_path / "d.npz"
    proc = run_droil("expert", "dataset", "--robot", "hopper", "--policy", str(hopper_run["policy"]),
                     "--size", "300", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    data = load_dataset(out, load_spec("hopper"))
    assert len(data) == 300 and data.meta["robot_hash"] == load_spec("hopper").hash
    assert data.episode_starts[0] and data.n_episodes > 1  # the tiny expert falls: several episodes
    assert data.timeouts[-1] or data.terminals[-1]  # the cut ends the last episode
    again = experts.dataset("hopper", 300, hopper_run["policy"], progress=False)
    assert again.hash == data.hash  # deterministic rollouts, fixed seeds


def test_robustness_bench_uses_the_committed_expert(hopper_run, tmp_path, monkeypatch):
    """With a share folder holding the expert, the bench makes DRBC's 2000 transitions from it;
    without one, the error names the commands that make it."""
    share = tmp_path / "share"
    shutil.copytree(REPO / "config", share / "config")
    monkeypatch.setenv("DROIL_SHARE", str(share))
    share_dir.cache_clear()
    try:
        with pytest.raises(DroilError, match="droil expert train --robot hopper"):
            robustness.expert_dataset("hopper", tmp_path / "w0", seed=0)
        (share / "models" / "experts").mkdir(parents=True)
        shutil.copy(hopper_run["policy"], share / "models" / "experts" / "hopper.onnx")
        (tmp_path / "w1").mkdir()
        data = robustness.expert_dataset("hopper", tmp_path / "w1", seed=0)
    finally:
        monkeypatch.delenv("DROIL_SHARE")
        share_dir.cache_clear()
    assert len(data) == experts.DATASET_SIZES["hopper"] == 2000
    assert "hopper.onnx" in data.meta["source"] and (tmp_path / "w1" / "expert_seed0.npz").is_file()


def test_bad_input(hopper_run, tmp_path):
    with pytest.raises(DroilError, match="unknown robot 'nope'"):
        experts.train("nope", 10)
    with pytest.raises(DroilError, match="LQR expert"):
        experts.export("wheel_legged")
    with pytest.raises(DroilError, match="no best checkpoint .*droil expert train --robot hopper"):
        experts.export("hopper", tmp_path / "x.onnx", run_dir=tmp_path / "empty")
    with pytest.raises(DroilError, match="no expert policy .*droil expert export --robot hopper"):
        experts.dataset("hopper", expert=tmp_path / "missing.onnx")
    with pytest.raises(DroilError, match="holds a td3 run"):
        experts.train("hopper", 400, algo="sac", run_dir=hopper_run["run"])
    with pytest.raises(DroilError, match="unknown expert algorithm 'ppo'"):
        experts.train("hopper", 10, algo="ppo", run_dir=tmp_path / "ppo")
    with pytest.raises(DroilError, match="unknown expert config keys: lr"):
        experts.train("hopper", 10, run_dir=tmp_path / "lr", lr=1.0)
    proc = run_droil("expert", "train", "--robot", "wheel_legged")
    assert proc.returncode == 2 and "LQR expert" in proc.stderr and len(proc.stderr.splitlines()) == 1


@pytest.mark.parametrize("report", sorted((REPO / "models" / "experts").glob("*.json")), ids=lambda p: p.stem)
def test_committed_expert_gives_the_return_its_json_reports(report):
    """The committed numbers come from the committed file: its first evaluation episode, run
    again, returns exactly what the JSON says (deterministic policy and physics)."""
    saved = json.loads(report.read_text())
    again = experts.evaluate(saved["robot"], report.with_suffix(".onnx"), episodes=1,
                             seed=saved["eval_seeds"][0])
    assert again["policy_id"] == saved["policy_id"] and saved["robot_hash"] == load_spec(saved["robot"]).hash
    assert again["episode_returns"][0] == pytest.approx(saved["episode_returns"][0], abs=0.01)
    assert saved["return_mean"] == pytest.approx(np.mean(saved["episode_returns"]), abs=0.01)
