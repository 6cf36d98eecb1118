"""``droil bench small-data`` and ``droil bench mixed-data``: the DMIL seed's two data regimes
(BENCHMARKS.md section 2), evaluated nominally.

small-data, on the wheel-legged robot (task ``stand``): the LQR expert's 10,000 transitions (20
episodes of 2.5 s from random tilts, the robustness benchmark's data); on a Gymnasium robot with a
committed expert (``--robot hopper``, ...; the seeds' ground): ``LOCOMOTION_FULL`` transitions of
deterministic expert rollouts (``droil expert dataset``), whose 2 % is DRBC's dataset size.
Subsampled at random **by transition** to 100/10/5/2 % as in the DMIL paper and D2C (one
permutation drawn from ``--seed``, so the subsets are nested; 2 % of 20 episodes would be under
one episode). Learners: bc, bc_dyn, bc_dyn_2phase, dmil.

mixed-data (D2MIL's exp-med-X split, X = 0.6; wheel-legged only): 10 LQR expert episodes of 2.5 s; 4 of them
form D_E (quality 'expert'); D_O (quality 'other') holds the other 6 plus two weaker
demonstrators for standing: the LQR of the ``drive`` task (tracks 0.2 m/s, so it rolls away:
biased actions) and a noisy LQR (Gaussian action noise, std = the half range), 8 episodes of
5 s each. Learners: bc on D_E only, bc on D_E U D_O, dwbc, d2mil.

Score: 100 (R - R_zero) / (R_expert - R_zero), with the expert (LQR, or the committed ONNX
expert) and the zero-torque policy measured in the same run on the same episode seeds; mean and
std over training seeds.
Learners use the ``paper`` preset; the model-rollout schedule (DMIL's 1,000-step warm-up and
refresh every 1,000 steps, meant for 1M steps) is scaled to the step budget: both are
steps / 20 (exactly the spec's values at the default 20,000 steps), and DWBC's discriminator
keeps its 5,000 updates per run (every 100 of 5e5 steps): every steps / 5,000 (at least every
step); ``--set`` overrides either.
"""

from __future__ import annotations

import json
import time
from dataclasses import fields, replace
from pathlib import Path

import numpy as np

from droil_ros import algos, experts
from droil_ros.bench import machine_info, markdown_table, write_results
from droil_ros.bench.robustness import expert_dataset
from droil_ros.data.collect import NoisyController, collect
from droil_ros.data.dataset import TransitionDataset, concatenate, load_dataset
from droil_ros.errors import DroilError
from droil_ros.eval.grid import Sweep, evaluate, load_grid
from droil_ros.pipeline import train_and_export
from droil_ros.policy.runtime import OnnxPolicy
from droil_ros.robots import load_spec
from droil_ros.sim.envs import make_env
from droil_ros.sim.lqr import LQRController
from droil_ros.sim.rollout import make_controller

ROBOT = "wheel_legged"
# transitions of the full expert set on a Gymnasium robot: 2 % of it is DRBC's dataset size
LOCOMOTION_FULL = {robot: 50 * size for robot, size in experts.DATASET_SIZES.items()}
FRACTIONS = (1.0, 0.1, 0.05, 0.02)
SMALL_LEARNERS = ("bc", "bc_dyn", "bc_dyn_2phase", "dmil")
# label -> (learner, the part of the mixed data it trains on)
MIXED_LEARNERS = {"bc_expert": ("bc", "expert"), "bc_all": ("bc", "all"), "dwbc": ("dwbc", "all"),
                  "d2mil": ("d2mil", "all")}
MIXED = dict(expert_episodes=10, expert_seconds=2.5, moved_to_other=6, weak_episodes=8, weak_seconds=5.0,
             noise=1.0)
# anchors: DMIL paper Table 1 (D4RL normalised; Hopper / HalfCheetah / Walker2d)
ANCHOR = ("DMIL paper, D4RL expert data at 2 %: BC 53.5 / 23.6 / 58.3, 2-phase BC+d 88.2 / 57.5 / "
          "86.7, DMIL 108.5 / 76.9 / 105.6; at 100 %: BC 95.1 / 92.0 / 107.4, DMIL 110.2 / 93.3 / 107.7 "
          "(Hopper / HalfCheetah / Walker2d).")


