"""``droil bench cross-domain``: its data, its table arithmetic, and a tiny end-to-end run."""

import json

import numpy as np
import pytest
from conftest import run_droil

from droil_ros.bench import cross_domain
from droil_ros.errors import DroilError
from droil_ros.robots import load_spec
from droil_ros.robots.spec import task_rewards


def test_data_are_abundant_shifted_source_and_scarce_nominal_target():
    data = cross_domain.make_data(source_episodes=4, target_episodes=2, seed=0, seconds=0.5)
    source, target, mixed = data["source"], data["target"], data["mixed"]
    assert (source.domain == 1).all() and (target.domain == 0).all()
    assert len(mixed) == len(source) + len(target) == 600
    # rewards: the robot spec's task reward on (s', a) (stand: v_ref = 0, so time plays no part)
    spec = load_spec("wheel_legged")
    expected = task_rewards(spec, spec.task("stand"), mixed.next_observations, mixed.actions,
                            np.zeros(len(mixed)))
    np.testing.assert_allclose(mixed.rewards, expected, rtol=1e-5, atol=1e-5)
    # half clean LQR ("expert"), half noisy ("other") episodes in each domain
    for part in (source, target):
        qualities = sorted(part.quality[part.episode_starts].tolist())
        assert qualities == [0] * (part.n_episodes // 2) + [1] * (part.n_episodes // 2)
    # the source dynamics are shifted: a linear model s' = [s, a, 1] W fitted on the target
    # data predicts the target's next states far better than the source's
    def features(d):
        return np.hstack([d.observations, d.actions, np.ones((len(d), 1))])

    w, *_ = np.linalg.lstsq(features(target), target.next_observations, rcond=None)
    residual = {k: np.abs(features(d) @ w - d.next_observations).mean() for k, d in data.items()}
    assert residual["source"] > 2 * residual["target"], residual  # unshifted held-out: 1.4


def test_table_arithmetic():
    levels = [n for n, _ in cross_domain.LEVELS]

    def sweep(returns, falls=0.0):
        return {"shift": [{"mean": r, "fall_rate": falls} for r in returns]}

    evaluation = {"results": {
        "lqr": sweep([2000, 2000, 1000, 0, 2000]),
        "iql_target_seed0": sweep([1000, 900, 500, -1000, 1000], falls=0.5),
        "iql_target_seed1": sweep([2000, 2000, 2000, 1000, 0]),
    }}
    table = cross_domain.aggregate(evaluation, ["lqr", "iql_target"], [0, 1])
    assert table["lqr"]["degradation"] == {"easy": 0.0, "medium": 50.0, "hard": 100.0, "unseen": 0.0}
    row = table["iql_target"]
    assert row["return"] == dict(zip(levels, [1500.0, 1450.0, 1250.0, 0.0, 500.0], strict=True))
    assert row["return_seed_std"]["target"] == 500.0
    # per seed, then averaged: easy (10 + 0)/2, medium (50 + 0)/2, hard (200 + 50)/2, unseen (0 + 100)/2
    assert row["degradation"] == {"easy": 5.0, "medium": 25.0, "hard": 125.0, "unseen": 50.0}
    assert row["fall_rate"] == 0.25


def test_bad_cases_and_robots_fail_clearly(tmp_path):
    with pytest.raises(DroilError, match="unknown cross-domain case"):
        cross_domain.run(tmp_path, cases=("bc",))
    proc = run_droil("bench", "cross-domain", "--robot", "hopper", "--out", str(tmp_path))
    assert proc.returncode == 2
    assert "defined for 'wheel_legged' only" in proc.stderr


@pytest.mark.slow
def test_cross_domain_bench_tiny(tmp_path):
    proc = run_droil("bench", "cross-domain", "--quick", "--steps", "5", "--seeds", "2", "--episodes", "1",
                     "--workers", "1", "--set", "model_epochs=1", "--set", "n_models=2",
                     "--out", str(tmp_path), timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "cross_domain_wheel_legged_quick.json").read_text())
    assert set(result["table"]) == {"lqr", "iql_target", "iql_mixed", "droco"}
    assert result["data"]["target"]["transitions"] * 10 == result["data"]["source"]["transitions"]
    assert result["training"]["droco"]["overrides"] == {"model_epochs": 1, "n_models": 2}
    assert result["table"]["lqr"]["return"]["target"] > 1900  # the expert stands
    markdown = (tmp_path / "cross_domain_wheel_legged_quick.md").read_text()
    assert "| iql (target only) |" in markdown and "hard degr. %" in markdown
    assert (tmp_path / "cross_domain_wheel_legged_quick" / "droco_seed1.onnx").is_file()
