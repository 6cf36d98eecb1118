"""``droil bench robustness``: expert data -> bc, drbc, be_droil (+ nu=0 ablation), several
seeds -> returns on the robot's perturbation grid. The headline benchmark (BENCHMARKS.md §1).

Tuning discipline: the grid's ``heldout`` perturbations are reported separately and are never
used to choose hyperparameters; the grid average covers the others.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from droil_ros import experts
from droil_ros.bench import (
    adversary_summary,
    adversary_table,
    format_ci,
    machine_info,
    markdown_table,
    mean_ci,
    write_results,
)
from droil_ros.data.collect import collect
from droil_ros.data.dataset import load_dataset
from droil_ros.eval.grid import SUMMARY_KEYS, evaluate, load_grid, plot
from droil_ros.execution import executor
from droil_ros.pipeline import BestNominal, train_and_export
from droil_ros.policy.runtime import OnnxPolicy
from droil_ros.robots import load_spec

LEARNERS = ("bc", "drbc", "drbc_faithful", "be_droil", "be_droil_nu0")
BEST = "@best"  # suffix of a learner's best-nominal checkpoints in the tables
EVAL_SEED = 1000  # the grid's episodes: seeds 1000.. (best-nominal selection uses 2000..)
# wheel-legged demonstrations: 20 episodes of 2.5 s from random tilts = 10,000 transitions,
# the 50 s at 200 Hz of the DMIL paper's real robot
WHEEL_LEGGED_DATA = dict(episodes=20, seconds=2.5)


def expert_path(work: Path, seed: int) -> Path:
    return work / f"expert_seed{seed}.npz"  # the collection's seed: another seed, other data


def expert_dataset(robot: str, work: Path, seed: int):
    path = expert_path(work, seed)
    if path.is_file():
        return load_dataset(path)
    if robot == "wheel_legged":
        dataset = collect(robot, "lqr", seed=seed, **WHEEL_LEGGED_DATA)
    else:  # the committed RL expert, DRBC protocol (first N transitions; errors say how to make it)
        dataset = experts.dataset(robot, seed=seed)
    dataset.save(path)
    return dataset


def aggregate(result: dict, learners: list[str], seeds: list[int]) -> dict:
    """Per learner: per perturbation the mean over magnitudes and seeds; the grid and held-out
    averages with their spread over seeds and a 95 % bootstrap CI of their mean over seeds; and,
    for the grid average, the difference to bc paired by seed (same data, same evaluation
    episodes) with its CI: the seeds' spread, shared by both learners, cancels."""
    summary = result["summary"]
    table = {}
    for learner in learners:
        names = [f"{learner}_seed{s}" for s in seeds]
        keys = [k for k in summary[names[0]] if k not in SUMMARY_KEYS]
        row = {k: float(np.mean([summary[n][k] for n in names])) for k in keys}
        for k in SUMMARY_KEYS:
            values = [summary[n][k] for n in names if summary[n].get(k) is not None]
            row[k] = float(np.mean(values)) if values else None
            row[k + "_seed_std"] = float(np.std(values)) if values else None
            row[k + "_ci"] = list(mean_ci(values)[1:]) if values else None
        row["grid_averages"] = [summary[n]["grid_average"] for n in names]
        row["nominal"] = float(np.mean([result["results"][n][keys[0]][0]["mean"] for n in names]))
        row["fall_rate"] = float(np.mean([e["fall_rate"] for n in names
                                          for sweep in result["results"][n].values() for e in sweep]))
        table[learner] = row
    for learner, row in table.items():  # a best-nominal checkpoint against bc's best-nominal one
        bc = table.get("bc" + BEST if learner.endswith(BEST) else "bc")
        if bc is not None and bc is not row and None not in row["grid_averages"] + bc["grid_averages"]:
            row["minus_bc"], *bounds = mean_ci(np.subtract(row["grid_averages"], bc["grid_averages"]))
            row["minus_bc_ci"] = bounds
    return table


def expert_controller(robot: str, spec):
    """The demonstrator the data came from, evaluated on the same grid (its curve bounds what
    imitating it can show): the committed RL expert, or the LQR."""
    if robot == "wheel_legged":
        from droil_ros.sim.lqr import LQRController

        return LQRController(spec)
    return OnnxPolicy(experts.expert_path(robot), spec)


def train_unit(dataset_path: Path, work: Path, spec, unit: tuple[str, dict]) -> dict:
    """One learner's seeds trained and exported (a unit of ``execution``: its result depends on
    its arguments only; ``train_and_export`` keys, reuses and resumes it under ``work``)."""
    import torch

    learner, settings = unit[0], dict(unit[1])
    torch.set_num_threads(settings.pop("threads", torch.get_num_threads()))
    select = settings.pop("select")
    select = BestNominal(spec, *select) if select else None
    result = train_and_export(learner, load_dataset(dataset_path), work / f"{learner}.onnx", robot=spec,
                              reuse=True, select=select, **settings)
    return {"steps": result.steps, "seconds": result.seconds, "steps_per_second": result.steps_per_second,
            "final": result.final, "adversary": adversary_summary(result.log), "best": result.best,
            "policies": [str(p) for p in result.policies]}


