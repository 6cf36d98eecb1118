"""DWBC: discriminator-weighted behaviour cloning (Xu et al., ICML 2022; the official code's
exact specification, research/dmil_droco.md A7).

Data: a small expert set D_e (quality 'expert') and a larger unlabeled set D_o (quality
'other', expert and suboptimal mixed). A positive-unlabeled discriminator d(s, a, log pi) in
[0.1, 0.9] (two branches: [s, a] and the normalised per-dimension log pi) learns which
unlabeled samples look like the expert's:

    L_d  = E_e[-log d] + E_o[-log(1 - d)] / eta + E_e[log(1 - d)]          (PU risk / eta)
    L_pi = alpha E_e[ell] - E_e[ell (eta / (d (1 - d)) + 1)] + E_o[ell (1/(1 - d) - 1)]

with ell = -sum_j log pi(a_j | s) (tanh-Gaussian, mean clipped to [-9, 9], log sigma to
[-5, 2]) and, on D_o, d < 0.5 set to 0: expert weight alpha - 1 - eta/(d(1-d)) in
[0.94, 4.5], unlabeled weight d/(1-d) in {0} U [1, 9]. d is evaluated every step but stepped
only every ``d_every`` iterations, with the weights of the same (pre-update) d. ``pu=False``
is the code's --no_pu variant. Observations are standardised with D_e U D_o.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from droil_ros.algos.common import LearnerConfig, generator
from droil_ros.algos.imitation import (
    LOGP_RANGE,
    Discriminator,
    GaussianPolicyLearner,
    normalise_log_density,
    pu_loss,
    real_fake_loss,
)


@dataclass
class DWBCConfig(LearnerConfig):
    lr: float = 1e-4
    weight_decay: float = 5e-3
    alpha: float = 7.5
    eta: float = 0.5
    d_every: int = 100
    d_lr: float = 1e-4
    d_branch: int = 128
    d_hidden: tuple[int, ...] = (256,)
    pu: bool = True

    PRESETS = {"fast": dict(steps=300, hidden=(64, 64), d_branch=32, d_hidden=(64,), lr=1e-3, d_lr=1e-3,
                            d_every=5, log_every=50), "paper": {}}


def optimality_discriminator(learner: GaussianPolicyLearner, salt: int, branch: int,
                             hidden: tuple[int, ...], lr: float) -> Discriminator:
    """DWBC's two-branch d([s, a], normalised log pi), also D2MIL's optimality discriminator."""
    robot = learner.robot
    return Discriminator([robot.obs_dim + robot.act_dim, robot.act_dim], hidden, learner.seeds,
                         salt=salt, lr=lr, branch=branch)


def optimality_inputs(learner: GaussianPolicyLearner, obs: torch.Tensor, actions: torch.Tensor,
                      log_pi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.cat([obs, actions], -1), normalise_log_density(log_pi.detach(), LOGP_RANGE)


class DWBC(GaussianPolicyLearner):
    name = "dwbc"
    Config = DWBCConfig
    squash_logstd = False
    mean_clip = 9.0

    def __init__(self, config: DWBCConfig, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        self.expert = self.pool("expert", "dwbc")
        self.other = self.pool("other", "dwbc")
        self.other_batches = [generator(s, 6) for s in self.seeds]
        self.disc = optimality_discriminator(self, 30, config.d_branch, config.d_hidden, config.d_lr)

    def update(self) -> dict[str, torch.Tensor]:
        c = self.config
        e = self.sample_pool(self.policy_batches, self.expert, c.batch_size)
        o = self.sample_pool(self.other_batches, self.other, c.batch_size)
        log_pi_e = self.log_prob(self.obs[e], self.actions[e])
        log_pi_o = self.log_prob(self.obs[o], self.actions[o])
        d_e = self.disc(*optimality_inputs(self, self.obs[e], self.actions[e], log_pi_e))
        d_o = self.disc(*optimality_inputs(self, self.obs[o], self.actions[o], log_pi_o))
        d_loss = pu_loss(d_e, d_o, c.eta) if c.pu else real_fake_loss(d_e, d_o)
        we = c.alpha - 1 - c.eta / (d_e.detach() * (1 - d_e.detach()))
        d_o_kept = torch.where(d_o.detach() < 0.5, 0.0, d_o.detach())
        wo = d_o_kept / (1 - d_o_kept)
        ell_e, ell_o = -log_pi_e.sum(-1), -log_pi_o.sum(-1)
        policy_loss = (we * ell_e).mean(-1) + (wo * ell_o).mean(-1)
        if self.step % c.d_every == 0:
            self.disc.step(d_loss)
        self.policy_update(policy_loss)
        return {"loss": self.action_error(self.obs[e], self.actions[e]), "nll": ell_e.detach().mean(),
                "policy_loss": policy_loss.detach().mean(), "d_loss": d_loss.detach().mean(),
                "d_expert": d_e.detach().mean(), "d_other": d_o.detach().mean(),
                "kept_other": (d_o.detach() >= 0.5).float().mean()}
