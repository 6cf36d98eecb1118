"""DRBC: distributionally robust behaviour cloning over a total-variation ball
(Panaganti et al.; research/bedroil.md section 7.1).

Per batch the dual over the scalar eta is
    g(eta) = mean(relu(ell - eta)) + rho * relu(max(ell) - eta) + eta,
a convex piecewise-linear function whose slope on [s_(j-1), s_j) of the sorted losses is
j/B - rho. Its smallest minimiser is therefore an order statistic, found exactly (no SLSQP):
eta* = s_(ceil(rho*B) - 1), or the lower bound -1 when rho = 0 (then every sample counts and
DRBC is BC). Only the first term carries gradient: training focuses on the samples with
ell > eta. ``faithful=True`` (the learner ``drbc_faithful``) reproduces the public code, which
uses the dual *value* g(eta*) as the threshold instead of eta*, so it trains on fewer samples;
``drbc`` (``faithful=False``) is the textbook dual.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from droil_ros.algos.common import Learner, LearnerConfig, adversary_diagnostics

ETA_LOW = -1.0


@dataclass
class DRBCConfig(LearnerConfig):
    rho: float = 0.2
    faithful: bool = False


def optimal_eta(losses: torch.Tensor, rho: float) -> torch.Tensor:
    """Smallest minimiser of g per member; ``losses`` has shape (members, batch)."""
    batch = losses.shape[-1]
    j = math.ceil(rho * batch)
    if j == 0:
        return torch.full(losses.shape[:-1], ETA_LOW)
    if j > batch:
        return losses.max(-1).values
    return losses.sort(-1).values[..., j - 1]


def dual_value(losses: torch.Tensor, eta: torch.Tensor, rho: float) -> torch.Tensor:
    eta = eta.unsqueeze(-1)
    worst = losses.max(-1, keepdim=True).values
    return (torch.relu(losses - eta).mean(-1, keepdim=True) + rho * torch.relu(worst - eta) + eta).squeeze(-1)


class DRBC(Learner):
    name = "drbc"
    Config = DRBCConfig

    def update(self) -> dict[str, torch.Tensor]:
        rho = self.config.rho
        losses = self.bc_losses(self.sample(self.policy_batches, self.config.batch_size))
        detached = losses.detach()
        eta = optimal_eta(detached, rho)
        robust = dual_value(detached, eta, rho)
        threshold = robust if self.config.faithful else eta
        self.policy_step(torch.relu(losses - threshold.unsqueeze(-1)))
        active = (detached > threshold.unsqueeze(-1)).float()  # the gradient's weights on the batch
        return {"loss": detached.mean(), "robust_loss": robust.mean(), "eta": eta.mean(),
                "active_fraction": active.mean(), **adversary_diagnostics(active, detached)}
