"""IQL: implicit Q-learning (Kostrikov et al.), the offline RL base of DROCO.

V is fitted by expectile regression to the target critics, min(Qbar1, Qbar2)(s, a), so with
expectile > 0.5 it approaches a maximum over the data's own actions without ever querying an
action outside the data; the twin Q regresses on r + gamma (1 - terminal) V(s') (time-limit
ends still bootstrap); the actor is advantage-weighted regression onto the logged actions,
weights min(exp(temperature * A), adv_clip) with A = min Qbar(s, a) - V(s) taken before the V
step. Per step, as in CORL and the DROCO code (research/dmil_droco.md B4): V step, Q step,
Polyak update of Qbar, actor step.

Choices (say so when reporting): the actor is the deterministic tanh policy every learner
exports (DROCO's Gaussian actor is trained only through tanh(mu) too); the Q loss is half the
squared TD error summed over the twins, DROCO's form (CORL averages the full MSE: the same
under Adam); the actor's learning rate is cosine-annealed to 0 over each ``fit``; the squared
action error is averaged over action dimensions (DROCO), not summed as in BC.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from droil_ros.algos.common import EnsembleMLP, Learner, LearnerConfig
from droil_ros.errors import DroilError


@dataclass
class IQLConfig(LearnerConfig):
    expectile: float = 0.7
    temperature: float = 3.0  # AWR inverse temperature
    adv_clip: float = 100.0  # upper clip of exp(temperature * A)
    gamma: float = 0.99
    polyak: float = 0.005
    critic_lr: float = 3e-4  # Q and V; ``lr`` is the actor's
    cosine_lr: bool = True  # actor lr annealed to 0 over each fit
    reward_scale: float = 1.0


@dataclass
class Batch:
    """Transitions in normalised units, each (members, batch, .); the first ``n_source``
    columns come from the source domain (DROCO), the rest from the target."""

    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_obs: torch.Tensor
    not_done: torch.Tensor
    n_source: int = 0


def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """|tau - 1[diff < 0]| * diff^2 with diff = Q - V; at tau = 0.5 it is half the squared error."""
    weight = torch.where(diff < 0, 1.0 - expectile, expectile)
    return weight * diff**2


def twin_mlp(sizes: list[int], seeds: list[int], salts: tuple[int, int]) -> EnsembleMLP:
    """Both critics of every seed as one batched MLP: members [0, K) are Q1 of the K seeds,
    [K, 2K) Q2, each initialised from its own (seed, salt) as if built alone."""
    first, second = (EnsembleMLP(sizes, seeds, salt) for salt in salts)
    for a, b in zip(first.layers, second.layers, strict=True):
        a.weight = nn.Parameter(torch.cat([a.weight.data, b.weight.data]))
        a.bias = nn.Parameter(torch.cat([a.bias.data, b.bias.data]))
    return first


class IQL(Learner):
    name = "iql"
    Config = IQLConfig
    needs_rewards = True

    def __init__(self, config: IQLConfig, *args, **kwargs):
        if not 0 < config.expectile < 1:
            raise DroilError(f"expectile must be in (0, 1), not {config.expectile}")
        if not 0 <= config.gamma < 1:
            raise DroilError(f"gamma must be in [0, 1), not {config.gamma}")
        if not 0 < config.polyak <= 1:
            raise DroilError(f"polyak must be in (0, 1], not {config.polyak}")
        if config.temperature < 0 or config.adv_clip <= 0:
            raise DroilError("temperature must be >= 0 and adv_clip > 0")
        if config.cosine_lr and config.lr_decay != 1.0:
            raise DroilError("cosine_lr and lr_decay are two schedules of the actor: choose one")
        super().__init__(config, *args, **kwargs)
        obs_dim, act_dim = self.robot.obs_dim, self.robot.act_dim
        self.critic = twin_mlp([obs_dim + act_dim, *config.hidden, 1], self.seeds, salts=(10, 11))
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.value = EnsembleMLP([obs_dim, *config.hidden, 1], self.seeds, salt=12)
        self.q_opt = torch.optim.Adam(self.critic.parameters(), lr=config.critic_lr)
        self.v_opt = torch.optim.Adam(self.value.parameters(), lr=config.critic_lr)
        self.rewards = torch.as_tensor(self.dataset.rewards, dtype=torch.float32) * config.reward_scale
        self.not_done = 1.0 - self.terminals
        self.horizon = config.steps

    def batch(self, idx: torch.Tensor, n_source: int = 0) -> Batch:
        return Batch(self.obs[idx], self.actions[idx], self.rewards[idx], self.next_obs[idx],
                     self.not_done[idx], n_source)

    def q_values(self, net: EnsembleMLP, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """(2, members, batch): both critics of every seed in one batched pass."""
        x = torch.cat([obs, actions], -1).repeat(2, 1, 1)
        return net(x).squeeze(-1).view(2, *obs.shape[:2])

    def v_values(self, obs: torch.Tensor) -> torch.Tensor:
        return self.value(obs).squeeze(-1)

    def critic_losses(self, td: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Per critic and member, (2, members): mean of half the squared TD error."""
        return (0.5 * td**2).mean(-1)

    def iql_step(self, batch: Batch, penalty: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """One IQL step on ``batch``; ``penalty`` (members, batch) is subtracted from V(s') in
        the Q target (DROCO's source penalty)."""
        c = self.config
        with torch.no_grad():
            q_target = self.q_values(self.critic_target, batch.obs, batch.actions).min(0).values
        adv = q_target - self.v_values(batch.obs)
        v_loss = expectile_loss(adv, c.expectile).mean(-1)
        self.v_opt.zero_grad(set_to_none=True)
        v_loss.sum().backward()
        self.v_opt.step()
        adv = adv.detach()

        with torch.no_grad():
            next_v = self.v_values(batch.next_obs)
            if penalty is not None:
                next_v = next_v - penalty
            y = batch.rewards + c.gamma * batch.not_done * next_v
        q = self.q_values(self.critic, batch.obs, batch.actions)
        q_loss = self.critic_losses(y - q, batch)
        self.q_opt.zero_grad(set_to_none=True)
        q_loss.sum().backward()
        self.q_opt.step()
        with torch.no_grad():
            for p, target in zip(self.critic.parameters(), self.critic_target.parameters(), strict=True):
                target.lerp_(p, c.polyak)

        if c.cosine_lr:
            lr = c.lr * 0.5 * (1 + math.cos(math.pi * min(self.step / max(self.horizon, 1), 1.0)))
            for group in self.policy_opt.param_groups:
                group["lr"] = lr
        weights = torch.exp(c.temperature * adv).clamp(max=c.adv_clip)
        losses = weights * ((self.act(batch.obs) - batch.actions) ** 2).mean(-1)
        self.policy_step(losses)
        return {"loss": losses.detach().mean(), "v_loss": v_loss.detach().mean(),
                "q_loss": q_loss.detach().mean(), "q_mean": q.detach().mean(), "adv_mean": adv.mean(),
                "weight_max": weights.max()}

    def update(self) -> dict[str, torch.Tensor]:
        return self.iql_step(self.batch(self.sample(self.policy_batches, self.config.batch_size)))

    def begin(self, steps: int) -> None:
        """The actor's cosine schedule reaches 0 at the end of this fit."""
        self.horizon = self.step + steps
