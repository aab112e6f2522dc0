"""What a Transformer prior is conditioned on besides the codes: actions per time step,
and a given prefix of the code grid (frame prediction).

Actions: the first latent axis is time, ``T'`` steps. Each step carries
``actions_per_step`` integer actions in ``[0, num_actions]``, where ``num_actions``
means "no action" (padding, and what action dropout puts in). Their embedding is added
to the input of every position whose predicted code lies in that step, so a position
sees the actions of its own step directly and those of earlier steps by attention, and
never those of later steps (raster order is time first).

Action dropout works as label dropout (:func:`vqvae.priors.sampling.drop_labels`): in
training a sample's actions all become "no action" with probability ``action_dropout``,
so one network learns ``p(codes | actions)`` and ``p(codes)``, and classifier-free
guidance can contrast them.

Letters: B batch, T' time steps, F actions per step, C channels (``width``), K codebook size.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from vqvae.priors.sampling import check_codes, check_positive


def check_action_settings(num_actions: int | None, actions_per_step: int, action_dropout: float) -> None:
    """Raise unless the action fields of a prior's config are valid."""
    if num_actions is not None:
        check_positive("num_actions", num_actions)
    check_positive("actions_per_step", actions_per_step)
    if isinstance(action_dropout, bool) or not isinstance(action_dropout, numbers.Real):
        raise TypeError(f"action_dropout must be a number in [0, 1), got {action_dropout!r}")
    if not 0 <= action_dropout < 1:
        raise ValueError(f"action_dropout must lie in [0, 1), got {action_dropout}")


class ActionEmbedding(nn.Module):
    """The embedding of a time step's actions: one table per offset within the step
    (``num_actions`` actions and "no action" each), the F looked-up rows summed.

    The F tables are stored as one ``(F·(num_actions + 1), C)`` matrix, offset ``j``
    owning rows ``j·(num_actions + 1)...``: the same model as F separate tables, one
    weight tensor. Summing per-offset rows keeps the order of the actions within a step
    (turn-then-move differs from move-then-turn) at the cost of one table per offset.

    Shapes:
        ``(B, T', F) -> (B, T', C)``
    """

    def __init__(self, num_actions: int, actions_per_step: int, width: int) -> None:
        super().__init__()
        rows = num_actions + 1  # the actions, then "no action"
        self.table = nn.Embedding(actions_per_step * rows, width)
        self.register_buffer("offsets", torch.arange(actions_per_step) * rows, persistent=False)

    def forward(self, actions: Tensor) -> Tensor:
        return self.table(actions + self.offsets).sum(2)  # (B, T', F, C) -> (B, T', C)


def resolve_actions(
    actions: Tensor | None,
    batch: int,
    *,
    steps: int,
    num_actions: int | None,
    actions_per_step: int,
    action_dropout: float,
    device: torch.device,
) -> Tensor | None:
    """Actions as int64 ``(B, T', F)`` on ``device``, or None for a prior without actions.

    An action-conditional prior trained with action dropout accepts ``actions=None`` as
    "no action" at every step (the unconditional model it learned).

    Raises:
        ValueError: actions for a prior without them, none for a prior trained without
            action dropout, or a wrong shape.
        TypeError: not an integer tensor.
        IndexError: an action outside ``[0, num_actions]``.
    """
    if num_actions is None:
        if actions is not None:
            raise ValueError(
                "this prior takes no actions (num_actions=None) but actions were given: drop "
                "them, or train a prior on data with actions"
            )
        return None
    shape = (batch, steps, actions_per_step)
    if actions is None:
        if action_dropout == 0:
            raise ValueError(
                f"this prior is action-conditional (num_actions={num_actions}) and was trained "
                f"without action dropout, so it needs actions: pass an int64 tensor of shape {shape}"
            )
        return torch.full(shape, num_actions, dtype=torch.long, device=device)
    if not isinstance(actions, Tensor) or actions.is_floating_point() or actions.is_complex() or (
        actions.dtype == torch.bool
    ):
        kind = actions.dtype if isinstance(actions, Tensor) else type(actions).__name__
        raise TypeError(f"actions must be an integer tensor of shape {shape}, got {kind}")
    if tuple(actions.shape) != shape:
        raise ValueError(
            f"actions must have shape (B, T', actions_per_step) = {shape} for this prior (one row "
            f"of {actions_per_step} per code time step), got {tuple(actions.shape)}"
        )
    if actions.numel():
        low, high = int(actions.min()), int(actions.max())
        if low < 0 or high > num_actions:
            raise IndexError(
                f"actions must lie in [0, {num_actions}] ({num_actions} = no action), got values "
                f"in [{low}, {high}]: were they recorded with another action set?"
            )
    return actions.to(device=device, dtype=torch.long)


def drop_actions(actions: Tensor | None, action_dropout: float, num_actions: int | None,
                 dropped: Tensor | None = None) -> Tensor | None:
    """Training only: all of a sample's actions become "no action" with probability
    ``action_dropout``, or where the bool mask ``dropped`` ``(B,)`` says (drawn by the
    caller for a global batch that several processes share)."""
    if actions is None or action_dropout == 0:
        return actions
    if dropped is None:
        dropped = torch.rand(actions.shape[0], device=actions.device) < action_dropout
    return actions.masked_fill(dropped.to(actions.device)[:, None, None], num_actions)


def with_no_actions(actions: Tensor | None, num_actions: int | None, action_dropout: float) -> Tensor | None:
    """``(B, T', F) -> (2B, T', F)`` for guidance: the actions, then the same rows with "no
    action" (or the actions again when the prior never learned without them)."""
    if actions is None:
        return None
    if action_dropout == 0:
        return actions.repeat(2, 1, 1)
    return torch.cat([actions, torch.full_like(actions, num_actions)])


def check_prefix(prefix: Tensor | None, n: int, codebook_size: int, latent_shape: Sequence[int]) -> Tensor | None:
    """Given codes of the first ``t0`` time steps, flattened in raster order, or None.

    Shapes:
        ``(n, t0, *latent_shape[1:]) -> (n, t0·prod(latent_shape[1:]))`` int64
    """
    if prefix is None:
        return None
    rest = tuple(latent_shape[1:])
    expected = f"(n={n}, t0, {', '.join(map(str, rest))})" if rest else f"(n={n}, t0)"
    if not isinstance(prefix, Tensor):
        raise TypeError(f"prefix must be a tensor of codes {expected}, got {type(prefix).__name__}")
    if prefix.dim() != len(latent_shape) + 1 or prefix.shape[0] != n or (
        tuple(prefix.shape[2:]) != rest or prefix.shape[1] > latent_shape[0]
    ):
        raise ValueError(
            f"prefix must have shape {expected} with t0 <= {latent_shape[0]}: the codes of the "
            f"first t0 time steps of each sample; got {tuple(prefix.shape)}"
        )
    return check_codes(prefix, codebook_size, (prefix.shape[1], *rest)).flatten(1)