def nominal_grid(robot: str, episodes: int):
    """The robustness grid's task and episode length, unperturbed only."""
    grid = load_grid(robot)
    return replace(grid, episodes=episodes, heldout=(),
                   perturbations={"nominal": Sweep((0.0,), ("nominal",))})


def subsample(dataset: TransitionDataset, fraction: float, seed: int) -> TransitionDataset:
    """The first ``fraction`` of one seeded permutation of the transitions (nested subsets)."""
    order = np.random.default_rng(seed).permutation(len(dataset))
    mask = np.zeros(len(dataset), bool)
    mask[order[:max(2, round(fraction * len(dataset)))]] = True
    return dataset.select(mask, source=f"{dataset.meta.get('source', '')} subsample={fraction:g} seed={seed}")


def mixed_parts(work: Path, seed: int) -> dict[str, TransitionDataset]:
    """The expert episodes (the last ``moved_to_other`` tagged 'other'), the drive-LQR and the
    noisy-LQR episodes (tagged 'other'); cached under ``work``."""
    m = MIXED
    makers = {
        "expert": lambda: collect(ROBOT, "lqr", episodes=m["expert_episodes"], seconds=m["expert_seconds"],
                                  seed=seed, progress=False),
        "drive_lqr": lambda: collect(ROBOT, "lqr", task="drive", episodes=m["weak_episodes"],
                                     seconds=m["weak_seconds"], seed=seed + 100,
                                     progress=False).with_tags(quality="other"),
        "noisy_lqr": lambda: collect(ROBOT, "noisy_lqr", episodes=m["weak_episodes"],
                                     seconds=m["weak_seconds"], seed=seed + 200, noise=m["noise"],
                                     progress=False),
    }
    parts = {}
    for name, make in makers.items():
        path = work / f"{name}.npz"
        if path.is_file():
            parts[name] = load_dataset(path)
            continue
        parts[name] = make()
        if name == "expert":
            episode = np.cumsum(parts[name].episode_starts) - 1
            parts[name].quality[episode >= m["expert_episodes"] - m["moved_to_other"]] = 1
        parts[name].save(path)
    return parts


