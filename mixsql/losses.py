"""Per-component losses of a training step: what an adaptive mixture (``mixing.ado``) learns from.

A packed batch carries ``component_ids`` for every token (``packing``); with the per-token losses
the trainer already has (``cross_entropy(..., reduction="none")``), the step's loss sum and token
count per component are one ``index_add``/``bincount`` on the tensors' own device. Under
``torch.distributed`` they are summed over the data-parallel group in one all-reduce, so every rank
holds the same numbers and runs the same deterministic update on them.
"""

from __future__ import annotations

import typing as t

import torch

from mixsql.errors import MixSQLError

IGNORE_INDEX = -100  # torch's cross_entropy default: labels with this value carry no loss


def component_losses(loss_per_token: torch.Tensor, component_ids: torch.Tensor, num_components: int, *,
                     labels: torch.Tensor | None = None, ignore_index: int = IGNORE_INDEX,
                     group: t.Any = None, all_reduce: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss sums, token counts) per component for one step, float64 and int64 tensors of length
    ``num_components`` on the inputs' device.

    ``loss_per_token`` and ``component_ids`` have the same shape (e.g. (batch, seq_len)); tokens
    whose ``labels`` equal ``ignore_index`` are left out. The losses are detached. ``all_reduce``
    (default: when torch.distributed is initialised) sums both over ``group`` in one collective.
    """
    if isinstance(num_components, bool) or not isinstance(num_components, int) or num_components < 1:
        raise MixSQLError(f"num_components must be a positive integer, not {num_components!r}")
    if not isinstance(loss_per_token, torch.Tensor) or not isinstance(component_ids, torch.Tensor):
        raise MixSQLError("loss_per_token and component_ids must be tensors",
                          hint="e.g. F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction='none')")
    if loss_per_token.numel() != component_ids.numel():
        raise MixSQLError(f"loss_per_token has {loss_per_token.numel():,} values but component_ids "
                          f"{component_ids.numel():,}: one loss per token is needed",
                          hint="pass reduction='none' to the loss, and the batch's component_ids")
    if not loss_per_token.is_floating_point():
        raise MixSQLError(f"loss_per_token must be floating point, not {loss_per_token.dtype}")
    losses = loss_per_token.detach().reshape(-1)
    ids = component_ids.reshape(-1).to(device=losses.device, dtype=torch.int64)
    if labels is not None:
        if labels.numel() != ids.numel():
            raise MixSQLError(f"labels have {labels.numel():,} values but component_ids {ids.numel():,}")
        keep = labels.reshape(-1).to(losses.device) != ignore_index
        losses, ids = losses[keep], ids[keep]
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= num_components):
        bad = int(ids.min()) if int(ids.min()) < 0 else int(ids.max())
        raise MixSQLError(f"component id {bad} is not in [0, {num_components})",
                          hint="num_components is the mixture's number of components (len(mix.components))")
    sums = torch.zeros(num_components, dtype=torch.float64, device=losses.device)
    sums.index_add_(0, ids, losses.to(torch.float64))
    counts = torch.bincount(ids, minlength=num_components).to(torch.float64)
    if all_reduce is None:
        all_reduce = torch.distributed.is_available() and torch.distributed.is_initialized()
    if all_reduce:
        both = torch.cat([sums, counts])  # one collective; float64 counts are exact below 2**53
        torch.distributed.all_reduce(both, op=torch.distributed.ReduceOp.SUM, group=group)
        sums, counts = both[:num_components], both[num_components:]
    return sums, counts.round().to(torch.int64)


__all__: t.Sequence[str] = ["component_losses"]
