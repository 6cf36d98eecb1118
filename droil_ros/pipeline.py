"""Orchestration shared by the CLI, the trainer node and the benchmarks: train -> export."""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from droil_ros import algos
from droil_ros.data.dataset import TransitionDataset, load_dataset
from droil_ros.errors import DroilError
from droil_ros.policy.export import export_onnx
from droil_ros.robots.spec import RobotSpec, columns


@dataclass
class TrainResult:
    policies: list[Path]
    log: Path | None
    steps: int
    seconds: float
    final: dict
    best: dict | None = None  # BestNominal: {"policies", "steps", "returns"} per seed

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.seconds if self.seconds > 0 else float("nan")


class BestNominal:
    """DRBC's checkpoint selection (its ``save_model``): every ``every`` training steps each
    seed's policy runs ``episodes`` episodes on the unperturbed robot, and the best mean return
    so far is kept per seed. Episode seeds start at 2000 (DRBC's eval seed), apart from the
    robustness grids' 1000..: the selection never sees an evaluation episode, nor a perturbation.
    The kept policies live on the learner (``best_nominal``), so a checkpoint resumes them."""

    SEED = 2000

    def __init__(self, robot: RobotSpec, every: int, episodes: int = 5, task: str | None = None,
                 seconds: float | None = None):
        from droil_ros.sim.envs import make_env

        if every < 1 or episodes < 1:
            raise DroilError(f"best-nominal selection needs every >= 1 and episodes >= 1 "
                             f"(got {every}, {episodes})")
        self.env = make_env(robot, task)
        self.every, self.episodes, self.seconds = every, episodes, seconds

    def settings(self) -> dict:
        return {"every": self.every, "episodes": self.episodes, "task": self.env.task.name,
                "seconds": self.seconds}

    @torch.no_grad()
    def __call__(self, learner, last: bool = False) -> None:
        from droil_ros.sim.rollout import run_episode

        if learner.step % self.every and not last:
            return
        n = learner.n_seeds
        kept = learner.__dict__.setdefault(
            "best_nominal", {"returns": [-np.inf] * n, "steps": [0] * n, "modules": [None] * n})
        seen = columns(learner.robot.obs_names, self.env.robot.obs_names)  # a task's view
        for k, module in enumerate(learner.export_modules()):
            def act(obs, module=module):
                return module(torch.as_tensor(obs[seen], dtype=torch.float32)[None])[0].numpy()

            ret = float(np.mean([run_episode(self.env, act, self.SEED + e, self.seconds).ret
                                 for e in range(self.episodes)]))
            if ret > kept["returns"][k]:
                kept["returns"][k], kept["steps"][k], kept["modules"][k] = ret, learner.step, module


def policy_paths(out: Path, n_seeds: int, seed: int) -> list[Path]:
    """``out`` itself for one seed, else ``<stem>_seed<N>.onnx`` beside it."""
    if n_seeds == 1:
        return [out]
    return [out.with_name(f"{out.stem}_seed{seed + k}{out.suffix}") for k in range(n_seeds)]


