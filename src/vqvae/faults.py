"""Numerical faults: a non-finite loss stops training, and no checkpoint holds NaN weights.

The loop calls :func:`check_loss` before each backward pass, and
:func:`vqvae.checkpoint_pair.save_checkpoint` calls :func:`check_weights` before it writes.

Stopping, not skipping the step: in these models a NaN or infinite loss is almost never a
one-off. It comes from weights that have already diverged (a learning rate too high, an
overflow under bf16), from NaN in the data, or from statistics the forward pass has
already updated (the EMA codebook), so a skipped step would be followed by another
non-finite one, and the batch order is a function of the step, so a resumed run would
meet the same batch again. The last checkpoint was written while the loss was finite and
stays as it was; the error names the step and the likely causes.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["NonFiniteError", "NonFiniteLossError", "NonFiniteWeightsError", "check_loss", "check_weights"]

_REMEDY = (
    "restart with --force and a lower --lr, a --warmup or --grad-clip 1.0; under bf16 try "
    "--precision fp32; check the data for NaN or infinite values"
)


class NonFiniteError(ValueError):
    """A NaN or infinite number where training needs finite ones; ``step`` is where (1-based,
    as in ``metrics.jsonl``)."""

    def __init__(self, message: str, step: int) -> None:
        super().__init__(message)
        self.step = step


class NonFiniteLossError(NonFiniteError):
    """The training loss of a step is NaN or infinite."""


class NonFiniteWeightsError(NonFiniteError):
    """A weight about to be saved is NaN or infinite."""


def check_loss(loss: Tensor, step: int) -> None:
    """Raise :class:`NonFiniteLossError` when ``loss`` is NaN or infinite.

    Call it before ``backward``, so the weights and the optimizer are not updated from it.
    On a GPU the check waits for the loss (one synchronisation per step).

    Args:
        loss: the step's loss (a scalar; any float dtype).
        step: steps completed before this one (the loop's counter); the message names
            step ``step + 1``, as the logs count.
    """
    value = loss.detach()
    if bool(torch.isfinite(value).all()):
        return
    shown = value.float().flatten()[0].item() if value.numel() else float("nan")
    cause = (
        "NaN or infinite values in the data, or a model that diverges from its first step"
        if step == 0
        else "the training diverged (a learning rate too high for this model, or an overflow)"
    )
    raise NonFiniteLossError(
        f"the training loss is {shown} at step {step + 1}; training stopped before updating the "
        f"weights, and the last checkpoint is intact. Likely cause: {cause}; {_REMEDY}",
        step + 1,
    )


def check_weights(model: nn.Module, step: int) -> None:
    """Raise :class:`NonFiniteWeightsError` when a parameter is NaN or infinite, or a
    floating-point buffer is NaN (buffers may hold infinities, attention masks do).

    Args:
        model: the module about to be saved.
        step: the step the checkpoint would record.
    """
    checks = [(f"parameter {name!r}", torch.isfinite(p.detach()).all()) for name, p in model.named_parameters()]
    checks += [(f"buffer {name!r}", ~torch.isnan(b).any()) for name, b in model.named_buffers() if b.is_floating_point()]
    for name, ok in checks:
        if not bool(ok):
            raise NonFiniteWeightsError(
                f"the model's {name} holds NaN or infinite values at step {step}: no checkpoint was written, so "
                f"the last one is intact. Likely cause: the training diverged; {_REMEDY}",
                step,
            )
