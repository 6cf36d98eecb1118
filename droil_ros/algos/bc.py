"""Behaviour cloning: a deterministic tanh policy fitted by mean squared error.

The baseline of every seed paper. Loss: mean_i ||pi(s_i) - a_i||^2, actions normalised to
[-1, 1] by the robot's limits.
"""

from __future__ import annotations

import torch

from droil_ros.algos.common import Learner


class BC(Learner):
    name = "bc"

    def update(self) -> dict[str, torch.Tensor]:
        losses = self.bc_losses(self.sample(self.policy_batches, self.config.batch_size))
        self.policy_step(losses)
        return {"loss": losses.detach().mean()}
