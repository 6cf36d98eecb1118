"""``droil bench lqr``: the LQR expert's falls and return, nominal and under perturbations."""

from __future__ import annotations

import time
from pathlib import Path

from tqdm import tqdm

from droil_ros.bench import machine_info, markdown_table, write_results
from droil_ros.sim.envs import make_env
from droil_ros.sim.rollout import make_controller, run_episode, summarise

# the five shifts, then harsher ones to show where the expert breaks
PERTURBATIONS = (
    "nominal", "mass=1.5", "friction=0.3", "gear=0.5", "latency=2", "gravity=1.5",
    "mass=3", "friction=0.15", "gear=0.25", "latency=6", "gravity=3",
)


def run(robot: str, episodes: int, seed: int, out_dir: Path, quick: bool = False) -> dict:
    perturbations = PERTURBATIONS[:6] if quick else PERTURBATIONS
    started = time.time()
    rows, raw = [], {"stand": {}, "drive": {}}
    for task in ("stand", "drive"):
        cases = perturbations if task == "stand" else ("nominal",)
        for perturbation in cases:
            env = make_env(robot, task, perturbation)
            controller = make_controller("lqr", env)
            eps = [run_episode(env, controller, seed + i)
                   for i in tqdm(range(episodes), desc=f"{task} {perturbation}", leave=False)]
            summary = summarise(eps)
            raw[task][perturbation] = {"summary": summary, "episodes": [e.to_dict() for e in eps]}
            speed = "-" if summary["mean_speed"] is None else f"{summary['mean_speed']:.3f}"
            rows.append([task, perturbation, f"{summary['fall_rate']:.2f}",
                         f"{summary['return']:.0f} ± {summary['return_std']:.0f}",
                         f"{summary['max_tilt']:.3f}", speed])
    seconds = time.time() - started
    env = make_env(robot, "stand")
    header = (f"# LQR expert on `{robot}`\n\n{episodes} episodes per row, seeds {seed}.."
              f"{seed + episodes - 1}, initial tilt uniform in ±{env.task.init_tilt} rad, "
              f"{env.task.seconds:g} s episodes at {env.robot.control_rate_hz:g} Hz. "
              f"Speed: mean x_dot after 5 s. Wall time {seconds:.0f} s.\n"
              f"Reproduce: `droil bench lqr --robot {robot} --episodes {episodes}`\n\n")
    table = markdown_table(["task", "perturbation", "fall rate", "return (mean ± std)",
                            "max tilt (rad)", "speed (m/s)"], rows)
    payload = {"robot": robot, "episodes": episodes, "seed": seed, "wall_seconds": seconds,
               "machine": machine_info(), "results": raw}
    write_results(out_dir, f"lqr_{robot}", payload, header + table)
    print(header + table)
    return payload
