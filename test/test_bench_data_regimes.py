"""``droil bench small-data`` / ``mixed-data`` end to end on tiny data: real collection,
training, ONNX export and MuJoCo evaluation, a few steps each."""

import json

import numpy as np
import pytest

from droil_ros.bench import data_regimes, robustness
from droil_ros.cli import build_parser
from droil_ros.errors import DroilError

TINY = ["--quick", "--steps", "20", "--episodes", "1", "--workers", "1"]


def bench(name, tmp_path, *extra, robot="wheel_legged"):
    args = build_parser().parse_args(["bench", name, *TINY, "--out", str(tmp_path), "--robot", robot, *extra])
    assert args.func(args) in (0, None)
    tag = name.replace("-", "_") + f"_{robot}_quick"
    payload = json.loads((tmp_path / f"{tag}.json").read_text())
    return payload, (tmp_path / f"{tag}.md").read_text(), tmp_path / tag


def check_scores(payload, workdir):
    """Every score is the normalisation of the evaluated returns, against the references."""
    ref = payload["references"]
    assert ref["expert"]["mean"] > ref["zero"]["mean"] + 500  # the expert acts, zero torque falls
    evaluation = json.loads((workdir / "eval.json").read_text())
    for label, row in payload["table"].items():
        for seed, value in zip(payload["seeds"], row["scores"], strict=True):
            ret = evaluation["results"][f"{label}/seed{seed}"]["nominal"][0]["mean"]
            expected = 100 * (ret - ref["zero"]["mean"]) / (ref["expert"]["mean"] - ref["zero"]["mean"])
            assert value == pytest.approx(expected)


def test_subsamples_are_nested_transition_subsets(lqr_dataset):
    subsets = [data_regimes.subsample(lqr_dataset, f, seed=3) for f in (1.0, 0.1, 0.02)]
    assert [len(s) for s in subsets] == [1600, 160, 32]
    rows = [{o.tobytes() for o in s.observations} for s in subsets]
    assert rows[2] < rows[1] < rows[0]
    other_seed = data_regimes.subsample(lqr_dataset, 0.1, seed=4)
    assert {o.tobytes() for o in other_seed.observations} != rows[1]


@pytest.mark.slow  # about 40 s on a loaded 2-core machine: 8 ten-second MuJoCo episodes
def test_small_data_bench_tiny(tmp_path, monkeypatch):
    monkeypatch.setattr(robustness, "WHEEL_LEGGED_DATA", dict(episodes=4, seconds=1.0))
    payload, markdown, workdir = bench("small-data", tmp_path, "--seeds", "2", "--learner", "dmil")
    assert {k: v["size"] for k, v in payload["datasets"].items()} == {"1": 800, "0.1": 80, "0.05": 40,
                                                                      "0.02": 16}
    assert set(payload["table"]) == {f"dmil@{f}" for f in ("1", "0.1", "0.05", "0.02")}
    assert payload["training"]["dmil@0.1"]["overrides"] == {"warmup_steps": 1, "rollout_every": 1}
    check_scores(payload, workdir)
    assert "| dmil |" in markdown and "## Normalised score" in markdown
    assert len(list(workdir.glob("dmil@0.02_seed*.onnx"))) == 2


def test_small_data_on_hopper_uses_the_committed_expert(tmp_path, monkeypatch):
    """The seeds' ground: the expert's rollouts (2 % of the full set is DRBC's dataset size)."""
    assert data_regimes.LOCOMOTION_FULL["hopper"] * 0.02 == 2000
    monkeypatch.setattr(data_regimes, "LOCOMOTION_FULL", {"hopper": 300})
    payload, markdown, workdir = bench("small-data", tmp_path, "--seeds", "1", "--learner", "bc",
                                       robot="hopper")
    assert payload["robot"] == "hopper"
    assert {k: v["size"] for k, v in payload["datasets"].items()} == {"1": 300, "0.1": 30, "0.05": 15,
                                                                      "0.02": 6}
    check_scores(payload, workdir)  # the reference expert is models/experts/hopper.onnx
    assert "models/experts/hopper.onnx" in markdown and "--robot hopper" in markdown


def test_mixed_data_bench_tiny(tmp_path, monkeypatch):
    monkeypatch.setattr(data_regimes, "MIXED", dict(expert_episodes=5, expert_seconds=1.0, moved_to_other=3,
                                                    weak_episodes=2, weak_seconds=1.0, noise=1.0))
    payload, markdown, workdir = bench("mixed-data", tmp_path, "--seeds", "1")
    assert payload["data"]["expert"]["size"] == 400  # 2 of the 5 one-second expert episodes
    assert payload["data"]["all"]["size"] == 1000 + 400 + 400
    assert set(payload["table"]) == set(data_regimes.MIXED_LEARNERS)
    assert payload["training"]["bc_expert"]["transitions"] == 400
    check_scores(payload, workdir)
    ref = payload["references"]
    assert ref["drive_lqr"]["mean"] < ref["expert"]["mean"]  # rolling away costs reward
    assert ref["noisy_lqr"]["mean"] < ref["expert"]["mean"]
    assert "D_O: LQR of the drive task" in markdown
    d2mil = payload["table"]["d2mil"]["scores"][0]
    assert f"| {d2mil:.0f} |" in next(line for line in markdown.splitlines() if line.startswith("| d2mil |"))


@pytest.mark.parametrize("extra, message", [
    (["--robot", "hopper"], "mixed-data benchmark is defined for 'wheel_legged' only"),
    (["--learner", "gail"], r"unknown mixed-data learner\(s\) \['gail'\]"),
    (["--set", "rho=0.2"], r"--set keys \['rho'\] belong to none of the learners"),
])
def test_bad_arguments_fail_clearly(tmp_path, extra, message):
    args = build_parser().parse_args(["bench", "mixed-data", *TINY, "--out", str(tmp_path), *extra])
    with pytest.raises(DroilError, match=message):
        data_regimes.main(args)
    assert not np.any([p.suffix == ".npz" for p in tmp_path.rglob("*")])  # failed before collecting
