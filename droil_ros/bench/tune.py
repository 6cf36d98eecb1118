"""``droil bench tune``: the BE-DROIL hyperparameter sweep, on the grid's tuning perturbations
only (held-out ones are dropped), so the final robustness numbers are not tuned on."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from droil_ros.bench import machine_info, markdown_table, write_results
from droil_ros.bench.robustness import expert_dataset
from droil_ros.eval.grid import evaluate, load_grid
from droil_ros.pipeline import train_and_export
from droil_ros.policy.runtime import OnnxPolicy
from droil_ros.robots import load_spec

CANDIDATES = (
    ("bc", {}),
    ("be_droil", {"alpha": 0.3}),
    ("be_droil", {"alpha": 1.0}),
    ("be_droil", {"alpha": 3.0}),
    ("be_droil", {"f": "kl", "alpha": 1.0}),
    ("be_droil", {"k_dual": 5}),
    ("be_droil", {"gamma": 0.9}),
)


def label(name: str, overrides: dict) -> str:
    return name + "".join(f" {k}={v}" for k, v in overrides.items())


def run(robot: str, out_dir: Path, quick: bool = False, n_seeds: int = 3, seed: int = 0,
        steps: int | None = None, episodes: int | None = None, workers: int = 2) -> dict:
    started = time.time()
    work = out_dir / f"tune_{robot}"
    work.mkdir(parents=True, exist_ok=True)
    spec = load_spec(robot)
    grid = load_grid(robot)
    grid = replace(grid, heldout=(), perturbations={k: v for k, v in grid.perturbations.items()
                                                   if k not in grid.heldout})
    dataset = expert_dataset(robot, work, seed)
    steps = steps or (2000 if quick else 10000)
    episodes = episodes or (2 if quick else 4)
    rows, raw = [], {}
    for i, (name, overrides) in enumerate(CANDIDATES):
        result = train_and_export(name, dataset, work / f"candidate{i}.onnx", robot=spec,
                                  steps=steps, n_seeds=n_seeds, seed=seed, overrides=overrides,
                                  log=False)
        policies = {f"seed{k}": OnnxPolicy(p, spec) for k, p in enumerate(result.policies)}
        evaluation = evaluate(policies, grid, episodes=episodes, seed=2000, workers=workers)
        averages = [evaluation["summary"][k]["grid_average"] for k in policies]
        raw[label(name, overrides)] = {"grid_average_per_seed": averages,
                                       "summary": evaluation["summary"]}
        rows.append([label(name, overrides), f"{np.mean(averages):.1f} ± {np.std(averages):.1f}"])
    markdown = (f"# BE-DROIL tuning on `{robot}`\n\nTuning perturbations only "
                f"({', '.join(grid.perturbations)}; held-out ones excluded), {episodes} episodes per "
                f"magnitude (seeds 2000..), {steps} training steps, {n_seeds} seeds. Cell: grid "
                f"average return, mean ± std over training seeds. Wall time "
                f"{(time.time() - started) / 60:.1f} min. Reproduce: `droil bench tune --robot {robot}"
                f"{' --quick' if quick else ''} --steps {steps} --episodes {episodes}`\n\n"
                + markdown_table(["configuration", "grid average (tuning perturbations)"], rows))
    payload = {"robot": robot, "steps": steps, "episodes": episodes, "results": raw,
               "machine": machine_info()}
    write_results(out_dir, f"tune_{robot}", payload, markdown)
    print(markdown)
    return payload