def split_overrides(learner: str, steps: int, overrides: dict) -> dict:
    """The schedules scaled to ``steps``, then the ``--set`` keys this learner has."""
    known = {f.name for f in fields(algos.make_config(learner))}
    scaled = {k: max(1, steps // 20) for k in ("warmup_steps", "rollout_every") if k in known}
    if "d_every" in known:  # DWBC: 5,000 discriminator steps per run (every 100 of 5e5)
        scaled["d_every"] = max(1, steps // 5000)
    return {**scaled, **{k: v for k, v in overrides.items() if k in known}}


def check_overrides(learners: list[str], overrides: dict) -> None:
    known = set().union(*({f.name for f in fields(algos.make_config(k))} for k in learners))
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise DroilError(f"--set keys {unknown} belong to none of the learners {learners}")


def references(grid, seed: int, controllers: dict) -> dict:
    """Returns of reference controllers on the benchmark's episodes (in this process: the zero
    policy is a lambda, not picklable)."""
    result = evaluate(controllers, grid, seed=seed, workers=1, progress=False)
    return {name: result["results"][name]["nominal"][0] for name in controllers}


def score(ret: float, ref: dict) -> float:
    low, high = ref["zero"]["mean"], ref["expert"]["mean"]
    return 100.0 * (ret - low) / (high - low)


def train_all(jobs: dict[str, tuple[str, TransitionDataset]], work: Path, steps: int, n_seeds: int,
              seed: int, overrides: dict, robot: str = ROBOT) -> tuple[dict, dict]:
    """Train each job (label -> learner, data) with its seeds batched; ONNX policies per seed."""
    training, policies = {}, {}
    spec = load_spec(robot)
    for label, (learner, data) in jobs.items():
        extra = split_overrides(learner, steps, overrides)
        result = train_and_export(learner, data, work / f"{label}.onnx", robot=spec, steps=steps,
                                  n_seeds=n_seeds, seed=seed, overrides=extra, reuse=True)
        training[label] = {"learner": learner, "overrides": extra, "transitions": len(data),
                           "seconds": result.seconds, "steps_per_second": result.steps_per_second,
                           "final": result.final}
        for k, path in enumerate(result.policies):
            policies[f"{label}/seed{seed + k}"] = OnnxPolicy(path, spec)
    return training, policies


def summarise(evaluation: dict, labels: list[str], seeds: list[int], ref: dict) -> dict:
    table = {}
    for label in labels:
        runs = [evaluation["results"][f"{label}/seed{s}"]["nominal"][0] for s in seeds]
        scores = [score(r["mean"], ref) for r in runs]
        table[label] = {"score": float(np.mean(scores)), "score_seed_std": float(np.std(scores)),
                        "scores": scores, "returns": [r["mean"] for r in runs],
                        "fall_rate": float(np.mean([r["fall_rate"] for r in runs]))}
    return table


def settings(args) -> tuple[int, int, int]:
    steps = args.steps or (1000 if args.quick else 20000)
    episodes = args.episodes or (3 if args.quick else 10)
    return steps, episodes, args.seeds


def protocol(name: str, args, steps: int, episodes: int, seeds: list[int], grid, ref: dict,
             seconds: float) -> str:
    """The paragraph every table of this module starts with: training, evaluation, command."""
    robot = f" --robot {args.robot}" if args.robot != ROBOT else ""
    expert = "LQR" if args.robot == ROBOT else f"models/experts/{args.robot}.onnx"
    length = f"{grid.seconds:g} s" if grid.seconds else "full-length"
    command = (f"droil bench {name}{robot}" + (" --quick" if args.quick else "")
               + f" --steps {steps} --episodes {episodes} --seeds {args.seeds} --seed {args.seed}"
               + "".join(f" --learner {k}" for k in args.learner) + "".join(f" --set {k}" for k in args.set))
    dwbc = f", DWBC's discriminator stepped every {max(1, steps // 5000)}" if name == "mixed-data" else ""
    return (f"Learners: preset `paper`, {steps} steps, batch 256, seeds {seeds} (batched); model warm-up "
            f"and rollout refresh every {max(1, steps // 20)} steps{dwbc} (schedules scaled to the "
            f"budget, see droil_ros/bench/data_regimes.py). Evaluation: task `{grid.task}`, "
            f"nominal dynamics, {episodes} {length} episodes (seeds 1000..). Score: "
            f"100 (R - R_zero) / (R_expert - R_zero), mean ± std over training seeds, with R_expert = "
            f"{ref['expert']['mean']:.1f} ({expert}) and R_zero = {ref['zero']['mean']:.1f} (zero torque) "
            f"on the same episodes. Wall time {seconds / 60:.1f} min.\n\nReproduce: `{command}`\n\n")


def run_small(args, overrides: dict) -> dict:
    started = time.time()
    steps, episodes, n_seeds = settings(args)
    learners = list(args.learner or SMALL_LEARNERS)
    check_overrides(learners, overrides)
    robot = args.robot
    tag = f"small_data_{robot}" + ("_quick" if args.quick else "")
    out = Path(args.out)
    work = out / tag
    work.mkdir(parents=True, exist_ok=True)
    full = small_data_expert(robot, work, args.seed)
    datasets = {f: subsample(full, f, args.seed) for f in FRACTIONS}
    jobs = {f"{learner}@{f:g}": (learner, datasets[f]) for f in FRACTIONS for learner in learners}
    training, policies = train_all(jobs, work, steps, n_seeds, args.seed, overrides, robot)
    grid = nominal_grid(robot, episodes)
    env = make_env(robot, grid.task)
    expert = "lqr" if robot == ROBOT else str(experts.expert_path(robot))
    ref = references(grid, 1000, {"expert": make_controller(expert, env),
                                  "zero": make_controller("zero", env)})
    evaluation = evaluate(policies, grid, seed=1000, workers=args.workers)
    (work / "eval.json").write_text(json.dumps(evaluation, indent=2) + "\n")
    seeds = list(range(args.seed, args.seed + n_seeds))
    table = summarise(evaluation, list(jobs), seeds, ref)
    header = ["learner", *[f"{f:.0%} ({len(datasets[f])})" for f in FRACTIONS]]
    rows = [[learner, *[f"{table[f'{learner}@{f:g}']['score']:.1f} ± "
                        f"{table[f'{learner}@{f:g}']['score_seed_std']:.1f}" for f in FRACTIONS]]
            for learner in learners]
    falls = [[learner, *[f"{table[f'{learner}@{f:g}']['fall_rate']:.2f}" for f in FRACTIONS]]
             for learner in learners]
    seconds = time.time() - started
    source = ("LQR expert data" if robot == ROBOT else f"Expert data ({full.meta.get('source', '')})")
    markdown = (f"# Small expert data on `{robot}`{' (quick)' if args.quick else ''}\n\n"
                f"{source}: {len(full)} transitions ({full.n_episodes} episodes), "
                f"subsampled at random by transition (nested subsets, seed {args.seed}); header: fraction "
                f"(transitions). "
                + protocol("small-data", args, steps, episodes, seeds, grid, ref, seconds)
                + "## Normalised score\n\n" + markdown_table(header, rows)
                + "\n## Fall rate\n\n" + markdown_table(header, falls)
                + "\n## Training\n\n" + training_table(training) + f"\nAnchor: {ANCHOR}\n")
    payload = {"robot": robot, "quick": args.quick, "steps": steps, "seeds": seeds, "episodes": episodes,
               "fractions": list(FRACTIONS), "subsample": "transitions, nested, seed " + str(args.seed),
               "datasets": {f"{f:g}": {"size": len(d), "hash": d.hash} for f, d in datasets.items()},
               "references": ref, "training": training, "table": table, "wall_seconds": seconds,
               "machine": machine_info()}
    write_results(out, tag, payload, markdown)
    print(markdown)
    return payload


def small_data_expert(robot: str, work: Path, seed: int) -> TransitionDataset:
    """The full expert set (cached under ``work``): the LQR's on the wheel-legged robot, else
    LOCOMOTION_FULL transitions of the committed expert."""
    if robot == ROBOT:
        return expert_dataset(robot, work, seed)
    if robot not in LOCOMOTION_FULL:
        raise DroilError(f"small-data is defined for '{ROBOT}' and the robots with a protocol dataset "
                         f"({', '.join(LOCOMOTION_FULL)}), not '{robot}'")
    path = work / f"expert_seed{seed}_n{LOCOMOTION_FULL[robot]}.npz"
    if path.is_file():
        return load_dataset(path)
    dataset = experts.dataset(robot, size=LOCOMOTION_FULL[robot], seed=seed)
    dataset.save(path)
    return dataset


def training_table(training: dict) -> str:
    return markdown_table(["run", "learner", "transitions", "seconds", "steps/s"],
                          [[k, v["learner"], v["transitions"], f"{v['seconds']:.0f}",
                            f"{v['steps_per_second']:.1f}"] for k, v in training.items()])


def run_mixed(args, overrides: dict) -> dict:
    started = time.time()
    steps, episodes, n_seeds = settings(args)
    labels = list(args.learner or MIXED_LEARNERS)
    unknown = sorted(set(labels) - set(MIXED_LEARNERS))
    if unknown:
        raise DroilError(f"unknown mixed-data learner(s) {unknown} (known: {', '.join(MIXED_LEARNERS)})")
    check_overrides([MIXED_LEARNERS[k][0] for k in labels], overrides)
    tag = f"mixed_data_{ROBOT}" + ("_quick" if args.quick else "")
    out = Path(args.out)
    work = out / tag
    work.mkdir(parents=True, exist_ok=True)
    parts = mixed_parts(work, args.seed)
    mixed = concatenate(list(parts.values()), "mixed-data: lqr expert + drive lqr + noisy lqr")
    data = {"all": mixed, "expert": mixed.select(mixed.quality == 0, source="D_E")}
    jobs = {label: (MIXED_LEARNERS[label][0], data[MIXED_LEARNERS[label][1]]) for label in labels}
    training, policies = train_all(jobs, work, steps, n_seeds, args.seed, overrides)
    grid = nominal_grid(ROBOT, episodes)
    env = make_env(ROBOT, grid.task)
    spec = load_spec(ROBOT)
    ref = references(grid, 1000, {
        "expert": make_controller("lqr", env), "zero": make_controller("zero", env),
        "drive_lqr": LQRController(spec, v_ref=make_env(ROBOT, "drive").task.v_ref),
        "noisy_lqr": NoisyController(make_controller("lqr", env), env, MIXED["noise"], args.seed)})
    evaluation = evaluate(policies, grid, seed=1000, workers=args.workers)
    (work / "eval.json").write_text(json.dumps(evaluation, indent=2) + "\n")
    seeds = list(range(args.seed, args.seed + n_seeds))
    table = summarise(evaluation, labels, seeds, ref)
    rows = [[label, f"{MIXED_LEARNERS[label][0]} on {MIXED_LEARNERS[label][1]}", len(jobs[label][1]),
             f"{table[label]['score']:.1f} ± {table[label]['score_seed_std']:.1f}",
             f"{table[label]['fall_rate']:.2f}", " / ".join(f"{x:.0f}" for x in table[label]["scores"])]
            for label in labels]
    n_expert = int((parts["expert"].quality == 0).sum())
    composition = [
        ["D_E: LQR (stand)", n_expert, "100.0"],
        ["D_O: LQR (stand), moved from the expert set", len(parts["expert"]) - n_expert, "100.0"],
        ["D_O: LQR of the drive task (0.2 m/s)", len(parts["drive_lqr"]),
         f"{score(ref['drive_lqr']['mean'], ref):.1f}"],
        [f"D_O: noisy LQR (noise {MIXED['noise']:g} x half range)", len(parts["noisy_lqr"]),
         f"{score(ref['noisy_lqr']['mean'], ref):.1f}"]]
    seconds = time.time() - started
    markdown = (f"# Mixed-quality data on `{ROBOT}`{' (quick)' if args.quick else ''}\n\n"
                f"D2MIL's exp-med-0.6 split, wheel-legged analogue (demonstrator scores measured on the "
                f"benchmark's episodes):\n\n"
                + markdown_table(["part", "transitions", "demonstrator score"], composition)
                + "\n" + protocol("mixed-data", args, steps, episodes, seeds, grid, ref, seconds)
                + markdown_table(["run", "learner on data", "transitions", "score", "fall rate", "per seed"],
                                 rows)
                + "\n## Training\n\n" + training_table(training))
    payload = {"robot": ROBOT, "quick": args.quick, "steps": steps, "seeds": seeds, "episodes": episodes,
               "data": {k: {"size": len(v), "hash": v.hash} for k, v in data.items()}, "composition": MIXED,
               "references": ref, "training": training, "table": table, "wall_seconds": seconds,
               "machine": machine_info()}
    write_results(out, tag, payload, markdown)
    print(markdown)
    return payload


def main(args) -> int:
    from droil_ros.cli import parse_overrides

    if args.name == "mixed-data" and args.robot != ROBOT:
        raise DroilError(f"the mixed-data benchmark is defined for '{ROBOT}' only (its weaker "
                         f"demonstrators are LQR variants), not '{args.robot}'")
    overrides = parse_overrides(args.set)
    if args.name == "small-data":
        run_small(args, overrides)
    else:
        run_mixed(args, overrides)
    return 0
