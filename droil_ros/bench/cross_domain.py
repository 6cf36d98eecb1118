"""``droil bench cross-domain``: cross-domain offline RL on the wheel-legged robot
(BENCHMARKS.md section 3, the DROCO seed's setting transposed to sim-to-real).

Source data, abundant: the simulator with the wrong mass and friction (``SOURCE_SHIFT``, the
"sim" of sim-to-real). Target data, scarce (10 % of the source): the nominal robot (the "real"
one). Both come from the same behaviour, made with ``droil collect``'s function: half the
episodes LQR, half LQR with Gaussian action noise (``NOISE`` x the half range), so the data
hold good and poor actions and the rewards to tell them apart. Learners: ``iql`` on the target
data only, ``iql`` on source + target, ``droco`` on source + target (and, on request, droco with
the value-min worst state). Every policy is evaluated, without retraining, in the target env and
under test-time shifts of it at three levels (lighter and more slippery than the nominal robot),
plus an actuation delay that no training data contains; degradation = drop of the return
relative to the same seed's target-env return, in %.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from droil_ros.bench import machine_info, markdown_table, write_results
from droil_ros.data.collect import collect
from droil_ros.data.dataset import DOMAINS, TransitionDataset, concatenate
from droil_ros.errors import DroilError
from droil_ros.eval.grid import Grid, Sweep, evaluate
from droil_ros.pipeline import train_and_export
from droil_ros.policy.runtime import OnnxPolicy
from droil_ros.robots import load_spec
from droil_ros.sim.envs import make_env
from droil_ros.sim.rollout import make_controller

ROBOT = "wheel_legged"
SOURCE_SHIFT = "mass=2,friction=0.5"
NOISE = 1.0  # noisy_lqr action noise, std as a fraction of the half range
EPISODE_SECONDS = 2.5  # data episodes from random initial tilts
EVAL_SECONDS = 10.0  # as the robustness grid
LEVELS = (("target", "nominal"), ("easy", "mass=0.8,friction=0.6"),
          ("medium", "mass=0.7,friction=0.5"), ("hard", "mass=0.6,friction=0.45"),
          ("unseen", "latency=3"))
# case -> (learner, data, config overrides)
CASES = {
    "iql_target": ("iql", "target", {}),
    "iql_mixed": ("iql", "mixed", {}),
    "droco": ("droco", "mixed", {}),
    "droco_value_min": ("droco", "mixed", {"inf_mode": "value_min"}),
}
LABELS = {"iql_target": "iql (target only)", "iql_mixed": "iql (source+target)",
          "droco": "droco (coord_min)", "droco_value_min": "droco (value_min)", "lqr": "lqr (reference)"}
DEFAULT_CASES = ("iql_target", "iql_mixed", "droco")


def make_data(source_episodes: int, target_episodes: int, seed: int,
              seconds: float = EPISODE_SECONDS, noise: float = NOISE) -> dict[str, TransitionDataset]:
    """Source and target datasets, each half LQR and half noisy LQR episodes (distinct seeds)."""
    parts = {}
    for domain, episodes, perturb, offset in (("source", source_episodes, SOURCE_SHIFT, 0),
                                              ("target", target_episodes, None, 10_000)):
        clean = max(1, episodes // 2)
        parts[domain] = concatenate([
            collect(ROBOT, "lqr", clean, seed=seed + offset, perturb=perturb, seconds=seconds,
                    domain=domain, progress=False),
            collect(ROBOT, "noisy_lqr", max(1, episodes - clean), seed=seed + offset + 5_000,
                    perturb=perturb, seconds=seconds, noise=noise, domain=domain, progress=False),
        ], f"cross-domain {domain}")
    parts["mixed"] = concatenate([parts["source"], parts["target"]], "cross-domain source+target")
    return parts


def describe(data: TransitionDataset) -> dict:
    return {"transitions": len(data), "episodes": data.n_episodes, "falls": int(data.terminals.sum()),
            "mean_reward": float(data.rewards.mean()), "hash": data.hash,
            "domains": {d: int((data.domain == i).sum()) for i, d in enumerate(DOMAINS)}}


def degradation(base: float, value: float) -> float:
    """Return lost relative to the target-env return, in %."""
    return 100.0 * (base - value) / abs(base) if base else float("nan")


def run(out_dir: Path, quick: bool = False, n_seeds: int = 3, seed: int = 0, steps: int | None = None,
        episodes: int | None = None, workers: int = 2, cases: tuple[str, ...] = DEFAULT_CASES,
        overrides: dict | None = None, source_episodes: int | None = None,
        target_episodes: int | None = None) -> dict:
    """``overrides`` apply to the droco cases (e.g. beta, inf_mode)."""
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        raise DroilError(f"unknown cross-domain case(s) {', '.join(unknown)} (known: {', '.join(CASES)})")
    started = time.time()
    tag = f"cross_domain_{ROBOT}" + ("_quick" if quick else "")
    work = out_dir / tag
    work.mkdir(parents=True, exist_ok=True)
    spec = load_spec(ROBOT)
    # far fewer steps and IQL's values are still short-sighted: its advantages then mislead the actor
    steps = steps or (10000 if quick else 20000)
    episodes = episodes or (3 if quick else 10)
    source_episodes = source_episodes or (20 if quick else 40)
    target_episodes = target_episodes or max(2, source_episodes // 10)
    droco_overrides = overrides or {}

    data = make_data(source_episodes, target_episodes, seed)
    for name in ("source", "target"):
        data[name].save(work / f"{name}.npz")

    training, policies = {}, {"lqr": make_controller("lqr", make_env(ROBOT))}
    for case in cases:
        learner, which, fixed = CASES[case]
        config = {**fixed, **(droco_overrides if learner == "droco" else {})}
        result = train_and_export(learner, data[which], work / f"{case}.onnx", robot=spec, steps=steps,
                                  n_seeds=n_seeds, seed=seed, overrides=config, reuse=True)
        training[case] = {"learner": learner, "data": which, "overrides": config, "steps": result.steps,
                          "seconds": result.seconds, "final": result.final}
        for k, path in enumerate(result.policies):
            policies[f"{case}_seed{seed + k}"] = OnnxPolicy(path, spec)

    grid = Grid(ROBOT, "stand", episodes, EVAL_SECONDS,
                {"shift": Sweep(tuple(float(i) for i in range(len(LEVELS))), tuple(p for _, p in LEVELS))},
                (), "droil_ros.bench.cross_domain.LEVELS")
    evaluation = evaluate(policies, grid, episodes=episodes, seed=1000, workers=workers)
    (work / "eval.json").write_text(json.dumps(evaluation, indent=2) + "\n")
    seeds = list(range(seed, seed + n_seeds))
    table = aggregate(evaluation, ["lqr", *cases], seeds)

    level_names = [name for name, _ in LEVELS]
    header = ["policy", *[f"{n} return" for n in level_names],
              *[f"{n} degr. %" for n in level_names[1:]], "fall rate"]
    rows = []
    for case, row in table.items():
        rows.append([LABELS[case],
                     *[f"{row['return'][n]:.0f} ± {row['return_seed_std'][n]:.0f}" for n in level_names],
                     *[f"{row['degradation'][n]:.1f}" for n in level_names[1:]], f"{row['fall_rate']:.2f}"])
    seconds = time.time() - started
    command = ("droil bench cross-domain" + (" --quick" if quick else "") + f" --steps {steps}"
               f" --episodes {episodes} --seeds {n_seeds} --seed {seed}"
               + "".join(f" --learner {c}" for c in cases if tuple(cases) != DEFAULT_CASES)
               + "".join(f" --set {k}={v}" for k, v in (overrides or {}).items()) + f" --out {out_dir}")
    levels = ", ".join(f"{n} `{p}`" for n, p in LEVELS)
    overridden = any(v["overrides"] for v in training.values())
    speed = markdown_table(["case", "learner", "data", "overrides", "steps", "seconds"],
                           [[LABELS[c], v["learner"], v["data"], v["overrides"] or "-", v["steps"],
                             f"{v['seconds']:.0f}"] for c, v in training.items()])
    markdown = (
        f"# Cross-domain offline RL on `{ROBOT}`{' (quick)' if quick else ''}\n\n"
        f"Source (abundant): {len(data['source'])} transitions in the simulator with `{SOURCE_SHIFT}`; "
        f"target (scarce): {len(data['target'])} transitions on the nominal robot. Each: "
        f"{EPISODE_SECONDS:g} s episodes from random tilts, half LQR, half LQR with action noise "
        f"{NOISE:g} x the half range (`droil collect --expert lqr|noisy_lqr --seconds {EPISODE_SECONDS:g}"
        f" --noise {NOISE:g} [--perturb {SOURCE_SHIFT} --domain source]`); rewards from the task "
        f"`stand`. Learners trained {steps} steps, batch 256, seeds {seeds} (batched), preset `paper`"
        f"{' with the overrides listed under Training' if overridden else ''}. "
        f"Evaluation: {episodes} episodes of {EVAL_SECONDS:g} s per level (seeds 1000..), no "
        f"retraining; levels: {levels} (no training data has a delay). Returns: mean ± std over "
        f"training seeds (the maximum is {EVAL_SECONDS * spec.control_rate_hz:.0f}); degradation: "
        f"per seed, the return lost relative to the target-env return, in %, averaged. "
        f"LQR is the behaviour's noise-free expert, for reference. Wall time {seconds / 60:.1f} min."
        f"\n\nReproduce: `{command}`\n\n" + markdown_table(header, rows)
        + "\n## Data\n\n" + markdown_table(
            ["dataset", "transitions", "falls", "mean reward"],
            [[k, len(v), int(v.terminals.sum()), f"{v.rewards.mean():.3f}"] for k, v in data.items()])
        + "\n## Training\n\n" + speed)
    payload = {"robot": ROBOT, "quick": quick, "steps": steps, "seeds": seeds, "episodes": episodes,
               "source_shift": SOURCE_SHIFT, "levels": dict(LEVELS), "noise": NOISE,
               "data": {k: describe(v) for k, v in data.items()}, "training": training,
               "table": table, "command": command, "wall_seconds": seconds, "machine": machine_info()}
    write_results(out_dir, tag, payload, markdown)
    print(markdown)
    return payload


def aggregate(evaluation: dict, cases: list[str], seeds: list[int]) -> dict:
    """Per case and level: return (mean, std over seeds), degradation (mean over seeds), falls."""
    names = [n for n, _ in LEVELS]
    table = {}
    for case in cases:
        keys = [case] if case == "lqr" else [f"{case}_seed{s}" for s in seeds]
        returns = np.array([[p["mean"] for p in evaluation["results"][k]["shift"]] for k in keys])
        falls = [p["fall_rate"] for k in keys for p in evaluation["results"][k]["shift"]]
        table[case] = {
            "return": dict(zip(names, returns.mean(0).tolist(), strict=True)),
            "return_seed_std": dict(zip(names, returns.std(0).tolist(), strict=True)),
            "degradation": {n: float(np.mean([degradation(r[0], r[i]) for r in returns]))
                            for i, n in enumerate(names) if i > 0},
            "fall_rate": float(np.mean(falls)),
        }
    return table


def main(args) -> int:
    from droil_ros.cli import parse_overrides

    if args.robot != ROBOT:
        raise DroilError(f"the cross-domain benchmark is defined for '{ROBOT}' only (its behaviour is "
                         f"the LQR expert), not '{args.robot}'")
    run(Path(args.out), quick=args.quick, n_seeds=args.seeds, seed=args.seed, steps=args.steps,
        episodes=args.episodes, workers=args.workers, cases=tuple(args.learner) or DEFAULT_CASES,
        overrides=parse_overrides(args.set))
    return 0
