"""D2MIL: DMIL for demonstrations with a large share of suboptimal data (research/dmil_droco.md
A6). D_E: a small expert set (quality 'expert'); D_O: a larger set of unknown quality
('other'); D_R: model rollouts from D_E states (``rollout_from='all'``: from D_E U D_O, a
deviation). Two discriminators, both clamped to [0.1, 0.9]:

``variant='paper'`` (the paper's Eqs. 25-27, 34-35, Alg. 2; the default):
  d_r(s, a, log pi, log f): real D_E U D_O vs fake D_R;
  d_o(s, a, log pi), PU: L = eta E_E[-log d_o] + E_{O U R}[-log(1-d_o)] - eta E_E[-log(1-d_o)];
  pi weights on -log pi:  D_E: alpha - beta_o eta/(d_o(1-d_o)) - beta_r/d_r   (clamped >= 0)
                          D_O: beta_o/(1-d_o) - beta_r/d_r   (clamped >= 0, see below)
                          D_R: beta_o/(1-d_o) + beta_r/(1-d_r)
  f: E_{E U O}[(alpha_f - 1/d_r)(-log f)] + E_R[(1/(1-d_r))(-log f)], warm-up on D_E U D_O.
``variant='dwbc'`` (the DWBC-style reconstruction):
  d (DMIL's): D_E vs D_R; d_o: DWBC's PU discriminator, D_E vs D_O (its scaled loss);
  pi: D_E: alpha - 1/d - eta/(d_o(1-d_o)) - 1 (clamped >= 0); D_R: 1/(1-d);
      D_O: d_o/(1-d_o) with d_o < 0.5 set to 0;
  f: DMIL's weights on D_E and D_R plus plain -log f on D_O.

The paper's D_O weight is negative unless d_r is near 0.9, and nothing bounds it: a negative
weight on -log pi makes the loss unbounded below (pi gains without limit by moving its density
away from those samples). On the wheel-legged mixed data that drove the weighted loss to -5e3
within 200 steps and the expert NLL from -2 to +18, so the default clamps it at 0
(``clamp_other=False``: the literal, unclamped paper weights; 'negative_other' logs the share).

Order per step: d_r, d_o, pi, f. beta_r = 1 - beta_o; eta = 0.5; alpha = alpha_f = 10. d_o is
DWBC's two-branch network on (s, a) and the normalised log pi.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from droil_ros.algos.common import check_choice, generator
from droil_ros.algos.dmil import DMIL, DMILConfig
from droil_ros.algos.dwbc import optimality_discriminator, optimality_inputs
from droil_ros.algos.imitation import pu_loss, real_fake_loss
from droil_ros.errors import DroilError

VARIANTS = ("paper", "dwbc")
ROLLOUT_METRICS = ("policy_loss", "d_expert", "d_rollout", "do_expert", "do_other", "w_expert", "w_other",
                   "negative_other")


@dataclass
class D2MILConfig(DMILConfig):
    variant: str = "paper"
    eta: float = 0.5
    beta_o: float = 0.5  # paper: 0.5 on D4RL, 0.6 on the real robot; beta_r = 1 - beta_o
    clamp_other: bool = True  # False: the paper's literal, possibly negative D_O weights
    rollout_from: str = "expert"  # or "all"
    do_branch: int = 128
    do_hidden: tuple[int, ...] = (256,)
    do_lr: float = 1e-4

    PRESETS = {"fast": dict(DMILConfig.PRESETS["fast"], do_branch=32, do_hidden=(64,), do_lr=1e-3),
               "paper": {}}


class D2MIL(DMIL):
    name = "d2mil"
    Config = D2MILConfig

    def __init__(self, config: D2MILConfig, *args, **kwargs):
        check_choice("d2mil variant", config.variant, VARIANTS)
        if config.rollout_from not in ("expert", "all"):
            raise DroilError(f"rollout_from must be 'expert' or 'all', not '{config.rollout_from}'")
        super().__init__(config, *args, **kwargs)
        self.other_batches = [generator(s, 11) for s in self.seeds]
        self.disc_o = optimality_discriminator(self, 30, config.do_branch, config.do_hidden, config.do_lr)

    def model_and_start_pools(self) -> tuple[torch.Tensor, torch.Tensor]:
        self.expert, self.other = self.pool("expert", "d2mil"), self.pool("other", "d2mil")
        everything = torch.arange(len(self.obs))
        return everything, self.expert if self.config.rollout_from == "expert" else everything

    @torch.no_grad()
    def do_inputs(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        obs, actions, _ = batch
        return optimality_inputs(self, obs, actions, self.log_prob(obs, actions))

    def do_value(self, inputs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        with torch.no_grad():
            return self.disc_o(*inputs)

    def policy_weights(self, dr: list[torch.Tensor], do: list[torch.Tensor]) -> list[torch.Tensor]:
        """Weights on -log pi for the D_E, D_O and D_R batches."""
        c = self.config
        (dr_e, dr_o, dr_r), (do_e, do_o, do_r) = dr, do
        if c.variant == "paper":
            beta_r = 1 - c.beta_o
            w_e = c.alpha - c.beta_o * c.eta / (do_e * (1 - do_e)) - beta_r / dr_e
            w_o = c.beta_o / (1 - do_o) - beta_r / dr_o
            w_r = c.beta_o / (1 - do_r) + beta_r / (1 - dr_r)
        else:
            w_e = c.alpha - 1 / dr_e - c.eta / (do_e * (1 - do_e)) - 1
            kept = torch.where(do_o < 0.5, 0.0, do_o)
            w_o = kept / (1 - kept)
            w_r = 1 / (1 - dr_r)
        w_o = w_o.clamp_min(0.0) if c.clamp_other else w_o
        return [w_e.clamp_min(0.0), w_o, c.rollout_weight * w_r]

    def update(self) -> dict[str, torch.Tensor]:
        c = self.config
        rolled = self.maybe_rollout()
        expert = self.batch(self.sample_pool(self.policy_batches, self.expert, c.batch_size))
        if not rolled:
            return self.warmup_update(self.model_batch(c.batch_size), expert, ROLLOUT_METRICS)
        other = self.batch(self.sample_pool(self.other_batches, self.other, c.batch_size))
        fake = self.rollout_batch(c.batch_size)
        batches = (expert, other, fake)
        inputs = [self.d_inputs(b) for b in batches]
        d_e, d_o, d_r = (self.disc(*x) for x in inputs)
        real = torch.cat([d_e, d_o], -1) if c.variant == "paper" else d_e
        self.disc.step(real_fake_loss(real, d_r))
        do_inputs = [self.do_inputs(b) for b in batches]  # pi is the same until its update below
        o_e, o_o, o_r = (self.disc_o(*x) for x in do_inputs)
        if c.variant == "paper":
            self.disc_o.step(pu_loss(o_e, torch.cat([o_o, o_r], -1), c.eta, scaled=False))
        else:
            self.disc_o.step(pu_loss(o_e, o_o, c.eta))

        dr = [self.d_value(x) for x in inputs]
        do = [self.do_value(x) for x in do_inputs]
        weights = self.policy_weights(dr, do)
        nlls = [self.nll(*b[:2]) for b in batches]
        policy_loss = sum((w * ell).mean(-1) for w, ell in zip(weights, nlls, strict=True))
        self.policy_update(policy_loss)

        d_e2, d_o2, d_r2 = (self.d_value(self.d_inputs(b)) for b in batches)
        f_e, f_o, f_r = (self.model.nll(*b)[:, 0] for b in batches)
        rollout_term = (c.rollout_weight / (1 - d_r2) * f_r).mean(-1)
        if c.variant == "paper":
            d_real, f_real = torch.cat([d_e2, d_o2], -1), torch.cat([f_e, f_o], -1)
            real_term = ((c.alpha_model - 1 / d_real) * f_real).mean(-1)
        else:
            real_term = ((c.alpha_model - 1 / d_e2) * f_e).mean(-1) + f_o.mean(-1)
        self.model.step(real_term + rollout_term)
        return {"loss": self.action_error(*expert[:2]), "nll": nlls[0].detach().mean(),
                "model_nll": f_e.detach().mean(), **dict(zip(ROLLOUT_METRICS, (
                    policy_loss.detach().mean(), dr[0].mean(), dr[2].mean(), do[0].mean(), do[1].mean(),
                    weights[0].mean(), weights[1].mean(), (weights[1] < 0).float().mean()), strict=True))}
