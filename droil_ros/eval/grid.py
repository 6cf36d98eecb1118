"""Robustness grids: run policies in perturbed copies of an environment, magnitude by magnitude.

A grid file (``config/grids/<robot>.yaml``) names a robot and task and, per perturbation, the
magnitudes ``x`` to sweep and how each becomes a perturbation string: a template with ``{x}``
or one string per magnitude. Every policy sees the same episode seeds at every magnitude
(common random numbers), so differences between policies are not seed noise. Perturbations
listed under ``heldout`` are averaged separately: they are for final numbers, never for tuning.
Those under ``beyond`` (magnitudes past the papers' ranges) are averaged separately too, so that
the grid average is the papers' protocol.
"""

from __future__ import annotations

import math
import pickle
import re
import sys
import uuid
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from tqdm import tqdm

from droil_ros.bench import markdown_table
from droil_ros.errors import DroilError
from droil_ros.execution import Executor, executor
from droil_ros.resources import data_path
from droil_ros.robots.spec import load_spec
from droil_ros.sim.envs import RobotEnv, make_env
from droil_ros.sim.rollout import Controller, run_episode

GRID_KEYS = ("robot", "task", "episodes", "seconds", "perturbations", "heldout", "beyond")
SWEEP_KEYS = ("x", "perturb")
# reserved: they sit beside perturbation names
SUMMARY_KEYS = ("grid_average", "heldout_average", "beyond_average")


@dataclass(frozen=True)
class Sweep:
    """One perturbation over its magnitudes: ``perturb[i]`` is applied at (plotted) ``x[i]``."""

    x: tuple[float, ...]
    perturb: tuple[str, ...]
    template: str | None = None  # the file's "name={x}", when it gave one (axis label)


@dataclass(frozen=True)
class Grid:
    robot: str
    task: str
    episodes: int
    seconds: float | None  # episode length override; None: the task's own
    perturbations: dict[str, Sweep]
    heldout: tuple[str, ...]
    source: str
    beyond: tuple[str, ...] = ()  # past the papers' ranges: averaged apart from the grid average

    def to_dict(self) -> dict:
        return {
            "source": self.source, "robot": self.robot, "task": self.task,
            "episodes": self.episodes, "seconds": self.seconds,
            "perturbations": {name: {"x": list(s.x), "perturb": list(s.perturb), "template": s.template}
                              for name, s in self.perturbations.items()},
            "heldout": list(self.heldout), "beyond": list(self.beyond),
        }


def available_grids() -> list[str]:
    return sorted(p.stem for p in data_path("config", "grids").glob("*.yaml"))


