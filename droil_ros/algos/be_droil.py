"""BE-DROIL: balance-equation-based distributionally robust offline imitation learning.

The adversary reweights logged triplets (s, a, s') within an f-divergence ball around the data
while keeping the reweighted occupancy consistent with the balance (Bellman-flow) equation, so
a reweighting is a change of transition kernel (research/bedroil.md sections 2-4). Its dual:

    R(theta) = min_{nu, lambda} (1-gamma) E_D0[nu(s0)] + lambda + alpha E_D[f*_+((e - lambda)/alpha)]
    e(s, a, s') = ell_theta(s, a) + gamma (1 - term) nu(s') - nu(s)        (logged s')

with closed-form worst-case weights w = (f*_+)'((e - lambda)/alpha): chi2 -> relu(1 + y),
KL -> exp(y) (lambda eliminated: a batch softmax). Training alternates ``k_dual`` Adam steps on
nu (and lambda, or alpha in the constrained variant) with one weighted-BC step on detached,
clipped, self-normalised weights (Danskin: that is the gradient of R).

Choices (say so when reporting): ell is divided by a running mean of the BC loss before forming
e, so ``alpha`` is dimensionless and one value serves every robot; nu's output is scaled by
1/(1-gamma), the size of a discounted sum of unit losses, so Adam need not climb to it;
lambda is learned only where it is not redundant (gamma = 1, or the nu = 0 ablation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from droil_ros.algos.common import EnsembleMLP, Learner, LearnerConfig, check_choice, generator
from droil_ros.errors import DroilError

DIVERGENCES = ("chi2", "kl")


@dataclass
class BEDROILConfig(LearnerConfig):
    f: str = "chi2"
    alpha: float = 1.0  # penalised variant: fixed, in units of the running mean BC loss
    rho: float | None = None  # constrained variant: radius, alpha learned
    gamma: float = 0.99
    k_dual: int = 2
    w_max: float = 100.0
    nu_lr: float = 3e-4
    nu_hidden: tuple[int, ...] = (256,)  # one hidden layer, as DrilDICE's nu: the dual is cheap
    balance: bool = True  # False: the nu = 0 ablation (plain f-DRO behaviour cloning)
    loss_ema: float = 0.99

    PRESETS = {"fast": dict(steps=300, hidden=(64, 64), nu_hidden=(64,), log_every=50), "paper": {}}


def expect(x: torch.Tensor, p: torch.Tensor | None) -> torch.Tensor:
    """Mean over the last axis, or the expectation under probabilities ``p``."""
    return x.mean(-1) if p is None else (x * p).sum(-1)


def fstar_plus(y: torch.Tensor, f: str) -> torch.Tensor:
    """Convex conjugate of f restricted to w >= 0."""
    if f == "chi2":
        return torch.where(y >= -1, y + 0.5 * y**2, torch.full_like(y, -0.5))
    return torch.exp(y) - 1


def dual_objective(e: torch.Tensor, nu0: torch.Tensor, lam: torch.Tensor, alpha: torch.Tensor,
                   gamma: float, f: str, rho: float | None = None,
                   p: torch.Tensor | None = None) -> torch.Tensor:
    """The dual per member. e: (members, batch); nu0: (members, batch0); lam, alpha: (members,)."""
    start = (1 - gamma) * nu0.mean(-1)
    if f == "kl":
        log_p = -math.log(e.shape[-1]) if p is None else torch.log(p)
        value = start + alpha * torch.logsumexp(e / alpha.unsqueeze(-1) + log_p, -1)
    else:
        y = (e - lam.unsqueeze(-1)) / alpha.unsqueeze(-1)
        value = start + lam + alpha * expect(fstar_plus(y, f), p)
    return value + alpha * rho if rho is not None else value


def worst_case_weights(e: torch.Tensor, lam: torch.Tensor, alpha: torch.Tensor, f: str,
                       w_max: float = math.inf, p: torch.Tensor | None = None) -> torch.Tensor:
    """Closed-form adversarial weights, clipped and normalised to expectation 1."""
    if f == "kl":
        log_p = -math.log(e.shape[-1]) if p is None else torch.log(p)
        w = torch.exp(e / alpha.unsqueeze(-1) - torch.logsumexp(e / alpha.unsqueeze(-1) + log_p, -1,
                                                                keepdim=True))
    else:
        w = torch.relu(1 + (e - lam.unsqueeze(-1)) / alpha.unsqueeze(-1))
    w = w.clamp(max=w_max)
    total = expect(w, p).unsqueeze(-1)
    return torch.where(total > 0, w / total.clamp_min(1e-30), torch.ones_like(w))


class BEDROIL(Learner):
    name = "be_droil"
    Config = BEDROILConfig

    def __init__(self, config: BEDROILConfig, *args, **kwargs):
        check_choice("divergence", config.f, DIVERGENCES)
        if not 0 < config.gamma <= 1:
            raise DroilError("gamma must be in (0, 1]")
        super().__init__(config, *args, **kwargs)
        c, k = config, self.n_seeds
        self.nu = EnsembleMLP([self.robot.obs_dim, *c.nu_hidden, 1], self.seeds, salt=3)
        with torch.no_grad():  # nu = 0 at the start: the first weights are those of the nu=0 ablation
            self.nu.layers[-1].weight.zero_()
            self.nu.layers[-1].bias.zero_()
        self.nu_scale = 1.0 / (1.0 - c.gamma) if c.gamma < 1 else 1.0
        learn_lambda = c.f == "chi2" and (c.gamma == 1 or not c.balance)
        self.lam = torch.nn.Parameter(torch.zeros(k), requires_grad=learn_lambda)
        # constrained variant: alpha = softplus(a), initialised at config.alpha
        a0 = c.alpha + math.log(-math.expm1(-c.alpha))  # inverse softplus, stable for large alpha
        self.log_alpha = torch.nn.Parameter(torch.full((k,), a0), requires_grad=c.rho is not None)
        dual_params = [p for p in (self.lam, self.log_alpha) if p.requires_grad]
        if c.balance:
            dual_params += list(self.nu.parameters())
        self.dual_opt = torch.optim.Adam(dual_params, lr=c.nu_lr) if dual_params else None
        self.dual_batches = [generator(s, 4) for s in self.seeds]
        self.init_batches = [generator(s, 5) for s in self.seeds]
        self.loss_scale: torch.Tensor | None = None

    @property
    def alpha(self) -> torch.Tensor:
        return F.softplus(self.log_alpha)

    def potential(self, *obs: torch.Tensor) -> list[torch.Tensor]:
        """nu of several observation batches, in one batched forward pass."""
        sizes = [o.shape[1] for o in obs]
        values = self.nu(torch.cat(obs, dim=1)).squeeze(-1) * self.nu_scale
        return list(values.split(sizes, dim=1))

    def residual(self, ell: torch.Tensor, idx: torch.Tensor,
                 idx0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """e = ell + gamma (1 - term) nu(s') - nu(s), with ell in running-mean units; and
        nu(s0) for the initial states ``idx0``, when given."""
        if self.loss_scale is None:
            self.loss_scale = ell.mean(-1, keepdim=True).clamp_min(1e-8)
        ell = ell / self.loss_scale
        if not self.config.balance:
            return ell, None if idx0 is None else torch.zeros(idx0.shape)
        batches = [self.obs[idx], self.next_obs[idx]]
        if idx0 is not None:
            batches.append(self.init_obs[idx0])
        nu = self.potential(*batches)
        e = ell + self.config.gamma * (1 - self.terminals[idx]) * nu[1] - nu[0]
        return e, (nu[2] if idx0 is not None else None)

    def dual_step(self) -> torch.Tensor:
        c = self.config
        idx = self.sample(self.dual_batches, c.batch_size)
        idx0 = self.sample(self.init_batches, c.batch_size, n=len(self.init_obs))
        with torch.no_grad():
            ell = self.bc_losses(idx)
        e, nu0 = self.residual(ell, idx, idx0)
        value = dual_objective(e, nu0, self.lam, self.alpha, c.gamma, c.f, c.rho)
        if self.dual_opt is not None:
            self.dual_opt.zero_grad(set_to_none=True)
            value.sum().backward()
            self.dual_opt.step()
        return value.detach()

    def update(self) -> dict[str, torch.Tensor]:
        c = self.config
        for _ in range(c.k_dual):
            value = self.dual_step()
        idx = self.sample(self.policy_batches, c.batch_size)
        losses = self.bc_losses(idx)
        with torch.no_grad():
            e, _ = self.residual(losses.detach(), idx)
            w = worst_case_weights(e, self.lam, self.alpha, c.f, c.w_max)
            batch_mean = losses.detach().mean(-1, keepdim=True)
            self.loss_scale = c.loss_ema * self.loss_scale + (1 - c.loss_ema) * batch_mean
        self.policy_step(w * losses)
        ess = w.sum(-1) ** 2 / (w**2).sum(-1) / w.shape[-1]
        return {"loss": batch_mean.mean(), "weighted_loss": (w * losses.detach()).mean(),
                "dual": value.mean(), "w_max": w.max(), "ess": ess.mean(), "alpha": self.alpha.mean()}
