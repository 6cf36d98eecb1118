"""``droil bench tune``: BE-DROIL hyperparameter sweeps, on the grid's tuning perturbations
only (held-out ones are dropped), so the final robustness numbers are not tuned on.

Sweeps: ``alpha`` (the first one, on the old default, now ``be_droil_legacy``) and
``adversary`` (issue 20: centring and the relaxed balance equation; every candidate names its
options, so a later change of defaults does not change what it ran). Resumable: trained
candidates are reused (``train_and_export(reuse=True)``) and each candidate's evaluation is kept
in ``candidate<i>.eval.json`` under the training run's key (code, config, data, seeds) and the
evaluation settings.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from droil_ros.bench import ADVERSARY, adversary_summary, machine_info, markdown_table, write_results
from droil_ros.bench.robustness import expert_dataset
from droil_ros.eval.grid import evaluate, load_grid
from droil_ros.pipeline import train_and_export
from droil_ros.policy.runtime import OnnxPolicy
from droil_ros.robots import load_spec

SWEEPS = {
    "alpha": (
        ("bc", {}),
        ("be_droil_legacy", {"alpha": 0.3}),
        ("be_droil_legacy", {"alpha": 1.0}),
        ("be_droil_legacy", {"alpha": 3.0}),
        ("be_droil_legacy", {"f": "kl", "alpha": 1.0}),
        ("be_droil_legacy", {"k_dual": 5}),
        ("be_droil_legacy", {"gamma": 0.9}),
    ),
    "adversary": (
        ("bc", {}),
        ("be_droil_legacy", {}),
        ("be_droil", {"init_states": "centred", "nu_bound": None}),
        ("be_droil", {"gamma": 1.0, "nu_bound": None}),
        ("be_droil", {"init_states": "centred", "nu_bound": 1.0}),
        ("be_droil", {"init_states": "centred", "nu_bound": 3.0}),
        ("be_droil", {"init_states": "centred", "nu_bound": 1.0, "f": "tv"}),
        ("be_droil_nu0", {}),
        ("be_droil", {"init_states": "centred", "nu_bound": 10.0}),  # added after 0-5 were seen
    ),
}


def label(name: str, overrides: dict) -> str:
    return name + "".join(f" {k}={v}" for k, v in overrides.items())


def run(robot: str, out_dir: Path, quick: bool = False, n_seeds: int = 3, seed: int = 0,
        steps: int | None = None, episodes: int | None = None, workers: int = 2,
        sweep: str = "alpha") -> dict:
    started = time.time()
    tag = f"tune_{robot}" + ("" if sweep == "alpha" else f"_{sweep}")
    work = out_dir / tag
    work.mkdir(parents=True, exist_ok=True)
    spec = load_spec(robot)
    grid = load_grid(robot)
    grid = replace(grid, heldout=(), perturbations={k: v for k, v in grid.perturbations.items()
                                                   if k not in grid.heldout})
    dataset = expert_dataset(robot, work, seed)
    steps = steps or (2000 if quick else 10000)
    episodes = episodes or (2 if quick else 4)
    rows, raw = [], {}
    for i, (name, overrides) in enumerate(SWEEPS[sweep]):
        result = train_and_export(name, dataset, work / f"candidate{i}.onnx", robot=spec,
                                  steps=steps, n_seeds=n_seeds, seed=seed, overrides=overrides,
                                  reuse=True)
        trained = json.loads((work / f"candidate{i}.run.json").read_text())["key"]
        key = {"label": label(name, overrides), "trained": trained, "episodes": episodes,
               "perturbations": list(grid.perturbations)}
        cache = work / f"candidate{i}.eval.json"
        cached = json.loads(cache.read_text()) if cache.is_file() else {}
        if cached.get("key") != key:
            policies = {f"seed{k}": OnnxPolicy(p, spec) for k, p in enumerate(result.policies)}
            evaluation = evaluate(policies, grid, episodes=episodes, seed=2000, workers=workers)
            cached = {"key": key, "summary": evaluation["summary"]}
            cache.write_text(json.dumps(cached, indent=2) + "\n")
        averages = [s["grid_average"] for s in cached["summary"].values()]
        adversary = adversary_summary(result.log)
        raw[key["label"]] = {"grid_average_per_seed": averages, "summary": cached["summary"],
                             "adversary": adversary}
        rows.append([key["label"], f"{np.mean(averages):.1f} ± {np.std(averages):.1f}",
                     *[f"{adversary[k]:.2f}" if adversary else "-" for k in ADVERSARY]])
    markdown = (f"# BE-DROIL tuning on `{robot}` (sweep `{sweep}`)\n\nTuning perturbations only "
                f"({', '.join(grid.perturbations)}; held-out ones excluded), {episodes} episodes per "
                f"magnitude (seeds 2000..), {steps} training steps, {n_seeds} seeds. Cell: grid "
                f"average return, mean ± std over training seeds; adversary diagnostics: median over "
                f"the second half of training of the seed mean (E_w[l]/E[l] > 1: loss-seeking). "
                f"Wall time of this invocation {(time.time() - started) / 60:.1f} min (evaluations "
                f"and trainings done before are reused). Reproduce: `droil bench tune --robot {robot}"
                f"{' --quick' if quick else ''} --sweep {sweep} --steps {steps} --episodes {episodes} "
                f"--seeds {n_seeds} --workers {workers}`\n\n"
                + markdown_table(["configuration", "grid average (tuning perturbations)",
                                  *ADVERSARY.values()], rows))
    payload = {"robot": robot, "sweep": sweep, "steps": steps, "episodes": episodes, "seeds": n_seeds,
               "results": raw, "machine": machine_info()}
    write_results(out_dir, tag, payload, markdown)
    print(markdown)
    return payload