def evaluate_groups(groups: dict[str, dict], grid, episodes: int, workers, work: Path,
                    robot_hash: str) -> dict:
    """``evaluate`` group by group (a learner's seeds), each result kept in ``work/<group>.eval.json``
    under a key (the policy files' hashes, grid, episodes, robot): a benchmark stopped midway
    evaluates again only what it had not finished."""
    merged = None
    for group, policies in groups.items():
        key = json.loads(json.dumps({"grid": grid.to_dict(), "episodes": episodes, "seed": EVAL_SEED,
                                     "robot_hash": robot_hash,
                                     "policies": {name: getattr(p, "policy_id", type(p).__name__)
                                                  for name, p in policies.items()}}))
        path = work / f"{group}.eval.json"
        saved = json.loads(path.read_text()) if path.is_file() else {}
        if saved.get("key") == key:
            part = saved["evaluation"]
        else:
            part = evaluate(policies, grid, episodes=episodes, seed=EVAL_SEED, workers=workers)
            partial = path.with_suffix(".partial")
            partial.write_text(json.dumps({"key": key, "evaluation": part}) + "\n")
            partial.replace(path)
        if merged is None:
            merged = {**part, "results": {}, "summary": {}}
        merged["results"].update(part["results"])
        merged["summary"].update(part["summary"])
    return merged


def _evaluate_learners(learners, results, seed, spec, grid, episodes, units, work) -> tuple[dict, list]:
    """The expert and each learner's policies (last, and best-nominal where kept) on the grid;
    the evaluation and the learners' groups."""
    groups = {"expert": {f"expert_seed{seed}": expert_controller(grid.robot, spec)}}
    for learner, result in zip(learners, results, strict=True):
        groups[learner] = {f"{learner}_seed{seed + k}": OnnxPolicy(path, spec)
                           for k, path in enumerate(result["policies"])}
        if result["best"]:
            groups[learner + BEST] = {f"{learner}{BEST}_seed{seed + k}": OnnxPolicy(path, spec)
                                      for k, path in enumerate(result["best"]["policies"])}
    return (evaluate_groups(groups, grid, episodes, units, work, spec.hash),
            [group for group in groups if group != "expert"])


