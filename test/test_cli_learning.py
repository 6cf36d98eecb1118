"""collect -> train -> eval from the command line, and the bad inputs of the learning core."""

import csv
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import run_droil

from droil_ros.data import load_dataset


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A dataset collected and a BC policy trained through the CLI (2 seeds, fast preset)."""
    work = tmp_path_factory.mktemp("cli")
    data = work / "lqr.npz"
    proc = run_droil("collect", "--robot", "wheel_legged", "--expert", "lqr", "--episodes", "3",
                     "--seconds", "2", "--out", str(data), "--seed", "1")
    assert proc.returncode == 0, proc.stderr
    proc = run_droil("train", "--algo", "bc", "--data", str(data), "--out", str(work / "bc.onnx"),
                     "--steps", "60", "--seeds", "2", "--config", "fast", "--set", "log_every=20")
    assert proc.returncode == 0, proc.stderr
    return work


def test_collect_writes_a_tagged_dataset(trained):
    dataset = load_dataset(trained / "lqr.npz")
    assert len(dataset) == 3 * 400 and dataset.n_episodes == 3
    assert dataset.timeouts.sum() == 3 and not dataset.terminals.any()
    assert dataset.meta["robot_id"] == "wheel_legged" and dataset.meta["has_rewards"]


def test_train_exports_one_policy_per_seed_with_a_csv_log(trained):
    for seed in (0, 1):
        model = onnx.load(str(trained / f"bc_seed{seed}.onnx"))
        meta = {p.key: p.value for p in model.metadata_props}
        assert meta["learner"] == "bc" and json.loads(meta["seed"]) == seed
        assert meta["dataset_hash"] == load_dataset(trained / "lqr.npz").hash
    rows = (trained / "bc.csv").read_text().splitlines()
    assert rows[0].startswith("step,seconds,lr,loss") and len(rows) == 1 + 3


def test_eval_writes_json_and_plot(trained, tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text("robot: wheel_legged\ntask: stand\nepisodes: 2\nseconds: 1\n"
                    "perturbations:\n  mass: {x: [1.0, 2.0], perturb: 'mass={x}'}\n")
    out = tmp_path / "eval.json"
    proc = run_droil("eval", "--policy", str(trained / "bc_seed0.onnx"), "lqr", "--grid", str(grid),
                     "--json", str(out), "--plot", str(tmp_path / "eval.png"))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert set(result["results"]) == {"bc_seed0", "lqr"}
    assert len(result["results"]["lqr"]["mass"]) == 2
    assert (tmp_path / "eval.png").stat().st_size > 1000
    assert "| bc_seed0 |" in proc.stdout


def bad_dataset(tmp_path, trained, mutate, name):
    dataset = load_dataset(trained / "lqr.npz")
    mutate(dataset)
    return str(dataset.save(tmp_path / f"{name}.npz"))


@pytest.mark.parametrize("case, message", [
    ("empty", "dataset is empty"),
    ("nan", "NaN/Inf in observations"),
    ("constant", "every action in the dataset is the same"),
    ("missing", "dataset file not found"),
    ("garbage", "cannot read dataset"),
    ("wrong_dims", "has 3 rows, expected"),
])
def test_train_rejects_bad_datasets(case, message, trained, tmp_path):
    if case == "empty":
        path = bad_dataset(tmp_path, trained, lambda d: None, "empty")
        d = load_dataset(path)
        path = str(d.select(np.zeros(len(d), bool)).save(tmp_path / "empty.npz"))
    elif case == "nan":
        path = bad_dataset(tmp_path, trained, lambda d: d.observations.__setitem__((3, 0), np.nan), "nan")
    elif case == "constant":
        path = bad_dataset(tmp_path, trained, lambda d: d.actions.__setitem__(slice(None), 0.1), "c")
    elif case == "missing":
        path = str(tmp_path / "nope.npz")
    elif case == "garbage":
        path = str(tmp_path / "garbage.npz")
        (tmp_path / "garbage.npz").write_bytes(b"\x00" * 100)
    else:
        d = load_dataset(trained / "lqr.npz")
        d.rewards = d.rewards[:3]
        np.savez(tmp_path / "dims.npz", meta=np.array(json.dumps(d.meta)),
                 **{k: getattr(d, k) for k in ("observations", "actions", "next_observations",
                                                "rewards", "terminals", "timeouts",
                                                "episode_starts", "domain", "quality")})
        path = str(tmp_path / "dims.npz")
    proc = run_droil("train", "--algo", "bc", "--data", path, "--out", str(tmp_path / "p.onnx"),
                     "--steps", "5", "--config", "fast")
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr


def test_dataset_of_another_robot(trained, tmp_path):
    hopper = tmp_path / "hopper.npz"
    proc = run_droil("collect", "--robot", "hopper", "--expert", "noisy_lqr", "--episodes", "1",
                     "--out", str(hopper))
    assert proc.returncode == 2 and "LQR needs a wheel balancing robot" in proc.stderr
    dataset = load_dataset(trained / "lqr.npz")
    dataset.meta["robot_id"] = "hopper"
    dataset.save(hopper)
    train = ("train", "--algo", "bc", "--data", str(hopper), "--out", str(tmp_path / "p.onnx"),
             "--steps", "5", "--config", "fast")
    proc = run_droil(*train)
    assert proc.returncode == 2
    assert "the dataset's spec is robot 'wheel_legged' hash" in proc.stderr  # it carries its spec
    del dataset.meta["robot_spec"]  # as written before datasets carried it: found by id
    dataset.save(hopper)
    proc = run_droil(*train)
    assert proc.returncode == 2
    assert "has obs/action dims 4/1, robot 'hopper' has 11/3" in proc.stderr


@pytest.mark.parametrize("case, message", [
    ("truncated", "not a valid ONNX model"),
    ("other_robot", "policy is for robot 'wheel_legged', this is 'hopper'"),
])
def test_eval_rejects_bad_policies(case, message, trained, tmp_path):
    policy = trained / "bc_seed0.onnx"
    robot = "wheel_legged"
    if case == "truncated":
        data = policy.read_bytes()
        policy = tmp_path / "truncated.onnx"
        policy.write_bytes(data[: len(data) // 2])
    else:
        robot = "hopper"
    proc = run_droil("eval", "--policy", str(policy), "--robot", robot, "--episodes", "1")
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_unknown_learner_and_bad_override(trained, tmp_path):
    data = str(trained / "lqr.npz")
    proc = run_droil("train", "--algo", "gail", "--data", data, "--out", str(tmp_path / "p.onnx"))
    assert proc.returncode == 2 and "unknown learner 'gail'" in proc.stderr
    proc = run_droil("train", "--algo", "bc", "--data", data, "--out", str(tmp_path / "p.onnx"),
                     "--set", "warp")
    assert proc.returncode == 2 and "--set expects key=value" in proc.stderr


def test_a_matching_run_is_reused_and_any_change_retrains(lqr_dataset, tmp_path):
    """Long benchmarks go on where they stopped: train_and_export(reuse=True) skips a run whose
    record (learner, config, source, data, robot, steps, seeds) matches and whose files exist."""
    from droil_ros.pipeline import train_and_export

    out, record = tmp_path / "bc.onnx", tmp_path / "bc.run.json"
    kwargs = dict(steps=20, n_seeds=2, seed=0, preset="fast", progress=False)
    first = train_and_export("bc", lqr_dataset, out, **kwargs)
    written = [p.stat().st_mtime_ns for p in (record, *first.policies)]
    again = train_and_export("bc", lqr_dataset, out, reuse=True, **kwargs)
    assert [p.stat().st_mtime_ns for p in (record, *again.policies)] == written  # not trained again
    assert again.policies == first.policies
    assert (again.steps, again.seconds) == (first.steps, first.seconds)
    assert again.final == json.loads(json.dumps(first.final, default=float))
    for change in ({"steps": 21}, {"seed": 1}, {"overrides": {"lr": 1e-4}}, {}):
        before = record.stat().st_mtime_ns
        train_and_export("bc", lqr_dataset, out, reuse=True, **{**kwargs, **change})
        assert record.stat().st_mtime_ns != before, change  # the record changed each time: retrained
    first.policies[1].unlink()  # a file lost: trained again
    train_and_export("bc", lqr_dataset, out, reuse=True, **kwargs)
    assert first.policies[1].is_file()


def test_a_run_killed_midway_goes_on_from_its_checkpoint(lqr_dataset, tmp_path, capsys):
    """reuse=True saves the whole learner to <out>.ckpt as it trains; run again, training goes on
    from there and ends where an uninterrupted run ends; a checkpoint of another run is dropped."""
    from droil_ros.pipeline import train_and_export
    from droil_ros.policy import OnnxPolicy

    kwargs = dict(steps=70, n_seeds=2, seed=0, preset="fast", progress=False, reuse=True)
    whole = train_and_export("bc_dyn_2phase", lqr_dataset, tmp_path / "whole.onnx", **kwargs)

    def die_at_the_end(row):
        if row["step"] == 70:
            raise KeyboardInterrupt

    out = tmp_path / "cut.onnx"
    with pytest.raises(KeyboardInterrupt):
        train_and_export("bc_dyn_2phase", lqr_dataset, out, callback=die_at_the_end, checkpoint_every=0.0,
                         **kwargs)
    checkpoint = tmp_path / "cut.ckpt"
    assert checkpoint.is_file() and not (tmp_path / "cut.run.json").exists()
    with pytest.raises(KeyboardInterrupt):  # the seed differs: not this run's checkpoint
        train_and_export("bc_dyn_2phase", lqr_dataset, out, callback=die_at_the_end,
                         **{**kwargs, "seed": 1})
    assert not checkpoint.exists()
    with pytest.raises(KeyboardInterrupt):
        train_and_export("bc_dyn_2phase", lqr_dataset, out, callback=die_at_the_end, checkpoint_every=0.0,
                         **kwargs)
    capsys.readouterr()
    steps = []
    resumed = train_and_export("bc_dyn_2phase", lqr_dataset, out,
                               callback=lambda row: steps.append(row["step"]), **kwargs)
    assert "going on from step 50" in capsys.readouterr().err
    assert steps == [70] and resumed.steps == 70 and not checkpoint.exists()
    assert [row["step"] for row in csv.DictReader(open(tmp_path / "cut.csv"))] == ["50", "70"]
    obs = lqr_dataset.observations[:64]
    for a, b in zip(whole.policies, resumed.policies, strict=True):
        np.testing.assert_array_equal(OnnxPolicy(a)(obs), OnnxPolicy(b)(obs))
    checkpoint.write_bytes(b"not a pickle")  # e.g. a disk that filled up
    (tmp_path / "cut.run.json").unlink()
    train_and_export("bc_dyn_2phase", lqr_dataset, out, **kwargs)
    assert "cut.ckpt: not resumable (UnpicklingError" in capsys.readouterr().err and not checkpoint.exists()


def test_train_resume_skips_a_finished_run(lqr_dataset, tmp_path):
    data, out = tmp_path / "lqr.npz", tmp_path / "bc.onnx"
    lqr_dataset.save(data)
    args = ("train", "--algo", "bc", "--data", str(data), "--out", str(out), "--steps", "30",
            "--config", "fast", "--resume")
    first = run_droil(*args)
    assert first.returncode == 0, first.stderr
    written = out.stat().st_mtime_ns
    again = run_droil(*args)
    assert again.returncode == 0, again.stderr
    assert out.stat().st_mtime_ns == written and again.stdout.splitlines()[0] == first.stdout.splitlines()[0]


def test_the_policy_lr_decays_on_its_schedule(lqr_dataset):
    from droil_ros import algos
    from droil_ros.errors import DroilError

    learner = algos.create("bc", lqr_dataset, lqr_dataset.robot_spec(), preset="fast", n_seeds=2,
                           log_every=10, lr_decay=0.5, lr_decay_every=20)
    rows = learner.fit(60, progress=False)
    assert [row["lr"] for row in rows] == pytest.approx([3e-4, 1.5e-4, 1.5e-4, 7.5e-5, 7.5e-5, 3.75e-5])
    with pytest.raises(DroilError, match="lr_decay"):
        algos.create("bc", lqr_dataset, lqr_dataset.robot_spec(), preset="fast", lr_decay=0.0)
    with pytest.raises(DroilError, match="choose one"):
        algos.create("iql", lqr_dataset, lqr_dataset.robot_spec(), preset="fast", lr_decay=0.9)


def test_best_nominal_selection_keeps_each_seeds_best_policy(lqr_dataset, tmp_path):
    """DRBC's checkpoint selection: each seed's policy with the best nominal return at the
    selection steps, exported beside the last one; the ONNX file gives back the return it was
    selected for, and no step scored better."""
    from droil_ros.errors import DroilError
    from droil_ros.pipeline import BestNominal, train_and_export
    from droil_ros.policy import OnnxPolicy
    from droil_ros.sim.envs import make_env
    from droil_ros.sim.rollout import run_episode

    spec = lqr_dataset.robot_spec()
    select = BestNominal(spec, every=50, episodes=2, seconds=0.5)
    scores = []
    result = train_and_export("bc", lqr_dataset, tmp_path / "bc.onnx", steps=150, n_seeds=2, preset="fast",
                              progress=False, select=select,
                              callback=lambda row: scores.append(row["step"]))
    assert scores == [50, 100, 150]
    best = result.best
    assert [p.name for p in map(Path, best["policies"])] == ["bc_seed0.best.onnx", "bc_seed1.best.onnx"]
    assert set(best["steps"]) <= {50, 100, 150}
    env = make_env(spec)

    def nominal(path):
        policy = OnnxPolicy(path, spec)
        return float(np.mean([run_episode(env, policy, BestNominal.SEED + e, 0.5).ret for e in range(2)]))

    for k, path in enumerate(best["policies"]):
        selected = OnnxPolicy(path, spec).metadata["selected"]
        assert selected["return"] == best["returns"][k] and selected["every"] == 50
        assert nominal(path) == pytest.approx(best["returns"][k], rel=1e-4)
        assert best["returns"][k] >= nominal(result.policies[k]) - 1e-4 * abs(best["returns"][k])
    with pytest.raises(DroilError, match="multiple of log_every"):
        train_and_export("bc", lqr_dataset, tmp_path / "x.onnx", steps=10, preset="fast", progress=False,
                         select=BestNominal(spec, every=30))