def train_and_export(algo: str, dataset: TransitionDataset | str | Path, out: str | Path,
                     robot: RobotSpec | None = None, steps: int | None = None, n_seeds: int = 1,
                     seed: int = 0, preset: str = "paper", overrides: dict | None = None,
                     progress: bool = True, log: bool = True,
                     callback: Callable[[dict], None] | None = None, reuse: bool = False,
                     checkpoint_every: float = 600.0, select: BestNominal | None = None) -> TrainResult:
    """Train ``algo`` on a dataset (several seeds batched) and export one ONNX file per seed.

    Every run leaves ``<out>.run.json``: what was trained (learner, its config, the learners' and
    exporter's code, data, robot, steps, seeds) and the result. With ``reuse``, a long benchmark
    stopped midway goes on where it was: a run whose record matches and whose ONNX files exist is
    not trained again, and a run cut short goes on from ``<out>.ckpt``, the whole learner saved
    every ``checkpoint_every`` seconds of training under the same key (removed once exported).

    ``select``: also export each seed's best-nominal policy (``BestNominal``) as
    ``<policy>.best.onnx``; the last one stays the main result."""
    if not isinstance(dataset, TransitionDataset):
        dataset = load_dataset(dataset)
    robot = dataset.spec_for(robot) if robot else dataset.robot_spec()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    learner = algos.create(algo, dataset, robot, preset=preset, seed=seed, n_seeds=n_seeds,
                           **(overrides or {}))
    log_path = out.with_suffix(".csv") if log else None
    paths = policy_paths(out, n_seeds, seed)
    record_path, checkpoint_path = out.with_suffix(".run.json"), out.with_suffix(".ckpt")
    if select is not None and select.every % learner.config.log_every:
        raise DroilError(f"best-nominal selection every {select.every} steps needs a multiple of "
                         f"log_every ({learner.config.log_every})")
    best_paths = [p.with_suffix(".best.onnx") for p in paths] if select else []
    key = _run_key(learner, algo, dataset, robot, steps, n_seeds, seed, preset)
    key["select"] = select.settings() if select else None
    if reuse and record_path.is_file() and all(p.is_file() for p in paths + best_paths):
        record = json.loads(record_path.read_text())
        if record.get("key") == key:
            done = record["result"]
            return TrainResult(paths, log_path, done["steps"], done["seconds"], done["final"],
                               done.get("best"))
    record_path.unlink(missing_ok=True)  # files half rewritten by a crashed run match no record
    resumed = _resume(checkpoint_path, key) if reuse else None
    learner = resumed or learner
    total = learner.config.steps if steps is None else steps

    def on_row(row: dict) -> None:
        if callback is not None:
            callback(row)
        if select is not None:
            select(learner, last=learner.step == total)

    learner.fit(total - learner.step, progress=progress, log_path=log_path, desc=f"train {algo}",
                callback=on_row, resume=resumed is not None, checkpoint_every=checkpoint_every,
                checkpoint=(lambda: _save_checkpoint(checkpoint_path, key, learner)) if reuse else None)
    meta = {"learner": algo, "config": learner.config.to_dict(), "preset": preset,
            "dataset_hash": dataset.hash, "dataset_size": len(dataset),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    for k, (module, path) in enumerate(zip(learner.export_modules(), paths, strict=True)):
        export_onnx(module, path, robot, {**meta, "seed": seed + k, "train_steps": learner.step})
    best = None
    if select is not None:
        if not hasattr(learner, "best_nominal"):  # resumed at its last step: nothing scored yet
            select(learner, last=True)
        kept = learner.best_nominal
        for k, path in enumerate(best_paths):
            export_onnx(kept["modules"][k], path, robot, {
                **meta, "seed": seed + k, "train_steps": kept["steps"][k],
                "selected": {"by": "best nominal return", **select.settings(),
                             "return": kept["returns"][k]}})
        best = {"policies": [str(p) for p in best_paths], "steps": kept["steps"],
                "returns": kept["returns"]}
    if log and hasattr(learner, "data_weights"):
        plot_weights(learner, out.with_suffix(".weights.png"))
    final = learner.history[-1] if learner.history else {}
    result = TrainResult(paths, log_path, learner.step, learner.train_seconds, final, best)
    partial = record_path.with_suffix(".partial")
    done = {"steps": result.steps, "seconds": result.seconds, "final": result.final, "best": best}
    partial.write_text(json.dumps({"key": key, "result": done}, indent=2, default=float) + "\n")
    partial.replace(record_path)
    checkpoint_path.unlink(missing_ok=True)
    return result


def plot_weights(learner, out_png: Path) -> Path:
    """Mean adversarial weight and loss against time in episode, one line per seed: a worst case
    follows the loss; a time discount (the old BE-DROIL default) decays whatever the loss."""
    from matplotlib.figure import Figure

    weights, losses = (x.numpy() for x in learner.data_weights())
    starts = np.flatnonzero(learner.dataset.episode_starts)
    n = np.arange(len(learner.dataset))
    t = n - starts[np.searchsorted(starts, n, side="right") - 1] if len(starts) else n
    count = np.bincount(t)
    fig = Figure(figsize=(7, 5), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    for k, seed in enumerate(learner.seeds):
        top.plot(np.bincount(t, weights[k]) / count, lw=0.8, label=f"seed {seed}")
        bottom.plot(np.bincount(t, losses[k]) / count, lw=0.8)
    top.axhline(1.0, color="grey", lw=0.5)
    top.set_ylabel("mean weight w")
    top.legend(fontsize="small")
    bottom.set_ylabel("mean loss")
    bottom.set_xlabel("time in episode (steps)")
    fig.suptitle(f"{learner.name}: adversarial weights on the data after {learner.step} steps")
    fig.savefig(out_png, dpi=100)
    return out_png


def _save_checkpoint(path: Path, key: dict, learner) -> None:
    partial = path.with_suffix(".ckpt.partial")
    torch.save({"key": key, "learner": learner}, partial)
    partial.replace(path)


def _resume(path: Path, key: dict):
    """The learner saved at ``path`` if it was saved under ``key``, else None (and the file goes).
    The file is our own pickle, written by ``_save_checkpoint`` beside the run's outputs."""
    if not path.is_file():
        return None
    try:
        saved = torch.load(path, weights_only=False)
        learner = saved["learner"] if saved.get("key") == key else None
    except Exception as exc:  # a file cut short by a kill, or saved by other code: start over
        print(f"{path}: not resumable ({type(exc).__name__}: {exc}); training from the start",
              file=sys.stderr)
        learner = None
    if learner is None:
        path.unlink()
    else:
        print(f"{path}: going on from step {learner.step}", file=sys.stderr)
    return learner


def _code_hash() -> str:
    """Of every learner's code and of the exporter: a change to any of them may change a result."""
    digest = hashlib.sha256()
    exporter = Path(sys.modules[export_onnx.__module__].__file__)
    for path in [*sorted(Path(algos.__file__).parent.glob("*.py")), exporter]:
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def _run_key(learner, algo: str, dataset: TransitionDataset, robot: RobotSpec, steps: int | None,
             n_seeds: int, seed: int, preset: str) -> dict:
    """What makes two training runs the same, as JSON (the source files stand for the code; the
    torch threads change the order of floating-point sums, so they count too)."""
    return json.loads(json.dumps({
        "algo": algo, "config": learner.config.to_dict(), "preset": preset,
        "code_sha256": _code_hash(), "dataset_hash": dataset.hash, "robot_hash": robot.hash,
        "steps": steps, "n_seeds": n_seeds, "seed": seed, "torch_threads": torch.get_num_threads()},
        default=str))
