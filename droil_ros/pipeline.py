"""Orchestration shared by the CLI, the trainer node and the benchmarks: train -> export."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from droil_ros import algos
from droil_ros.data.dataset import TransitionDataset, load_dataset
from droil_ros.policy.export import export_onnx
from droil_ros.robots.spec import RobotSpec, load_spec


@dataclass
class TrainResult:
    policies: list[Path]
    log: Path | None
    steps: int
    seconds: float
    final: dict

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.seconds if self.seconds > 0 else float("nan")


def policy_paths(out: Path, n_seeds: int, seed: int) -> list[Path]:
    """``out`` itself for one seed, else ``<stem>_seed<N>.onnx`` beside it."""
    if n_seeds == 1:
        return [out]
    return [out.with_name(f"{out.stem}_seed{seed + k}{out.suffix}") for k in range(n_seeds)]


def train_and_export(algo: str, dataset: TransitionDataset | str | Path, out: str | Path,
                     robot: RobotSpec | None = None, steps: int | None = None, n_seeds: int = 1,
                     seed: int = 0, preset: str = "paper", overrides: dict | None = None,
                     progress: bool = True, log: bool = True,
                     callback: Callable[[dict], None] | None = None) -> TrainResult:
    """Train ``algo`` on a dataset (several seeds batched) and export one ONNX file per seed."""
    if not isinstance(dataset, TransitionDataset):
        dataset = load_dataset(dataset)
    robot = robot or load_spec(dataset.robot_id)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    learner = algos.create(algo, dataset, robot, preset=preset, seed=seed, n_seeds=n_seeds,
                           **(overrides or {}))
    log_path = out.with_suffix(".csv") if log else None
    started = time.perf_counter()
    rows = learner.fit(steps, progress=progress, log_path=log_path, desc=f"train {algo}",
                       callback=callback)
    seconds = time.perf_counter() - started
    paths = policy_paths(out, n_seeds, seed)
    for k, (module, path) in enumerate(zip(learner.export_modules(), paths, strict=True)):
        export_onnx(module, path, robot, {
            "learner": algo, "config": learner.config.to_dict(), "preset": preset,
            "seed": seed + k, "dataset_hash": dataset.hash, "dataset_size": len(dataset),
            "train_steps": learner.step, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        })
    return TrainResult(paths, log_path, learner.step, seconds, rows[-1] if rows else {})