def load_grid(path_or_robot: str | Path) -> Grid:
    """A grid by robot id (the shipped ``config/grids/<id>.yaml``) or by YAML path.

    Every expanded perturbation is applied once to the robot's environment, so a misspelt joint
    fails here, in a millisecond, rather than hours into an evaluation.
    """
    path = source = Path(path_or_robot)
    if path.suffix not in (".yaml", ".yml"):
        source = Path("config", "grids", f"{path_or_robot}.yaml")  # as results record it: no machine's path
        path = data_path(*source.parts)
        if not path.is_file():
            raise DroilError(f"no grid for robot '{path_or_robot}' "
                             f"(shipped: {', '.join(available_grids())})")
    elif not path.is_file():
        raise DroilError(f"grid file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise DroilError(f"{path}: not valid YAML ({exc.__class__.__name__})") from None
    try:
        return _parse_grid(raw, str(source))
    except DroilError as exc:
        raise DroilError(f"{path}: {exc}") from None


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _parse_grid(raw, source: str) -> Grid:
    if not isinstance(raw, dict):
        raise DroilError("a grid must be a YAML mapping")
    unknown = sorted(set(map(str, raw)) - set(GRID_KEYS))
    if unknown:
        raise DroilError(f"unknown key(s) {', '.join(unknown)} (known: {', '.join(GRID_KEYS)})")
    if "robot" not in raw:
        raise DroilError("missing 'robot'")
    spec = load_spec(str(raw["robot"]))
    task = str(raw.get("task") or spec.default_task)
    spec.task(task)
    episodes = raw.get("episodes", 10)
    if not isinstance(episodes, int) or isinstance(episodes, bool) or episodes < 1:
        raise DroilError(f"'episodes' must be an integer >= 1, not {episodes!r}")
    seconds = raw.get("seconds")
    if seconds is not None and not (_is_number(seconds) and seconds > 0):
        raise DroilError(f"'seconds' must be a number > 0 or null, not {seconds!r}")
    sweeps = raw.get("perturbations")
    if not isinstance(sweeps, dict) or not sweeps:
        raise DroilError("'perturbations' must be a non-empty mapping name: {x: [...], perturb: ...}")
    env = make_env(spec, task)
    perturbations = {str(name): _parse_sweep(str(name), value, env) for name, value in sweeps.items()}
    heldout = raw.get("heldout") or []
    if not isinstance(heldout, list) or any(str(h) not in perturbations for h in heldout):
        raise DroilError(f"'heldout' must list perturbation names of this grid, not {heldout!r}")
    beyond = raw.get("beyond") or []
    if not isinstance(beyond, list) or any(str(b) not in perturbations or b in heldout for b in beyond):
        raise DroilError(f"'beyond' must list perturbation names of this grid not held out, not {beyond!r}")
    return Grid(str(raw["robot"]), task, episodes, None if seconds is None else float(seconds),
                perturbations, tuple(map(str, heldout)), source, tuple(map(str, beyond)))


def _parse_sweep(name: str, raw, env: RobotEnv) -> Sweep:
    where = f"perturbation '{name}'"
    if name in SUMMARY_KEYS:
        raise DroilError(f"{where}: the name is reserved for the summary")
    if not isinstance(raw, dict) or sorted(map(str, raw)) != sorted(SWEEP_KEYS):
        raise DroilError(f"{where}: needs exactly the keys x and perturb")
    x = raw["x"]
    if not isinstance(x, list) or not x or not all(_is_number(v) for v in x):
        raise DroilError(f"{where}: 'x' must be a non-empty list of numbers")
    template = raw["perturb"] if isinstance(raw["perturb"], str) else None
    if template is not None:
        if "{x}" not in template:
            raise DroilError(f"{where}: template '{template}' has no {{x}}")
        perturb = [template.replace("{x}", f"{v:g}") for v in x]
    else:
        perturb = raw["perturb"]
        if not isinstance(perturb, list) or len(perturb) != len(x) \
                or not all(isinstance(p, str) for p in perturb):
            raise DroilError(f"{where}: 'perturb' must be a template with {{x}} "
                             f"or a list of {len(x)} strings, one per x")
    for text in perturb:
        try:
            env.set_perturbation(text)
        except DroilError as exc:
            raise DroilError(f"{where}: '{text}': {exc}") from None
    return Sweep(tuple(float(v) for v in x), tuple(perturb), template)


class _Runner:
    """Runs the episodes of one (policy, perturbation name, magnitude index) job on one env."""

    def __init__(self, grid: Grid, policies: dict[str, Controller], episodes: int, seed: int):
        self.grid, self.policies, self.episodes, self.seed = grid, policies, episodes, seed
        self.env = make_env(grid.robot, grid.task)

    def __call__(self, job: tuple[str, str, int]) -> tuple[list[float], list[bool]]:
        policy, name, i = job
        self.env.set_perturbation(self.grid.perturbations[name].perturb[i])
        runs = [run_episode(self.env, self.policies[policy], self.seed + k, self.grid.seconds)
                for k in range(self.episodes)]
        return [e.ret for e in runs], [e.fell for e in runs]


_runners: dict[str, _Runner] = {}  # per process: the runner of the evaluation now running


def _run_job(token: str, args: bytes, job: tuple[str, str, int]):
    """One job of evaluation ``token``: a worker unpickles its runner's arguments (loading the
    policies) and builds its env once, at its first job of the evaluation."""
    runner = _runners.get(token)
    if runner is None:
        _runners.clear()
        runner = _runners[token] = _Runner(*pickle.loads(args))
    return runner(job)


def evaluate(policies: dict[str, Controller], grid: Grid, episodes: int | None = None,
             seed: int = 0, workers: int | Executor = 1, progress: bool = True) -> dict:
    """Returns and falls of every policy at every magnitude of every perturbation in ``grid``.

    A policy maps an observation to an action; its ``reset()``, if any, is called at each
    episode start. Episode k always uses seed ``seed + k`` (initial state and noise draws), for
    every policy and magnitude. ``workers``: local processes, or an ``execution.Executor`` (a Ray
    cluster, processes kept open by the caller). Beyond one process the policies are pickled into
    each worker, so they must be picklable (e.g. hold a file path and load lazily); the result
    does not depend on where the jobs ran. The result is
    JSON-able: robot, task, episodes, seed, grid,
    results[policy][perturbation] = [{x, perturb, returns, falls, mean, std, fall_rate}, ...]
    (one per magnitude) and summary[policy] = {perturbation: mean, grid_average, heldout_average}.
    """
    episodes = grid.episodes if episodes is None else episodes
    if not policies:
        raise DroilError("no policies to evaluate")
    if episodes < 1 or seed < 0:
        raise DroilError(f"need episodes >= 1 and seed >= 0 (got {episodes}, {seed})")
    jobs = [(policy, name, i) for policy in policies
            for name, sweep in grid.perturbations.items() for i in range(len(sweep.x))]
    results = {policy: {name: [] for name in grid.perturbations} for policy in policies}
    with tqdm(total=len(jobs) * episodes, desc=f"eval {grid.robot}/{grid.task}", unit="ep",
              disable=not progress, file=sys.stderr) as bar, \
            (nullcontext(workers) if isinstance(workers, Executor) else executor(workers)) as run:
        args = (grid, policies, episodes, seed)
        if type(run) is Executor:  # this process
            outcomes = map(_Runner(*args), jobs)
        else:
            try:
                blob = pickle.dumps(args)
            except Exception as exc:
                raise DroilError(f"workers > 1 needs picklable policies ({exc})") from None
            outcomes = run.map(_run_job, jobs, (uuid.uuid4().hex, blob))
        for (policy, name, i), (returns, falls) in zip(jobs, outcomes, strict=True):
            sweep = grid.perturbations[name]
            results[policy][name].append({
                "x": sweep.x[i], "perturb": sweep.perturb[i], "returns": returns, "falls": falls,
                "mean": float(np.mean(returns)), "std": float(np.std(returns)),
                "fall_rate": float(np.mean(falls)),
            })
            bar.update(episodes)
    return {"robot": grid.robot, "task": grid.task, "episodes": episodes, "seed": seed,
            "grid": grid.to_dict(), "results": results,
            "summary": _summary(results, grid.heldout, grid.beyond)}


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _summary(results: dict, heldout: tuple[str, ...], beyond: tuple[str, ...] = ()) -> dict:
    """Per policy: each perturbation's mean return over its magnitudes (an area under the
    curve), their average over the tuning perturbations and, separately, over the held-out
    and over those beyond the papers' ranges."""
    summary = {}
    for policy, sweeps in results.items():
        means = {name: float(np.mean([p["mean"] for p in points])) for name, points in sweeps.items()}
        summary[policy] = {
            **means,
            "grid_average": _mean([v for name, v in means.items() if name not in heldout + beyond]),
            "heldout_average": _mean([v for name, v in means.items() if name in heldout]),
            "beyond_average": _mean([v for name, v in means.items() if name in beyond]),
        }
    return summary


def plot(result: dict, out_png: str | Path) -> Path:
    """Mean return vs x with a ±1 std band: one subplot per perturbation, one line per policy.
    Policies named ``<learner>_seed<k>`` share their learner's colour and differ by line style,
    so a benchmark's 12 lines stay readable; where a learner has more than four seeds, its
    seeds become one line (the mean over seeds, the band their std).

    Uses matplotlib's object API (rendered by Agg), so no global backend or display is touched.
    """
    from matplotlib.figure import Figure

    sweeps, heldout = result["grid"]["perturbations"], set(result["grid"]["heldout"])
    learners = [re.sub(r"_seed\d+$", "", policy) for policy in result["results"]]
    band = f"mean ± std over {result['episodes']} episodes"
    if max(learners.count(learner) for learner in learners) > 4:
        result = {**result, "results": _over_seeds(result["results"], learners)}
        learners = list(result["results"])
        band = f"mean over training seeds ± their std, each over {result['episodes']} episodes"
    colours = {learner: f"C{i % 10}" for i, learner in enumerate(dict.fromkeys(learners))}
    styles = [("-", "--", ":", "-.")[learners[:k].count(learner) % 4]
              for k, learner in enumerate(learners)]
    cols = min(4, len(sweeps))
    rows = math.ceil(len(sweeps) / cols)
    fig = Figure(figsize=(4 * cols, 3.2 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, name in zip(axes, sweeps, strict=False):
        for (policy, per_sweep), learner, style in zip(result["results"].items(), learners, styles,
                                                       strict=True):
            points = per_sweep[name]
            x = [p["x"] for p in points]
            mean, std = np.array([p["mean"] for p in points]), np.array([p["std"] for p in points])
            ax.plot(x, mean, style, marker="o", markersize=3, color=colours[learner], label=policy)
            ax.fill_between(x, mean - std, mean + std, color=colours[learner], alpha=0.1)
        ax.set_title(name + (" (held out)" if name in heldout else ""), fontsize="medium")
        ax.set_xlabel(sweeps[name]["template"] or "x", fontsize="small")
        ax.set_ylabel("return", fontsize="small")
    for ax in axes[len(sweeps):]:
        ax.set_visible(False)
    axes[0].legend(fontsize="small")
    fig.suptitle(f"{result['robot']} / {result['task']}: return ({band}, episode seeds from "
                 f"{result['seed']})")
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out


def _over_seeds(results: dict, learners: list[str]) -> dict:
    """Per learner and magnitude: the mean over its seeds of their mean returns, and their std."""
    grouped = {}
    for learner in dict.fromkeys(learners):
        seeds = [per for per, name in zip(results.values(), learners, strict=True) if name == learner]
        grouped[learner] = {}
        for sweep, points in seeds[0].items():
            means = np.array([[p["mean"] for p in per[sweep]] for per in seeds])  # (seeds, magnitudes)
            grouped[learner][sweep] = [{"x": p["x"], "mean": float(m), "std": float(d)}
                                       for p, m, d in zip(points, means.mean(0), means.std(0), strict=True)]
    return grouped


def summary_table(result: dict) -> str:
    """Markdown: one row per policy; each perturbation's mean return over its magnitudes, the
    grid average (tuning perturbations) and the held-out average."""
    names, heldout = list(result["grid"]["perturbations"]), result["grid"]["heldout"]
    beyond = result["grid"].get("beyond", [])
    header = ["policy", *(n + (" (held out)" if n in heldout else " (beyond)" if n in beyond else "")
                          for n in names), "grid average"]
    keys = [*names, "grid_average"] + (["heldout_average"] if heldout else []) + (
        ["beyond_average"] if beyond else [])
    header += (["held-out average"] if heldout else []) + (["beyond average"] if beyond else [])

    def cell(value):
        return "-" if value is None else f"{value:.1f}"

    rows = [[policy, *(cell(s[k]) for k in keys)] for policy, s in result["summary"].items()]
    return markdown_table(header, rows)
