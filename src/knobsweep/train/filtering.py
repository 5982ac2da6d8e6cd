"""Removing zero-signal samples from a GRPO batch before the loss sees it.

A group whose candidates all got the same score (zero variance) has advantage 0 everywhere:
TRL keeps its rows, so they still count in the loss's denominator (token-mean: its tokens;
sequence-mean: its rows) and dilute every real gradient. Invalid samples (every reward
function returned None: the evaluator raised, timed out or returned junk) get advantage 0
the same way. Both are removed here, from the dict `_generate_and_score_completions` returns.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# Scores closer than this count as equal: a group spread this small carries no signal.
ZERO_SPREAD = 1e-6


def group_keep_mask(rewards: torch.Tensor, group_size: int) -> tuple[torch.Tensor, int, int]:
    """Rows to keep of a whole generation batch (every process's rows, in TRL's group order).

    rewards: (N,) one score per completion, NaN where it could not be scored; N = groups x group_size,
    consecutive rows forming a group (TRL's RepeatSampler order). A group is filtered when fewer
    than two of its candidates are valid or its valid scores are all equal; an invalid row is
    dropped on its own. Returns (keep (N,) bool, filtered groups, groups).
    """
    if rewards.dim() != 1 or rewards.numel() % group_size:
        raise ValueError(f"rewards of shape {tuple(rewards.shape)} do not split into groups of {group_size}")
    grouped = rewards.detach().float().view(-1, group_size)
    valid = ~torch.isnan(grouped)
    high = torch.where(valid, grouped, torch.full_like(grouped, -torch.inf)).max(dim=1).values
    low = torch.where(valid, grouped, torch.full_like(grouped, torch.inf)).min(dim=1).values
    informative = (valid.sum(dim=1) >= 2) & ((high - low) > ZERO_SPREAD)
    keep = (valid & informative.unsqueeze(1)).reshape(-1)
    groups = grouped.size(0)
    return keep, groups - int(informative.sum()), groups


def filter_batch(
    batch: dict,
    keep: torch.Tensor,
    drop_rows: bool,
    total_items: Callable[[torch.Tensor], torch.Tensor] = lambda n: n,
    rows: int | None = None,
) -> dict:
    """The local batch without the rows `keep` marks False.

    drop_rows=True removes them from every per-row tensor / list (exact: they leave both the
    token-mean and the sequence-mean denominators). drop_rows=False zeroes their completion
    mask instead (shapes unchanged; needed when TRL later splits the batch into
    steps_per_generation equal slices; exact for token-mean losses only). Dropping keeps at least
    one row, and `rows` rows when given (several processes: TRL gathers per-row values, which
    needs the same row count on every process): the first dropped rows stay as inert rows, with
    an empty mask and advantage 0, a loss of exactly 0 with an intact graph (token-mean: exact;
    sequence-mean: they count as rows). `num_items_in_batch` is recounted from the kept mask;
    `total_items` sums it over processes (accelerator.gather(...).sum()), once per call: every
    process calls it, so every process must take part in the same collectives.
    """
    size = batch["completion_mask"].size(0)
    keep = keep.to(batch["completion_mask"].device).bool()
    if keep.numel() != size:
        raise ValueError(f"keep mask has {keep.numel()} rows, batch has {size}")
    out = dict(batch)
    if drop_rows:
        kept = int(keep.sum())
        padding = max(1, kept if rows is None else rows) - kept
        dropped = ~keep
        inert = dropped & (torch.cumsum(dropped.long(), 0) <= padding)
        index = (keep | inert).nonzero(as_tuple=True)[0]
        selected = set(index.tolist())
        for name, value in batch.items():
            if name == "num_items_in_batch":
                continue
            if isinstance(value, torch.Tensor) and value.dim() >= 1 and value.size(0) == size:
                out[name] = value.index_select(0, index.to(value.device))
            elif isinstance(value, list) and len(value) == size:
                out[name] = [v for i, v in enumerate(value) if i in selected]
        keep = keep[index]
    if not bool(keep.all()):
        out["completion_mask"] = out["completion_mask"] * keep.to(out["completion_mask"].dtype).unsqueeze(1)
        out["advantages"] = out["advantages"] * keep.to(out["advantages"].dtype).view(
            -1, *([1] * (out["advantages"].dim() - 1))
        )
    mask = out["completion_mask"] if "tool_mask" not in out else out["completion_mask"] * out["tool_mask"]
    out["num_items_in_batch"] = total_items(mask.sum())
    return out
