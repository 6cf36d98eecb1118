"""What every learner shares: batched-seed networks, normalisation, the training loop, export.

Several seeds train as one network whose weights carry a leading "member" axis (``baddbmm``),
which is what makes 3-5 seeds affordable on 2 CPU cores. Member ``k`` is initialised and fed
batches from its own generators seeded with ``seed + k``, so it does not depend on how many
other members train beside it; the per-member losses are summed, which keeps their gradients
(and Adam's element-wise statistics) independent.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from droil_ros.data.dataset import TransitionDataset
from droil_ros.errors import DroilError
from droil_ros.robots.spec import RobotSpec

STD_FLOOR = 1e-3


def check_choice(what: str, value: str, known) -> None:
    """One wording for every option that takes one of a fixed set of values."""
    if value not in known:
        raise DroilError(f"unknown {what} '{value}' (known: {', '.join(known)})")


def generator(seed: int, salt: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + salt)


def adversary_diagnostics(w: torch.Tensor, losses: torch.Tensor) -> dict[str, torch.Tensor]:
    """Is a reweighting learner's adversary a worst case? For the weights ``w`` it trains with and
    the per-sample ``losses`` (both (members, batch), detached), the mean over members of
    ``w_loss_ratio`` = E_w[l]/E[l] (> 1: the weights seek the loss; E_w normalised by E[w]),
    ``w_loss_corr`` = corr(w, l) (0 where w is constant), ``w_ess`` = (sum w)^2 / (n sum w^2)
    (the effective fraction of the batch) and ``w_max`` (relative to the mean weight)."""
    mean_w = w.mean(-1, keepdim=True).clamp_min(1e-30)
    w = w / mean_w
    ratio = (w * losses).mean(-1) / losses.mean(-1).clamp_min(1e-30)
    wc, lc = w - w.mean(-1, keepdim=True), losses - losses.mean(-1, keepdim=True)
    corr = (wc * lc).mean(-1) / ((wc**2).mean(-1) * (lc**2).mean(-1)).sqrt().clamp_min(1e-30)
    ess = w.sum(-1) ** 2 / (w.shape[-1] * (w**2).sum(-1)).clamp_min(1e-30)
    return {"w_loss_ratio": ratio.mean(), "w_loss_corr": corr.mean(), "w_ess": ess.mean(),
            "w_max": w.max(-1).values.mean()}


class EnsembleLinear(nn.Module):
    """``members`` independent linear layers applied to inputs of shape (members, batch, in)."""

    def __init__(self, fan_in: int, fan_out: int, generators: list[torch.Generator]):
        super().__init__()
        bound = 1.0 / math.sqrt(fan_in)  # nn.Linear's default initialisation
        self.weight = nn.Parameter(torch.stack([
            torch.empty(fan_in, fan_out).uniform_(-bound, bound, generator=g) for g in generators]))
        self.bias = nn.Parameter(torch.stack([
            torch.empty(1, fan_out).uniform_(-bound, bound, generator=g) for g in generators]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class EnsembleMLP(nn.Module):
    def __init__(self, sizes: list[int], seeds: list[int], salt: int):
        super().__init__()
        generators = [generator(s, salt) for s in seeds]
        self.layers = nn.ModuleList(EnsembleLinear(a, b, generators) for a, b in pairwise(sizes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            x = torch.relu(layer(x))
        return self.layers[-1](x)

    def member(self, k: int) -> nn.Sequential:
        """Member ``k`` as a plain ``nn.Sequential`` (what gets exported)."""
        modules: list[nn.Module] = []
        for i, layer in enumerate(self.layers):
            linear = nn.Linear(layer.weight.shape[1], layer.weight.shape[2])
            linear.weight.data.copy_(layer.weight.data[k].T)
            linear.bias.data.copy_(layer.bias.data[k, 0])
            modules.append(linear)
            if i < len(self.layers) - 1:
                modules.append(nn.ReLU())
        return nn.Sequential(*modules)


class ExportPolicy(nn.Module):
    """Raw observation -> action in robot units: normalisation, MLP, tanh scaling, clipping."""

    def __init__(self, mlp: nn.Module, mean: torch.Tensor, std: torch.Tensor, robot: RobotSpec):
        super().__init__()
        self.mlp = mlp
        low = torch.as_tensor(robot.action_low, dtype=torch.float32)
        high = torch.as_tensor(robot.action_high, dtype=torch.float32)
        for name, value in (("mean", mean), ("std", std), ("low", low), ("high", high),
                            ("center", (high + low) / 2), ("half_range", (high - low) / 2)):
            self.register_buffer(name, value.clone().float())

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        u = torch.tanh(self.mlp((obs - self.mean) / self.std))
        return torch.minimum(torch.maximum(self.center + self.half_range * u, self.low), self.high)


@dataclass
class LearnerConfig:
    """Fields every learner has; subclasses add theirs. Presets: ``fast`` (tests), ``paper``."""

    steps: int = 20_000
    batch_size: int = 256
    lr: float = 3e-4
    hidden: tuple[int, ...] = (256, 256)
    log_every: int = 100
    # the policy's learning rate is multiplied by lr_decay every lr_decay_every steps (DRBC's code:
    # 0.9 every 10,000 steps, which leaves 7 % of it after 250k steps); 1.0: constant
    lr_decay: float = 1.0
    lr_decay_every: int = 10_000

    PRESETS = {"fast": dict(steps=300, hidden=(64, 64), log_every=50), "paper": {}}

    @classmethod
    def preset(cls, name: str, **overrides) -> LearnerConfig:
        if name not in cls.PRESETS:
            raise DroilError(f"unknown config preset '{name}' (presets: {', '.join(cls.PRESETS)})")
        config = replace(cls(), **cls.PRESETS[name])
        known = {f.name for f in fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise DroilError(f"unknown config keys {sorted(unknown)} for {cls.__name__}")
        return replace(config, **overrides)

    def to_dict(self) -> dict:
        return asdict(self)


class Learner:
    """Base: data on tensors, the batched policy, the loop. Subclasses implement ``update``."""

    name = "base"
    Config = LearnerConfig
    needs_rewards = False

    def __init__(self, config: LearnerConfig, dataset: TransitionDataset, robot: RobotSpec,
                 seed: int = 0, n_seeds: int = 1):
        dataset.check_trainable(robot, need_rewards=self.needs_rewards)
        if n_seeds < 1:
            raise DroilError("n_seeds must be >= 1")
        if not 0 < config.lr_decay <= 1 or config.lr_decay_every < 1:
            raise DroilError(f"need 0 < lr_decay <= 1 and lr_decay_every >= 1 (got {config.lr_decay}, "
                             f"{config.lr_decay_every})")
        self.config, self.robot, self.dataset = config, robot, dataset
        self.seeds = [seed + k for k in range(n_seeds)]
        obs = torch.as_tensor(dataset.observations)
        self.obs_mean = obs.mean(0)
        self.obs_std = obs.std(0, unbiased=False).clamp_min(STD_FLOOR)
        low = torch.as_tensor(robot.action_low, dtype=torch.float32)
        high = torch.as_tensor(robot.action_high, dtype=torch.float32)
        self.obs = self.normalise(obs)
        self.next_obs = self.normalise(torch.as_tensor(dataset.next_observations))
        self.actions = ((torch.as_tensor(dataset.actions) - (high + low) / 2) / ((high - low) / 2))
        self.actions = self.actions.clamp(-1.0, 1.0)
        self.terminals = torch.as_tensor(dataset.terminals, dtype=torch.float32)
        starts = dataset.episode_starts if dataset.episode_starts.any() else np.ones(len(dataset), bool)
        self.init_obs = self.obs[torch.as_tensor(starts)]
        sizes = [robot.obs_dim, *config.hidden, robot.act_dim]
        self.policy = EnsembleMLP(sizes, self.seeds, salt=1)
        self.policy_opt = torch.optim.Adam(self.policy.parameters(), lr=config.lr)
        self.policy_batches = [generator(s, 2) for s in self.seeds]
        self.step = 0
        self.history: list[dict] = []  # every logged row, so that a resumed run keeps one log
        self.train_seconds = 0.0

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    def normalise(self, obs: torch.Tensor) -> torch.Tensor:
        return (obs - self.obs_mean) / self.obs_std

    def sample(self, generators: list[torch.Generator], size: int, n: int | None = None) -> torch.Tensor:
        """Indices of shape (members, size), one generator per member."""
        n = len(self.obs) if n is None else n
        return torch.stack([torch.randint(n, (size,), generator=g) for g in generators])

    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """Normalised action in [-1, 1] for normalised observations (members, batch, obs)."""
        return torch.tanh(self.policy(obs))

    def bc_losses(self, idx: torch.Tensor) -> torch.Tensor:
        """Squared action error per sample, shape (members, batch), in normalised units."""
        return ((self.act(self.obs[idx]) - self.actions[idx]) ** 2).sum(-1)

    def policy_step(self, losses: torch.Tensor) -> None:
        """One Adam step on the sum over members of each member's mean loss."""
        self.policy_opt.zero_grad(set_to_none=True)
        losses.mean(-1).sum().backward()
        self.policy_opt.step()

    def begin(self, steps: int) -> None:
        """Called as a fit of ``steps`` steps starts: learners with schedules set them here."""

    def update(self) -> dict[str, torch.Tensor]:
        """One training step; returns scalar metrics (read only when logged)."""
        raise NotImplementedError

    def fit(self, steps: int | None = None, progress: bool = True, log_path: str | Path | None = None,
            desc: str | None = None, callback: Callable[[dict], None] | None = None,
            checkpoint: Callable[[], None] | None = None, checkpoint_every: float = 600.0,
            resume: bool = False) -> list[dict]:
        """Train ``steps`` more steps. Every ``log_every`` steps (and at the end) the metrics (mean
        over seeds) go to ``history``, to the CSV at ``log_path`` (the whole history, earlier fits
        included) and to ``callback`` (e.g. a progress topic); this call's rows are returned.

        At a logged step at least ``checkpoint_every`` seconds after the last, ``checkpoint()`` is
        called: the learner is then whole (networks, optimisers, generators, buffers, history) and
        can be pickled. Unpickled, ``fit(rest, resume=True)`` finishes the run bit for bit: the
        schedules ``begin`` set at its start are kept."""
        steps = self.config.steps if steps is None else steps
        if not resume:
            self.begin(steps)
        rows: list[dict] = []
        started = last_checkpoint = time.perf_counter()
        seconds_before = self.train_seconds
        handle = open(log_path, "w", newline="") if log_path is not None else None
        writer = None
        if handle is not None and self.history:  # a resumed run: its log so far first
            writer = csv.DictWriter(handle, fieldnames=list(self.history[0]))
            writer.writeheader()
            writer.writerows(self.history)
        try:
            bar = tqdm(range(steps), desc=desc or self.name, disable=not progress, leave=False)
            for i in bar:
                metrics = self.update()
                self.step += 1
                if self.step % self.config.lr_decay_every == 0 and self.config.lr_decay != 1.0:
                    for group in self.policy_opt.param_groups:  # kept in the optimiser: resumes
                        group["lr"] *= self.config.lr_decay
                self.train_seconds = seconds_before + time.perf_counter() - started
                if self.step % self.config.log_every != 0 and i != steps - 1:
                    continue
                row = {"step": self.step, "seconds": round(self.train_seconds, 3),
                       "lr": self.policy_opt.param_groups[0]["lr"],
                       **{k: float(v) for k, v in metrics.items()}}
                rows.append(row)
                self.history.append(row)
                bar.set_postfix(loss=f"{row.get('loss', float('nan')):.4g}")
                if handle is not None:
                    if writer is None:
                        writer = csv.DictWriter(handle, fieldnames=list(row))
                        writer.writeheader()
                    writer.writerow(row)
                    handle.flush()
                if callback is not None:  # e.g. a checkpoint selection's rollouts: not training
                    calling = time.perf_counter()
                    callback(row)
                    seconds_before -= time.perf_counter() - calling
                due = time.perf_counter() - last_checkpoint >= checkpoint_every
                if checkpoint is not None and due and i < steps - 1:  # at the end the caller exports
                    saving = time.perf_counter()
                    checkpoint()
                    last_checkpoint = time.perf_counter()
                    seconds_before -= last_checkpoint - saving  # saving is not training
        finally:
            if handle is not None:
                handle.close()
        return rows

    def export_modules(self) -> list[ExportPolicy]:
        """One self-contained policy module per seed, ready for ONNX export."""
        return [ExportPolicy(self.policy.member(k), self.obs_mean, self.obs_std, self.robot).eval()
                for k in range(self.n_seeds)]
