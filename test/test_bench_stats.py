"""Benchmark statistics: bootstrap CIs over training seeds and differences paired by seed."""

import numpy as np

from droil_ros.bench import format_ci, mean_ci
from droil_ros.bench.robustness import aggregate


def fake_evaluation(grid_averages: dict[str, list[float]]) -> dict:
    summary, results = {}, {}
    for learner, values in grid_averages.items():
        for seed, value in enumerate(values):
            name = f"{learner}_seed{seed}"
            summary[name] = {"mass": value, "grid_average": value, "heldout_average": None}
            results[name] = {"mass": [{"mean": value, "fall_rate": 0.0}]}
    return {"summary": summary, "results": results}


def test_a_paired_difference_resolves_what_the_seed_spread_hides():
    """Ten seeds spread by +-300 (the data and initialisation differ per seed, shared by both
    learners): a learner 20 points ahead on every seed has overlapping CIs, but the paired
    difference's CI excludes 0."""
    rng = np.random.default_rng(0)
    bc = list(2000 + rng.normal(0, 300, 10))
    better = [v + 20 + rng.normal(0, 5) for v in bc]
    table = aggregate(fake_evaluation({"bc": bc, "be_droil": better}), ["bc", "be_droil"], list(range(10)))
    low_bc, high_bc = table["bc"]["grid_average_ci"]
    low, high = table["be_droil"]["grid_average_ci"]
    assert low < high_bc and low_bc < high  # unpaired: the CIs overlap
    assert 0 < table["be_droil"]["minus_bc_ci"][0] < 20 < table["be_droil"]["minus_bc_ci"][1] < 40
    assert "minus_bc" not in table["bc"]


def test_mean_ci_edge_cases_and_repeatability():
    assert np.isnan(mean_ci([5.0])[1]) and format_ci(*mean_ci([5.0])) == "5"
    assert mean_ci([3.0, 3.0, 3.0]) == (3.0, 3.0, 3.0)
    values = [1.0, 2.0, 4.0, 8.0]
    assert mean_ci(values) == mean_ci(values)  # seeded: the same table on every run
    mean, low, high = mean_ci(values)
    assert low < mean < high and format_ci(mean, low, high, 1).startswith("3.8 [")


def test_a_benchmark_evaluates_again_only_what_changed(tmp_path):
    """Grid evaluations are kept per group (a learner's seeds) under the policies' hashes and the
    grid: a benchmark stopped midway does not evaluate a finished group again."""
    from dataclasses import replace

    from droil_ros.bench.robustness import evaluate_groups
    from droil_ros.eval.grid import load_grid
    from droil_ros.robots import load_spec
    from droil_ros.sim.lqr import LQRController

    spec = load_spec("wheel_legged")
    grid = load_grid("wheel_legged")
    grid = replace(grid, seconds=0.2, perturbations=dict(list(grid.perturbations.items())[:2]))
    groups = {"lqr": {"lqr_seed0": LQRController(spec)}}
    first = evaluate_groups(groups, grid, 1, 1, tmp_path, spec.hash)
    kept = tmp_path / "lqr.eval.json"
    written = kept.stat().st_mtime_ns
    assert evaluate_groups(groups, grid, 1, 1, tmp_path, spec.hash) == first
    assert kept.stat().st_mtime_ns == written
    again = evaluate_groups(groups, grid, 2, 1, tmp_path, spec.hash)  # other episodes: evaluated
    assert kept.stat().st_mtime_ns != written and again["episodes"] == 2
