"""DMIL: discriminator-guided model-based offline imitation learning (Zhang et al., CoRL 2022;
research/dmil_droco.md Part A, sections A2-A5 and A11).

From a small expert set D_E a stochastic policy pi, a probabilistic dynamics model f and a
discriminator d train together. pi and f roll out synthetic transitions D_R from expert states;
d tells D_E from D_R on (s, a, log pi, log f) and reweights both maximum-likelihood losses:

    L_d  = E_E[-log d] + E_R[-log(1 - d)]
    L_pi = E_E[(alpha - 1/d) (-log pi)] + E_R[(1/(1 - d)) (-log pi)]
    L_f  = E_E[(alpha_f - 1/d) (-log f)] + E_R[(1/(1 - d)) (-log f)]

so expert samples that d finds expert-like and rollouts that fool d are imitated most. d is
clamped to [0.1, 0.9] and enters the pi and f losses as a value only; per step the order is d,
pi, f, with d's weights recomputed after each update. f first fits D_E alone for
``warmup_steps``; the rollout buffer (capacity |D_E|) is then filled and 10 % of it replaced
every ``rollout_every`` steps (ModelRollouts).

Choices (A11): log pi and log f enter d clipped and mapped to [0, 1] (``normalise_logp``);
f predicts s' - s (``delta``); rollouts have horizon 2 with one stored transition; pi is
untrained at the first rollout unless ``policy_warmup``. ``discriminator=False`` fixes d = 0.5
(constant weights alpha - 2 and 2), an ablation. Learning rates are D2C's latest (pi 3e-4,
f and d 1e-4); the paper used 1e-4 for all three over 1M steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from droil_ros.algos.imitation import (
    LOGF_RANGE,
    LOGP_RANGE,
    Discriminator,
    GaussianPolicyLearner,
    ModelBasedConfig,
    ModelRollouts,
    normalise_log_density,
    real_fake_loss,
)


@dataclass
class DMILConfig(ModelBasedConfig):
    alpha: float = 10.0  # alpha_pi: expert weight alpha - 1/d >= 0 for d >= 0.1
    alpha_model: float = 10.0  # alpha_f
    d_hidden: tuple[int, ...] = (512, 512)
    d_lr: float = 1e-4
    normalise_logp: bool = True
    discriminator: bool = True
    policy_warmup: bool = False  # also fit pi by maximum likelihood during the model warm-up

    PRESETS = {"fast": dict(ModelBasedConfig.PRESETS["fast"], lr=1e-3, d_hidden=(64, 64), d_lr=1e-3),
               "paper": {}}


Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
ROLLOUT_METRICS = ("policy_loss", "d_expert", "d_rollout", "w_expert", "w_rollout")


class DMIL(ModelRollouts, GaussianPolicyLearner):
    name = "dmil"
    Config = DMILConfig

    def __init__(self, config: DMILConfig, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        self.init_model(*self.model_and_start_pools())
        obs_dim, act_dim = self.robot.obs_dim, self.robot.act_dim
        self.disc = Discriminator([obs_dim, act_dim, act_dim, obs_dim], config.d_hidden, self.seeds,
                                  salt=20, lr=config.d_lr)

    def model_and_start_pools(self) -> tuple[torch.Tensor, torch.Tensor]:
        """f fits every transition; rollouts start from every state (all are expert's)."""
        everything = torch.arange(len(self.obs))
        return everything, everything

    def batch(self, idx: torch.Tensor) -> Batch:
        return self.obs[idx], self.actions[idx], self.next_obs[idx]

    @torch.no_grad()
    def d_inputs(self, batch: Batch) -> tuple[torch.Tensor, ...]:
        """(s, a, log pi per action dim, log f per state dim), with the current pi and f."""
        obs, actions, next_obs = batch
        normalise = self.config.normalise_logp
        log_pi = normalise_log_density(self.log_prob(obs, actions), LOGP_RANGE if normalise else None)
        log_f = self.model.log_prob(obs, actions, next_obs)[:, 0]
        return obs, actions, log_pi, normalise_log_density(log_f, LOGF_RANGE if normalise else None)

    def d_value(self, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        if not self.config.discriminator:
            return torch.full(inputs[0].shape[:-1], 0.5)
        with torch.no_grad():
            return self.disc(*inputs)

    def warmup_update(self, model_idx: torch.Tensor, expert: Batch,
                      later: tuple[str, ...]) -> dict[str, torch.Tensor]:
        """Before rollouts: maximum likelihood for f (and pi when ``policy_warmup``). The metrics
        that exist only once rollouts do (``later``) are NaN: every step logs the same keys."""
        model_nll = self.model_nll(model_idx).mean(-1)
        self.model.step(model_nll)
        with torch.set_grad_enabled(self.config.policy_warmup):
            nll = self.nll(*expert[:2]).mean(-1)
        if self.config.policy_warmup:
            self.policy_update(nll)
        return {"loss": self.action_error(*expert[:2]), "nll": nll.detach().mean(),
                "model_nll": model_nll.detach().mean(), **dict.fromkeys(later, torch.tensor(float("nan")))}

    def update(self) -> dict[str, torch.Tensor]:
        c = self.config
        rolled = self.maybe_rollout()
        expert = self.batch(self.sample(self.policy_batches, c.batch_size))
        if not rolled:
            return self.warmup_update(self.model_batch(c.batch_size), expert, ROLLOUT_METRICS)
        fake = self.rollout_batch(c.batch_size)
        inputs_e, inputs_r = self.d_inputs(expert), self.d_inputs(fake)
        if c.discriminator:
            self.disc.step(real_fake_loss(self.disc(*inputs_e), self.disc(*inputs_r)))
        d_e, d_r = self.d_value(inputs_e), self.d_value(inputs_r)
        nll_e, nll_r = self.nll(*expert[:2]), self.nll(*fake[:2])
        w_e, w_r = c.alpha - 1 / d_e, c.rollout_weight / (1 - d_r)
        policy_loss = (w_e * nll_e).mean(-1) + (w_r * nll_r).mean(-1)
        self.policy_update(policy_loss)

        d_e2, d_r2 = self.d_value(self.d_inputs(expert)), self.d_value(self.d_inputs(fake))
        model_e = self.model.nll(*expert)[:, 0]
        model_r = self.model.nll(*fake)[:, 0]
        self.model.step(((c.alpha_model - 1 / d_e2) * model_e).mean(-1)
                        + (c.rollout_weight / (1 - d_r2) * model_r).mean(-1))
        return {"loss": self.action_error(*expert[:2]), "nll": nll_e.detach().mean(),
                "model_nll": model_e.detach().mean(), **dict(zip(ROLLOUT_METRICS, (
                    policy_loss.detach().mean(), d_e.mean(), d_r.mean(), w_e.mean(), w_r.mean()),
                    strict=True))}
