"""What the model-based and discriminator-weighted imitation learners share (bc_dyn, dmil,
dwbc, d2mil; research/dmil_droco.md Part A): tanh-Gaussian policies, discriminators, quality
pools, and the learned-model rollouts (DMIL's D_R) with their schedule.

Everything is batched over seeds like the other learners: every network and buffer has a
leading member axis, and every random draw comes from a per-member generator, so member k does
not depend on how many members train beside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from droil_ros.algos.common import (
    EnsembleLinear,
    EnsembleMLP,
    ExportPolicy,
    Learner,
    LearnerConfig,
    generator,
)
from droil_ros.algos.dynamics import GaussianDynamics
from droil_ros.data.dataset import QUALITIES, DatasetError
from droil_ros.errors import DroilError

LOGSTD_MIN, LOGSTD_MAX = -5.0, 2.0
ACTION_EDGE = 1.0 - 1e-6  # dataset actions are clipped to this before atanh (A11.1)
D_LOW, D_HIGH = 0.1, 0.9  # every discriminator output is clamped here (DMIL, DWBC)
LOGP_RANGE = (-20.0, 10.0)  # log pi per dimension -> [0, 1] for the discriminator (DWBC)
LOGF_RANGE = (-50.0, 10.0)  # log f per dimension -> [0, 1] (A11.1: its own range)


def normalise_log_density(logp: torch.Tensor, bounds: tuple[float, float] | None) -> torch.Tensor:
    """Clip and map to [0, 1]; ``bounds=None`` passes raw log-densities (D2C)."""
    if bounds is None:
        return logp
    low, high = bounds
    return (logp.clamp(low, high) - low) / (high - low)


class MeanAction(nn.Module):
    """The pre-tanh mean of a Gaussian head [mean, log_std]: what the deterministic policy and
    the exported graph use."""

    def __init__(self, act_dim: int, clip: float | None):
        super().__init__()
        self.act_dim, self.clip = act_dim, clip

    def forward(self, out: torch.Tensor) -> torch.Tensor:
        mean = out[..., :self.act_dim]
        return mean if self.clip is None else mean.clamp(-self.clip, self.clip)


class GaussianPolicyLearner(Learner):
    """A stochastic tanh-Gaussian policy in place of the deterministic one.

    ``squash_logstd``: log sigma = tanh-mapped onto [-5, 2] (D2C's DMIL); otherwise clipped to
    it (DWBC). ``mean_clip``: DWBC clips the mean to [-9, 9]. The test action is tanh(mean).
    """

    squash_logstd = True
    mean_clip: float | None = None

    def __init__(self, config: LearnerConfig, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        act_dim = self.robot.act_dim
        self.policy = EnsembleMLP([self.robot.obs_dim, *config.hidden, 2 * act_dim], self.seeds, salt=1)
        self.policy_opt = torch.optim.Adam(self.policy.parameters(), lr=config.lr,
                                           weight_decay=getattr(config, "weight_decay", 0.0))
        self.mean_head = MeanAction(act_dim, self.mean_clip)
        self.quality = torch.as_tensor(self.dataset.quality.astype("int64"))

    def gaussian(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.policy(obs)
        raw = out[..., self.robot.act_dim:]
        if self.squash_logstd:
            log_std = LOGSTD_MIN + 0.5 * (LOGSTD_MAX - LOGSTD_MIN) * (torch.tanh(raw) + 1)
        else:
            log_std = raw.clamp(LOGSTD_MIN, LOGSTD_MAX)
        return self.mean_head(out), log_std

    def act(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.mean_head(self.policy(obs)))

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """log pi(a | s) per action dimension (tanh-Gaussian density on [-1, 1])."""
        mean, log_std = self.gaussian(obs)
        a = actions.clamp(-ACTION_EDGE, ACTION_EDGE)
        u = torch.atanh(a)
        return (-0.5 * ((u - mean) * torch.exp(-log_std)) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
                - torch.log1p(-a * a))

    def policy_update(self, losses: torch.Tensor) -> None:
        """One Adam step on the sum of per-member losses, shape (members,)."""
        self.policy_opt.zero_grad(set_to_none=True)
        losses.sum().backward()
        self.policy_opt.step()

    def nll(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """-log pi(a | s) summed over action dimensions, (members, batch)."""
        return -self.log_prob(obs, actions).sum(-1)

    @torch.no_grad()
    def action_error(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Mean squared error of the deterministic action (BC's loss): the comparable metric."""
        return ((self.act(obs) - actions) ** 2).sum(-1).mean()

    def pool(self, quality: str, required_by: str) -> torch.Tensor:
        """Indices of the transitions tagged ``quality``; a clear error when there are none."""
        idx = torch.nonzero(self.quality == QUALITIES.index(quality)).squeeze(-1)
        if len(idx) == 0:
            raise DatasetError(f"{required_by} needs transitions tagged quality='{quality}' and the "
                               f"dataset has none")
        return idx

    def sample_pool(self, generators: list[torch.Generator], pool: torch.Tensor, size: int) -> torch.Tensor:
        return pool[self.sample(generators, size, n=len(pool))]

    def export_modules(self) -> list[ExportPolicy]:
        return [ExportPolicy(nn.Sequential(self.policy.member(k), self.mean_head), self.obs_mean,
                             self.obs_std, self.robot).eval() for k in range(self.n_seeds)]


class Discriminator(nn.Module):
    """d(x) in [0.1, 0.9], batched over members, on input groups (e.g. [s, a] and log pi).

    ``branch``: each group first goes through its own ``branch``-unit ReLU layer and the
    results are concatenated (DWBC's two-branch net); ``None`` feeds the concatenation straight
    to the MLP (DMIL's). The clamp is part of the network, so clamped samples carry no gradient.
    """

    def __init__(self, groups: list[int], hidden: tuple[int, ...], seeds: list[int], salt: int,
                 lr: float, branch: int | None = None):
        super().__init__()
        gens = [generator(s, salt) for s in seeds]
        self.branches = nn.ModuleList(EnsembleLinear(g, branch, gens) for g in groups) if branch else None
        width = branch * len(groups) if branch else sum(groups)
        self.mlp = EnsembleMLP([width, *hidden, 1], seeds, salt=salt + 1)
        self.opt = torch.optim.Adam(self.parameters(), lr=lr)

    def forward(self, *groups: torch.Tensor) -> torch.Tensor:
        if self.branches is not None:
            x = torch.cat([torch.relu(b(g)) for b, g in zip(self.branches, groups, strict=True)], -1)
        else:
            x = torch.cat(groups, -1)
        return torch.sigmoid(self.mlp(x)).squeeze(-1).clamp(D_LOW, D_HIGH)

    def step(self, losses: torch.Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        losses.sum().backward()
        self.opt.step()


def pu_loss(d_pos: torch.Tensor, d_unl: torch.Tensor, eta: float, scaled: bool = True) -> torch.Tensor:
    """Positive-unlabeled risk per member: eta E_P[-log d] + E_U[-log(1-d)] - eta E_P[-log(1-d)];
    ``scaled`` divides by eta (DWBC's code)."""
    pos, unl = -torch.log(d_pos).mean(-1), -torch.log(1 - d_unl).mean(-1)
    risk = eta * pos + unl + eta * torch.log(1 - d_pos).mean(-1)
    return risk / eta if scaled else risk


def real_fake_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy per member: real -> 1, fake -> 0."""
    return -torch.log(d_real).mean(-1) - torch.log(1 - d_fake).mean(-1)


@dataclass
class ModelBasedConfig(LearnerConfig):
    """Fields of the learners that roll a learned dynamics model (DMIL's schedule, A4)."""

    model_hidden: tuple[int, ...] = (256, 256)
    model_lr: float = 1e-4
    delta: bool = True  # f predicts s' - s (paper); False: the absolute s' (D2C)
    warmup_steps: int = 1000  # plain maximum-likelihood steps of the model before any rollout
    rollout_every: int = 1000
    rollout_refresh: float = 0.1  # fraction of the buffer replaced at each refresh
    rollout_horizon: int = 2  # model steps per start state; transitions from step 2 on are stored
    rollout_sample: bool = False  # store a sampled s' instead of the mean (A11.2 deviation)
    rollout_weight: float = 1.0  # scales every rollout term of the policy and model losses

    PRESETS = {"fast": dict(steps=300, hidden=(64, 64), model_hidden=(64, 64), model_lr=1e-3,
                            warmup_steps=50, rollout_every=50, log_every=50), "paper": {}}


class ModelRollouts:
    """Mixin for a ``Learner``: a probabilistic model fitted to ``model_pool`` and a per-member
    FIFO buffer of rollouts from ``start_pool`` states (capacity = the pool's size), filled at
    the end of the warm-up and refreshed by ``rollout_refresh`` every ``rollout_every`` steps.

    A rollout replays the logged action for the first model step, then follows the policy's
    deterministic action; every transition after the first is stored. Model predictions are
    means (``rollout_sample``: draws for the stored s')."""

    config: ModelBasedConfig

    def init_model(self, model_pool: torch.Tensor, start_pool: torch.Tensor) -> None:
        c = self.config
        if c.rollout_horizon < 2:
            raise DroilError("rollout_horizon must be >= 2 (the first model step replays data)")
        self.model = GaussianDynamics(self.robot.obs_dim, self.robot.act_dim, self.seeds, n_models=1,
                                      hidden=c.model_hidden, salt=10, delta=c.delta, lr=c.model_lr)
        self.model.fit_scaler(self.obs[model_pool], self.actions[model_pool], self.next_obs[model_pool])
        self.model_pool, self.start_pool = model_pool, start_pool
        self.capacity = len(start_pool)
        shape = (self.n_seeds, self.capacity)
        self.buffer = {"obs": torch.zeros(*shape, self.robot.obs_dim),
                       "actions": torch.zeros(*shape, self.robot.act_dim),
                       "next_obs": torch.zeros(*shape, self.robot.obs_dim)}
        self.buffer_pos, self.buffer_size = 0, 0
        self.model_batches = [generator(s, 6) for s in self.seeds]
        self.start_batches = [generator(s, 7) for s in self.seeds]
        self.rollout_batches = [generator(s, 8) for s in self.seeds]
        self.noise = [generator(s, 9) for s in self.seeds]
        self.rollout_start = c.warmup_steps

    def model_batch(self, size: int) -> torch.Tensor:
        """Indices (members, size) into the model's pool."""
        return self.model_pool[self.sample(self.model_batches, size, n=len(self.model_pool))]

    def model_nll(self, idx: torch.Tensor) -> torch.Tensor:
        """-log f(s' | s, a) per sample, (members, batch), for dataset indices."""
        return self.model.nll(self.obs[idx], self.actions[idx], self.next_obs[idx])[:, 0]

    @torch.no_grad()
    def rollout(self, n: int) -> None:
        c = self.config
        starts = -(-n // (c.rollout_horizon - 1))
        idx = self.start_pool[self.sample(self.start_batches, starts, n=len(self.start_pool))]
        obs = self.model.predict(self.obs[idx], self.actions[idx]).next_mean[:, 0]
        parts = []
        for _ in range(c.rollout_horizon - 1):
            actions = self.act(obs)
            if c.rollout_sample:
                next_obs = self.model.sample(obs, actions, self.noise)[:, 0]
            else:
                next_obs = self.model.predict(obs, actions).next_mean[:, 0]
            parts.append((obs, actions, next_obs))
            obs = next_obs
        new = {k: torch.cat([p[i] for p in parts], 1)[:, :n] for i, k in enumerate(self.buffer)}
        slots = (self.buffer_pos + torch.arange(n)) % self.capacity
        for k, v in new.items():
            self.buffer[k][:, slots] = v
        self.buffer_pos = int((self.buffer_pos + n) % self.capacity)
        self.buffer_size = min(self.capacity, self.buffer_size + n)

    def maybe_rollout(self) -> bool:
        """Fill or refresh the buffer on schedule; True once rollouts exist."""
        since = self.step - self.rollout_start
        if since == 0:
            self.rollout(self.capacity)
        elif since > 0 and since % self.config.rollout_every == 0:
            self.rollout(max(1, int(self.capacity * self.config.rollout_refresh)))
        return since >= 0

    def rollout_batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        idx = self.sample(self.rollout_batches, size, n=self.buffer_size)
        rows = torch.arange(self.n_seeds).unsqueeze(-1)
        return tuple(self.buffer[k][rows, idx] for k in ("obs", "actions", "next_obs"))

