"""Per-sequence top-share token selection, the rule of Selective-DPO (arXiv 2507.07725)."""

from __future__ import annotations

import torch


# Scores within this distance (in nats) below a row's threshold count as ties with it and are kept. The same model's
# log-probs of the same tokens differ by float noise from one batch shape or kernel to another (about 1e-6 in
# float32 for the cached reference against the live one); such noise must not decide which tokens are kept. With
# the policy's own start as reference every score is 0 at the first step: live and cached runs then both keep every
# token, instead of a share picked by the noise. Far above float32 noise, far below the score differences that
# rank tokens (tenths of a nat and more). bfloat16 log-probs carry noise of about 1e-2, above this tolerance.
TIE_TOLERANCE = 1e-3


def select_top_tokens(scores: torch.Tensor, mask: torch.Tensor, ratio: float, tolerance: float = TIE_TOLERANCE) -> torch.Tensor:
    """Keep, in every row separately, the masked tokens whose score reaches the row's (1 - ratio) quantile.

    Args:
        scores: float [B, T], a score for every position (values outside ``mask`` are ignored).
        mask: bool [B, T], True on the tokens that may be selected (response tokens).
        ratio: share of each row's tokens to keep, 0 < ratio <= 1.
        tolerance: scores at most this far below the threshold are ties and kept (``TIE_TOLERANCE``), >= 0.

    Returns:
        bool [B, T]: ``mask & (scores >= q - tolerance)`` where ``q`` is the row's (1 - ratio) quantile of its
        masked scores, by linear interpolation between order statistics (``torch.quantile``'s
        definition). Ties at the threshold are kept; a row without masked tokens selects nothing.

    Fully vectorized: one sort over the batch, no Python loop over rows, no host-device sync.
    """
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"selection ratio must be in (0, 1], got {ratio}")
    if not tolerance >= 0.0:
        raise ValueError(f"tie tolerance must be >= 0, got {tolerance}")
    if scores.shape != mask.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and mask {tuple(mask.shape)} must have the same shape")
    mask = mask.bool()
    # Unselectable positions sort to the end of each row, so the first n_valid entries are the row's scores.
    sorted_scores = torch.where(mask, scores, torch.full_like(scores, float("inf"))).sort(dim=-1).values
    n_valid = mask.sum(dim=-1, keepdim=True)
    position = (1.0 - ratio) * (n_valid - 1).clamp(min=0).to(scores.dtype)
    lower = position.floor().long()
    upper = position.ceil().long()
    lower_value = sorted_scores.gather(-1, lower)
    upper_value = sorted_scores.gather(-1, upper)
    # Empty rows gather +inf on both sides; keep them finite so lerp stays NaN-free (they select nothing anyway).
    lower_value = torch.where(n_valid > 0, lower_value, torch.zeros_like(lower_value))
    upper_value = torch.where(n_valid > 0, upper_value, torch.zeros_like(upper_value))
    threshold = torch.lerp(lower_value, upper_value, position - lower.to(scores.dtype))
    return mask & (scores >= threshold - tolerance)
