"""DROCO: dual-robust cross-domain offline RL (research/dmil_droco.md Part B).

IQL on abundant source data (a simulator with the wrong dynamics) plus scarce target data (the
robot we deploy on). An ensemble of ``n_models`` Gaussian dynamics models per seed, trained on
the target data only before RL (``droil_ros.algos.dynamics``), proposes for every source
transition a worst-case next state s_inf; the source bootstrap value is lowered by the
per-sample penalty u = relu(beta (V(s') - V(s_inf))), computed with V before this step's V
update (B4.2), so source transitions whose logged outcome beats what the target dynamics
could give are trusted less. Source TD errors take a Huber loss (kappa = ``huber_delta``),
target ones half the squared error; L_Q = mean_src Huber + mean_tar 1/2 e^2 per critic (B4.4).
V and the actor see both domains unweighted. Each batch holds ``source_fraction`` source rows
(ODRL: 128 + 128); without source data it is all target and DROCO is IQL step for step.

Ambiguities (B9) and what is implemented:
- worst state (``inf_mode``): ``coord_min`` (default, the public code) is the per-coordinate
  minimum over the ensemble's candidate next states, not any member's prediction;
  ``value_min`` is the candidate of lowest V (the seed's V(s') - min_i V(s'_i) form; adding the
  logged s' to the candidates would change nothing, as u is clipped at 0);
- candidates (``noise_mode``): ``variance`` (default, the code: mean + variance, deterministic),
  ``mean``, ``minus_std`` (mean - std) or ``sample`` (one draw per model);
- the code's [2B, 1] penalty shape bug is fixed: the penalty exists for source rows only.

Deviations, all in the learner's normalised observation units: the dynamics models predict
s' - s (no reward head: the penalty does not use it) with ReLU MLPs of ``model_hidden``, one
weight decay for all layers, log-std bounds 0.25 / -5 (MBPO's log-variance 0.5 / -10) with the
0.01 log-variance bound penalty, and ``model_epochs`` epochs of with-replacement minibatches
(no hold-out). "mean + variance" is thus a variance in normalised units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from droil_ros.algos.common import check_choice, generator
from droil_ros.algos.dynamics import GaussianDynamics
from droil_ros.algos.iql import IQL, Batch, IQLConfig
from droil_ros.data.dataset import DOMAINS
from droil_ros.errors import DroilError

INF_MODES = ("coord_min", "value_min")
NOISE_MODES = ("variance", "mean", "minus_std", "sample")


@dataclass
class DROCOConfig(IQLConfig):
    beta: float = 0.3  # penalty coefficient
    huber_delta: float = 30.0  # kappa; inf: half the squared error on source rows too
    inf_mode: str = "coord_min"
    noise_mode: str = "variance"
    source_fraction: float = 0.5  # of each batch, when there is source data
    n_models: int = 7
    model_hidden: tuple[int, ...] = (200, 200, 200, 200)
    model_epochs: int = 100  # passes of |target| samples drawn with replacement
    model_batch_size: int = 256
    model_lr: float = 1e-3
    model_weight_decay: float = 5e-5

    PRESETS = {"fast": dict(steps=300, hidden=(64, 64), log_every=50, model_hidden=(32, 32),
                            model_epochs=20), "paper": {}}


def huber(e: torch.Tensor, delta: float) -> torch.Tensor:
    """1/2 e^2 for |e| <= delta, delta (|e| - delta/2) beyond."""
    if math.isinf(delta):
        return 0.5 * e**2
    a = e.abs()
    return torch.where(a <= delta, 0.5 * e**2, delta * (a - 0.5 * delta))


class DROCO(IQL):
    name = "droco"
    Config = DROCOConfig

    def __init__(self, config: DROCOConfig, *args, **kwargs):
        check_choice("inf_mode", config.inf_mode, INF_MODES)
        check_choice("noise_mode", config.noise_mode, NOISE_MODES)
        if config.beta < 0 or not config.huber_delta > 0 or not 0 <= config.source_fraction < 1:
            raise DroilError("need beta >= 0, huber_delta > 0 and 0 <= source_fraction < 1")
        if config.n_models < 1 or config.model_epochs < 1:
            raise DroilError("need n_models >= 1 and model_epochs >= 1")
        super().__init__(config, *args, **kwargs)
        domain = torch.as_tensor(self.dataset.domain)
        self.target_idx = torch.nonzero(domain == DOMAINS.index("target")).squeeze(-1)
        self.source_idx = torch.nonzero(domain == DOMAINS.index("source")).squeeze(-1)
        if len(self.target_idx) == 0:
            raise DroilError("droco needs target-domain transitions (domain 'target') for its "
                             "dynamics ensemble; the dataset has only source data")
        self.source_batches = [generator(s, 13) for s in self.seeds]
        self.dynamics: GaussianDynamics | None = None
        self.model_nll = float("nan")
        if len(self.source_idx) and config.beta > 0:  # otherwise u = 0: no model needed
            self.dynamics = GaussianDynamics(
                self.robot.obs_dim, self.robot.act_dim, self.seeds, n_models=config.n_models,
                hidden=config.model_hidden, salt=20, delta=True, lr=config.model_lr,
                weight_decay=config.model_weight_decay, max_logstd=0.25, min_logstd=-5.0,
                bound_weight=0.02)
            self.noise_generators = [generator(s, 14_000 + k) for s in self.seeds
                                     for k in range(config.n_models)]
        self.dynamics_trained = False

    def train_dynamics(self) -> list[float]:
        """Maximum likelihood on the target data (B4.7); returns the NLL per step."""
        c, t = self.config, self.target_idx
        steps = c.model_epochs * math.ceil(len(t) / c.model_batch_size)
        obs, actions, next_obs = self.obs[t], self.actions[t], self.next_obs[t]
        self.dynamics.fit_scaler(obs, actions, next_obs)
        history = self.dynamics.fit(obs, actions, next_obs, steps=steps, batch_size=c.model_batch_size)
        self.dynamics.requires_grad_(False)
        self.dynamics_trained = True
        self.model_nll = history[-1]
        return history

    @torch.no_grad()
    def candidate_next_states(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """(members, models, batch, obs): each model's candidate s' for (s, a) of (members, batch, .)."""
        if self.config.noise_mode == "sample":
            return self.dynamics.sample(obs, actions, self.noise_generators)
        p = self.dynamics.predict(obs, actions)
        if self.config.noise_mode == "variance":
            return p.next_mean + p.next_std**2
        if self.config.noise_mode == "minus_std":
            return p.next_mean - p.next_std
        return p.next_mean

    @torch.no_grad()
    def worst_case(self, obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """s_inf (members, batch, obs) and V(s_inf) (members, batch) per ``inf_mode``."""
        candidates = self.candidate_next_states(obs, actions)
        if self.config.inf_mode == "coord_min":
            s_inf = candidates.min(1).values
            return s_inf, self.v_values(s_inf)
        members, models, size, dim = candidates.shape
        values = self.v_values(candidates.reshape(members, models * size, dim)).view(members, models, size)
        worst = values.argmin(1)
        s_inf = candidates.gather(1, worst[:, None, :, None].expand(-1, 1, -1, dim)).squeeze(1)
        return s_inf, values.min(1).values

    @torch.no_grad()
    def penalty(self, obs: torch.Tensor, actions: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        """u = relu(beta (V(s') - V(s_inf))) for source transitions, (members, batch)."""
        _, v_inf = self.worst_case(obs, actions)
        return torch.relu(self.config.beta * (self.v_values(next_obs) - v_inf))

    def critic_losses(self, td: torch.Tensor, batch: Batch) -> torch.Tensor:
        """mean over source rows of Huber + mean over target rows of 1/2 e^2, (2, members)."""
        n = batch.n_source
        loss = (0.5 * td[..., n:] ** 2).mean(-1)
        if n:
            loss = loss + huber(td[..., :n], self.config.huber_delta).mean(-1)
        return loss

    def update(self) -> dict[str, torch.Tensor]:
        c = self.config
        if self.dynamics is not None and not self.dynamics_trained:
            self.train_dynamics()
        n_src = min(round(c.batch_size * c.source_fraction), c.batch_size - 1) if len(self.source_idx) else 0
        idx = self.target_idx[self.sample(self.policy_batches, c.batch_size - n_src, n=len(self.target_idx))]
        if n_src:
            src = self.source_idx[self.sample(self.source_batches, n_src, n=len(self.source_idx))]
            idx = torch.cat([src, idx], 1)
        batch = self.batch(idx, n_src)
        penalty = None
        if n_src and self.dynamics is not None:
            u = self.penalty(batch.obs[:, :n_src], batch.actions[:, :n_src], batch.next_obs[:, :n_src])
            penalty = F.pad(u, (0, c.batch_size - n_src))
        metrics = self.iql_step(batch, penalty)
        if penalty is not None:
            metrics.update(penalty_mean=u.mean(), penalty_active=(u > 0).float().mean(),
                           model_nll=torch.tensor(self.model_nll))
        return metrics
