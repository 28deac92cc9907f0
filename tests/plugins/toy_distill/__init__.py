# SPDX-License-Identifier: Apache-2.0
"""A third-party distillation plugin, found through the ``medkd.plugins`` entry point (tests only)."""

from __future__ import annotations

from medkd.distill import DistillLoss, Requires, register_loss

IMPORTS: list[int] = []
IMPORTS.append(1)


@register_loss("toy_l2")
class ToyL2(DistillLoss):
    """Mean squared logit difference, scaled."""

    requires = Requires(student=("logits",), teacher=("logits",))

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, student, teacher, batch, ctx=None):
        return {"toy_l2": self.scale * (student["logits"] - teacher["logits"].detach()).pow(2).mean()}
