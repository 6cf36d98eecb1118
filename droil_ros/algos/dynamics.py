"""Probabilistic Gaussian dynamics models, batched over seeds and over K models per seed.

One ``GaussianDynamics`` holds S x K diagonal-Gaussian MLPs, p(y | s, a) = N(mu, sigma^2) with
y = [s' - s (``delta=True``, the DMIL paper's form) or s' (D2C's form), then r if ``reward``].
Their weights carry one leading member axis of size S*K, member ``i*K + k`` being model k of
seed i, initialised and fed batches from generators seeded by (seed_i, k) only: model k of a
seed does not depend on how many seeds or models train beside it. DMIL uses K = 1 (one model per
seed); DROCO an ensemble of K = 7 trained on target data.

log sigma is soft-clamped (softplus, as in PETS/MBPO) between learnable per-member bounds that
start at ``max_logstd``/``min_logstd``; ``bound_weight`` adds bound_weight * (sum max - sum min)
to the loss (MBPO's 0.01 on log-variances is bound_weight=0.02 on log-stds; DMIL uses 0). Inputs
[s, a] and targets y are standardised with fixed data statistics (``fit_scaler``), so the MLP
sees unit-scale numbers even for the tiny per-step deltas of a 200 Hz robot; everything the API
returns is in the caller's units (log-densities include the Jacobian of the standardisation).

API (S seeds, K models, B samples; a tensor of shape (S, B, .) is shared by the K models of a
seed, one of shape (S, K, B, .) gives each model its own):
    model = GaussianDynamics(obs_dim, act_dim, seeds, n_models=K, hidden=(256, 256))
    model.fit_scaler(obs, actions, next_obs, rewards=None)      # once, before training
    p = model.predict(obs, actions)       # Prediction: next_mean, next_std (S, K, B, O),
                                          #   reward_mean, reward_std (S, K, B) or None
    model.sample(obs, actions, gens)      # (S, K, B, O) next states drawn from each model
    model.log_prob(obs, actions, next_obs, rewards=None)   # (S, K, B, D) per dimension
    model.nll(obs, actions, next_obs, rewards=None)        # (S, K, B), summed over dimensions
    model.step(losses)                    # (S, K) per-member losses -> one Adam step
    model.fit(obs, actions, next_obs, rewards=None, steps=..., batch_size=...)  # plain MLE
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from droil_ros.algos.common import EnsembleLinear, generator
from droil_ros.errors import DroilError

LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
TARGET_STD_FLOOR = 1e-6


@dataclass
class Prediction:
    next_mean: torch.Tensor  # (S, K, B, O)
    next_std: torch.Tensor
    reward_mean: torch.Tensor | None = None  # (S, K, B)
    reward_std: torch.Tensor | None = None


def gaussian_log_prob(y: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    return -0.5 * ((y - mean) * torch.exp(-log_std)) ** 2 - log_std - LOG_SQRT_2PI


class GaussianDynamics(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, seeds: list[int], n_models: int = 1,
                 hidden: tuple[int, ...] = (256, 256), salt: int = 10, delta: bool = True,
                 reward: bool = False, lr: float = 1e-3, weight_decay: float = 0.0,
                 max_logstd: float = 2.0, min_logstd: float = -10.0, bound_weight: float = 0.0):
        super().__init__()
        if n_models < 1 or not seeds:
            raise DroilError("a dynamics ensemble needs at least one seed and one model per seed")
        self.obs_dim, self.act_dim, self.n_seeds, self.n_models = obs_dim, act_dim, len(seeds), n_models
        self.delta, self.reward, self.bound_weight = delta, reward, bound_weight
        self.out_dim = obs_dim + int(reward)
        self.generators = [generator(s, salt * 1000 + k) for s in seeds for k in range(n_models)]
        sizes = [obs_dim + act_dim, *hidden, 2 * self.out_dim]
        self.layers = nn.ModuleList(EnsembleLinear(a, b, self.generators)
                                    for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        members = len(self.generators)
        self.max_logstd = nn.Parameter(torch.full((members, 1, self.out_dim), float(max_logstd)))
        self.min_logstd = nn.Parameter(torch.full((members, 1, self.out_dim), float(min_logstd)))
        for name, size in (("in_mean", obs_dim + act_dim), ("out_mean", self.out_dim)):
            self.register_buffer(name, torch.zeros(size))
            self.register_buffer(name.replace("mean", "std"), torch.ones(size))
        self.opt = torch.optim.Adam([
            {"params": self.layers.parameters(), "weight_decay": weight_decay},
            {"params": [self.max_logstd, self.min_logstd], "weight_decay": 0.0}], lr=lr)
        self.batch_generators = [generator(s, salt * 1000 + 500 + k) for s in seeds for k in range(n_models)]

    def _targets(self, obs, next_obs, rewards) -> torch.Tensor:
        y = next_obs - obs if self.delta else next_obs
        if self.reward:
            if rewards is None:
                raise DroilError("this dynamics model predicts rewards: pass them")
            y = torch.cat([y, rewards.unsqueeze(-1)], -1)
        return y

    def fit_scaler(self, obs: torch.Tensor, actions: torch.Tensor, next_obs: torch.Tensor,
                   rewards: torch.Tensor | None = None) -> None:
        """Standardise inputs and targets with these (training) data's statistics (N, .)."""
        x = torch.cat([obs, actions], -1)
        y = self._targets(obs, next_obs, rewards)
        self.in_mean.copy_(x.mean(0))
        self.in_std.copy_(x.std(0, unbiased=False).clamp_min(1e-3))
        self.out_mean.copy_(y.mean(0))
        self.out_std.copy_(y.std(0, unbiased=False).clamp_min(TARGET_STD_FLOOR))

    def _members(self, t: torch.Tensor) -> torch.Tensor:
        """(S, B, D) or (S, K, B, D) -> (S*K, B, D)."""
        if t.dim() == 3:
            t = t.unsqueeze(1).expand(-1, self.n_models, -1, -1)
        if t.dim() != 4 or t.shape[:2] != (self.n_seeds, self.n_models):
            raise DroilError(f"expected shape ({self.n_seeds}, [{self.n_models},] B, D), "
                             f"got {tuple(t.shape)}")
        return t.reshape(self.n_seeds * self.n_models, *t.shape[2:])

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        return t.reshape(self.n_seeds, self.n_models, *t.shape[1:])

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-std of y in the caller's units, each (S, K, B, D)."""
        x = (torch.cat([self._members(obs), self._members(actions)], -1) - self.in_mean) / self.in_std
        for layer in self.layers[:-1]:
            x = torch.relu(layer(x))
        mean, log_std = self.layers[-1](x).chunk(2, -1)
        log_std = self.max_logstd - F.softplus(self.max_logstd - log_std)
        log_std = self.min_logstd + F.softplus(log_std - self.min_logstd)
        mean = mean * self.out_std + self.out_mean
        return self._split(mean), self._split(log_std + torch.log(self.out_std))

    def predict(self, obs: torch.Tensor, actions: torch.Tensor) -> Prediction:
        mean, log_std = self(obs, actions)
        std = torch.exp(log_std)
        next_mean = mean[..., :self.obs_dim]
        if self.delta:
            next_mean = next_mean + (obs if obs.dim() == 4 else obs.unsqueeze(1))
        if not self.reward:
            return Prediction(next_mean, std[..., :self.obs_dim])
        return Prediction(next_mean, std[..., :self.obs_dim], mean[..., -1], std[..., -1])

    def sample(self, obs: torch.Tensor, actions: torch.Tensor,
               generators: list[torch.Generator] | None = None) -> torch.Tensor:
        """Next states drawn from each model, with one generator per member (default: the
        model's own batch generators)."""
        p = self.predict(obs, actions)
        gens = self.generators_or_default(generators)
        flat = p.next_mean.reshape(len(gens), *p.next_mean.shape[2:])
        noise = torch.stack([torch.randn(flat.shape[1:], generator=g) for g in gens])
        return p.next_mean + p.next_std * self._split(noise)

    def generators_or_default(self, generators: list[torch.Generator] | None) -> list[torch.Generator]:
        gens = self.batch_generators if generators is None else generators
        if len(gens) != self.n_seeds * self.n_models:
            raise DroilError(f"need {self.n_seeds * self.n_models} generators (one per model), "
                             f"got {len(gens)}")
        return gens

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor, next_obs: torch.Tensor,
                 rewards: torch.Tensor | None = None) -> torch.Tensor:
        """log p(y | s, a) per target dimension, (S, K, B, D)."""
        mean, log_std = self(obs, actions)
        y = self._targets(obs, next_obs, rewards)
        if y.dim() == 3:
            y = y.unsqueeze(1)
        return gaussian_log_prob(y, mean, log_std)

    def nll(self, obs: torch.Tensor, actions: torch.Tensor, next_obs: torch.Tensor,
            rewards: torch.Tensor | None = None) -> torch.Tensor:
        """Negative log-likelihood per sample, summed over target dimensions, (S, K, B)."""
        return -self.log_prob(obs, actions, next_obs, rewards).sum(-1)

    def bound_penalty(self) -> torch.Tensor:
        """(S, K): sum of the upper minus sum of the lower log-std bounds."""
        return self._split((self.max_logstd - self.min_logstd).sum((-2, -1)))

    def step(self, losses: torch.Tensor) -> None:
        """One Adam step on the sum over members of each member's loss, (S, K) or (S,) when K=1."""
        self.opt.zero_grad(set_to_none=True)
        total = losses.sum()
        if self.bound_weight:
            total = total + self.bound_weight * self.bound_penalty().sum()
        total.backward()
        self.opt.step()

    def fit(self, obs: torch.Tensor, actions: torch.Tensor, next_obs: torch.Tensor,
            rewards: torch.Tensor | None = None, steps: int = 1000, batch_size: int = 256,
            generators: list[torch.Generator] | None = None) -> list[float]:
        """Maximum likelihood on data of shape (N, .) shared by all members, each drawing its
        own minibatches (with replacement); returns the mean NLL per step."""
        gens = self.generators_or_default(generators)
        n = len(obs)
        history = []
        for _ in range(steps):
            idx = self._split(torch.stack([torch.randint(n, (batch_size,), generator=g) for g in gens]))
            losses = self.nll(obs[idx], actions[idx], next_obs[idx],
                              None if rewards is None else rewards[idx]).mean(-1)
            self.step(losses)
            history.append(float(losses.detach().mean()))
        return history