def run(robot: str, out_dir: Path, quick: bool = False, n_seeds: int = 3, seed: int = 0,
        steps: int | None = None, episodes: int | None = None, workers: int = 2,
        learners: tuple[str, ...] = LEARNERS, overrides: dict | None = None, lr_decay: float = 1.0,
        select_every: int = 0, select_episodes: int = 5, ray: str | None = None) -> dict:
    """``overrides`` apply to the be_droil learners (a configuration chosen by ``bench tune``);
    ``lr_decay`` to every learner's policy (x rate every 10,000 steps, DRBC's 0.9). With
    ``select_every``, each seed's best-nominal checkpoint (``pipeline.BestNominal``) is evaluated
    beside its last one, as ``<learner>@best``. Learners train side by side, and the grid's jobs
    run, on ``workers`` local processes or on the Ray cluster ``ray`` (``execution``)."""
    started = time.time()
    tag = f"robustness_{robot}" + ("_quick" if quick else "")
    work = out_dir / tag
    work.mkdir(parents=True, exist_ok=True)
    spec = load_spec(robot)
    grid = load_grid(robot)
    dataset = expert_dataset(robot, work, seed)
    steps = steps or (3000 if quick else 20000)
    episodes = episodes or (3 if quick else grid.episodes)

    select = (select_every, select_episodes, grid.task, grid.seconds) if select_every else None
    parallel = workers > 1 or ray is not None
    settings = [{"steps": steps, "n_seeds": n_seeds, "seed": seed, "select": select, "progress": not parallel,
                 **({"threads": 1} if parallel else {}),
                 "overrides": {**(overrides or {} if learner.startswith("be_droil") else {}),
                               **({"lr_decay": lr_decay} if lr_decay != 1.0 else {})}}
                for learner in learners]
    with executor(workers, ray) as units:  # the learners side by side, then the grid's jobs
        results = []
        for learner, result in zip(learners, units.map(train_unit, zip(learners, settings, strict=True),
                                                       (expert_path(work, seed), work, spec)), strict=True):
            results.append(result)
            if parallel:
                print(f"trained {learner}: {result['steps']} steps in {result['seconds']:.0f} s",
                      file=sys.stderr)
        evaluation, groups = _evaluate_learners(learners, results, seed, spec, grid, episodes, units, work)
    training = {learner: {k: v for k, v in result.items() if k != "policies"}
                for learner, result in zip(learners, results, strict=True)}

    seeds = list(range(seed, seed + n_seeds))
    table = aggregate(evaluation, groups, seeds)
    # the demonstrator: one policy (no CI), in the tables beside the learners
    table = {"expert": aggregate(evaluation, ["expert"], [seed])["expert"], **table}
    (work / "eval.json").write_text(json.dumps(evaluation, indent=2) + "\n")
    plot(evaluation, work / "eval.png")

    labels = [k for k in grid.perturbations]
    header = ["learner", "nominal", *[f"{k} (held out)" if k in grid.heldout else f"{k} (beyond)"
                                      if k in grid.beyond else k for k in labels],
              "grid average [95% CI]", "− bc, paired [95% CI]", "held-out average",
              *(["beyond average"] if grid.beyond else []), "fall rate"]
    rows = []
    for learner, row in table.items():
        avg = format_ci(row["grid_average"], *row["grid_average_ci"], digits=1)
        diff = format_ci(row["minus_bc"], *row["minus_bc_ci"], digits=1) if "minus_bc" in row else "-"
        held = "-" if row["heldout_average"] is None else f"{row['heldout_average']:.1f}"
        beyond = [f"{row['beyond_average']:.1f}"] if grid.beyond else []
        rows.append([learner, f"{row['nominal']:.1f}", *[f"{row[k]:.1f}" for k in labels], avg, diff,
                     held, *beyond, f"{row['fall_rate']:.2f}"])
    speed = markdown_table(
        ["learner", "steps", "seeds (batched)", "seconds", "steps/s", "best-nominal step (seeds' mean)"],
        [[k, v["steps"], n_seeds, f"{v['seconds']:.0f}", f"{v['steps_per_second']:.0f}",
          f"{np.mean(v['best']['steps']):.0f}" if v["best"] else "-"] for k, v in training.items()])
    seconds = time.time() - started
    command = (f"droil bench robustness --robot {robot}" + (" --quick" if quick else "")
               + f" --steps {steps} --episodes {episodes} --seeds {n_seeds}"
               + "".join(f" --learner {k}" for k in learners if tuple(learners) != LEARNERS)
               + "".join(f" --set {k}={v}" for k, v in (overrides or {}).items())
               + (f" --lr-decay {lr_decay:g}" if lr_decay != 1.0 else "")
               + (f" --select-every {select_every} --select-episodes {select_episodes}" if select else "")
               + f" --out {out_dir}")
    markdown = (f"# Robustness on `{robot}`{' (quick)' if quick else ''}\n\n"
                f"Expert data: {len(dataset)} transitions ({dataset.n_episodes} episodes). "
                f"Learners trained {steps} steps, batch 256, seeds {seeds} (batched), preset `paper`. "
                f"Evaluation: grid `config/grids/{robot}.yaml`, {episodes} episodes per magnitude, "
                f"seeds {EVAL_SEED}.., task `{grid.task}`"
                f"{'' if grid.seconds is None else f', {grid.seconds:g} s episodes'}. "
                f"Cells: mean return over magnitudes and seeds; `nominal` is the first magnitude of "
                f"the first perturbation. Held-out perturbations were not used for tuning; those marked "
                f"beyond (past the papers' ranges) are averaged apart from the grid average. "
                f"CIs: bootstrap over the {n_seeds} training seeds (percentile, 95 %); `− bc`: the "
                f"learner's grid average minus bc's, paired by seed (a CI that excludes 0 resolves "
                f"the difference). "
                f"Policy lr x{lr_decay:g} every 10,000 steps. "
                + (f"`{BEST}`: each seed's best-nominal checkpoint, scored every {select_every} steps on "
                   f"{select_episodes} unperturbed episodes (seeds 2000..; DRBC's selection); `− bc` pairs "
                   f"it with bc{BEST}; the others are the last checkpoint. " if select else "")
                + "`expert`: the demonstrator itself (one policy, no CI): claim nothing where it is below. "
                f"Wall time {seconds / 60:.1f} min.\n\nReproduce: `{command}`\n\n"
                + markdown_table(header, rows)
                + f"\n![return vs magnitude]({tag}/eval.png)\n\n## Training\n\n" + speed
                + "\n## Adversary\n\nLearners that reweight their samples (drbc: the indicator "
                  "of its active set). Median over the second half of training of the seed mean per "
                  "logged step (training CSVs beside the table); E_w[l]/E[l] > 1: the weights seek the "
                  "loss.\n\n" + adversary_table({k: v["adversary"] for k, v in training.items()}))
    payload = {"robot": robot, "quick": quick, "steps": steps, "seeds": seeds, "episodes": episodes,
               "dataset": {"size": len(dataset), "episodes": dataset.n_episodes, "hash": dataset.hash},
               "training": training, "table": table, "wall_seconds": seconds,
               "machine": machine_info()}
    write_results(out_dir, tag, payload, markdown)
    print(markdown)
    return payload
