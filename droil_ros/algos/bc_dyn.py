"""BC+d: behaviour cloning on expert data plus rollouts of a learned dynamics model, trusted
fully (the DMIL paper's baselines, research/dmil_droco.md A10).

The policy is BC's deterministic tanh MLP with BC's squared-error loss; a probabilistic model f
is fitted to the expert data by maximum likelihood throughout. After ``warmup_steps`` the
policy also imitates model rollouts (DMIL's buffer and schedule, ModelRollouts) with weight
``rollout_weight``: L = E_E[ell] + rollout_weight * E_R[ell]; no discriminator judges them.

``bc_dyn``: model and policy train alongside from step 0; rollouts start once f has had its
warm-up. ``bc_dyn_2phase`` (``pretrain_fraction=0.5``): BC and f are pre-trained on the expert
data alone for that fraction of the run, then fine-tuned with rollouts. With
``rollout_weight=0`` both are BC, bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from droil_ros.algos.common import Learner
from droil_ros.algos.imitation import ModelBasedConfig, ModelRollouts


@dataclass
class BCDynConfig(ModelBasedConfig):
    pretrain_fraction: float = 0.0  # of each fit: BC and f on expert data only (2-phase: 0.5)


class BCDyn(ModelRollouts, Learner):
    name = "bc_dyn"
    Config = BCDynConfig

    def __init__(self, config: BCDynConfig, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        everything = torch.arange(len(self.obs))
        self.init_model(everything, everything)

    def begin(self, steps: int) -> None:
        pretrain = self.step + round(self.config.pretrain_fraction * steps)
        self.rollout_start = max(self.config.warmup_steps, pretrain)

    def update(self) -> dict[str, torch.Tensor]:
        c = self.config
        rolled = self.maybe_rollout()
        model_nll = self.model_nll(self.model_batch(c.batch_size)).mean(-1)
        self.model.step(model_nll)
        losses = self.bc_losses(self.sample(self.policy_batches, c.batch_size))
        metrics = {"loss": losses.detach().mean(), "model_nll": model_nll.detach().mean()}
        if not rolled:
            self.policy_step(losses)
            return {**metrics, "rollout_loss": torch.tensor(float("nan"))}  # same keys every step
        obs, actions, _ = self.rollout_batch(c.batch_size)
        rollout_losses = ((self.act(obs) - actions) ** 2).sum(-1)
        self.policy_opt.zero_grad(set_to_none=True)
        (losses.mean(-1).sum() + c.rollout_weight * rollout_losses.mean(-1).sum()).backward()
        self.policy_opt.step()
        return {**metrics, "rollout_loss": rollout_losses.detach().mean()}
