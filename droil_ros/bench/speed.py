"""``droil bench training-speed``: gradient steps per second of every learner at batch 256,
several seeds batched into one network vs the same seeds one after another, and a plain
single-seed PyTorch BC loop as the reference, all in the same run (BENCHMARKS.md §5)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch
from torch import nn

from droil_ros import algos
from droil_ros.bench import machine_info, markdown_table, write_results
from droil_ros.data.collect import collect
from droil_ros.data.dataset import QUALITIES
from droil_ros.robots import load_spec


def plain_bc_loop(dataset, steps: int, hidden: int = 256, batch: int = 256) -> float:
    """Steps/s of the most straightforward BC loop: nn.Sequential, Adam, random batches."""
    obs = torch.as_tensor(dataset.observations)
    act = torch.as_tensor(dataset.actions)
    net = nn.Sequential(nn.Linear(obs.shape[1], hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                        nn.ReLU(), nn.Linear(hidden, act.shape[1]), nn.Tanh())
    opt = torch.optim.Adam(net.parameters(), lr=3e-4)
    started = time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(len(obs), (batch,))
        loss = ((net(obs[idx]) - act[idx]) ** 2).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return steps / (time.perf_counter() - started)


def seed_steps_per_second(name: str, dataset, robot, steps: int, seeds: int, batched: bool) -> float:
    """Seed-steps per second: ``seeds`` seeds batched in one network, or one after another."""
    groups = [seeds] if batched else [1] * seeds
    # model-based learners: rollouts start (and are refreshed) within the timed steps
    fields = {f.name for f in dataclasses.fields(algos.make_config(name))}
    schedule = {k: steps // 10 for k in ("warmup_steps", "rollout_every") if k in fields}
    started = time.perf_counter()
    for k, size in enumerate(groups):
        learner = algos.create(name, dataset, robot, seed=k, n_seeds=size, steps=steps, **schedule)
        learner.fit(progress=False)
    return steps * seeds / (time.perf_counter() - started)


def run(robot: str, out_dir: Path, quick: bool = False, seeds: int = 3) -> dict:
    spec = load_spec(robot)
    dataset = collect(robot, "lqr", episodes=20, seconds=2.5, progress=False)
    dataset.quality[1::2] = QUALITIES.index("other")  # for the mixed-quality learners; others ignore it
    steps = 100 if quick else 500
    threads = torch.get_num_threads()
    rows, raw = [], {"plain_bc_loop": plain_bc_loop(dataset, steps)}
    for name in algos.available():
        single = seed_steps_per_second(name, dataset, spec, steps, seeds, batched=False)
        batched = seed_steps_per_second(name, dataset, spec, steps, seeds, batched=True)
        raw[name] = {"sequential": single, "batched": batched}
        rows.append([name, f"{single:.0f}", f"{batched:.0f}", f"{batched / single:.2f}x"])
    rows.append(["plain PyTorch BC loop (1 seed)", f"{raw['plain_bc_loop']:.0f}", "-", "-"])
    markdown = (f"# Training speed on `{robot}`\n\nSeed-steps per second (one gradient step of one "
                f"seed), batch 256, MLP 256-256, {steps} steps, {seeds} seeds, {threads} torch "
                f"thread(s), preset `paper`. Reproduce: `droil bench training-speed"
                f"{' --quick' if quick else ''} --threads {threads}`\n\n"
                + markdown_table(["learner", f"{seeds} seeds one after another",
                                  f"{seeds} seeds batched", "batched speedup"], rows))
    payload = {"robot": robot, "steps": steps, "seeds": seeds, "threads": threads,
               "results": raw, "machine": machine_info()}
    write_results(out_dir, f"training_speed_t{threads}", payload, markdown)
    print(markdown)
    return payload
