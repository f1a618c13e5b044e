import pytest
import torch

from selalign.selection import TIE_TOLERANCE, select_top_tokens


def select_by_loop(scores, mask, ratio, tolerance=0.0):
    """The rule written plainly, one row at a time, with torch.quantile."""
    out = torch.zeros_like(mask)
    for row in range(scores.shape[0]):
        if mask[row].any():
            threshold = torch.quantile(scores[row][mask[row]], 1.0 - ratio)
            out[row] = mask[row] & (scores[row] >= threshold - tolerance)
    return out


@pytest.mark.parametrize("ratio", [0.05, 0.1, 0.4, 0.5, 0.6, 0.999, 1.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_per_row_loop_on_random_inputs(ratio, dtype):
    generator = torch.Generator().manual_seed(int(ratio * 1000))
    for trial in range(20):
        scores = torch.randn(7, 23, generator=generator, dtype=dtype)
        if trial % 2:  # many ties
            scores = torch.randint(0, 3, (7, 23), generator=generator).to(dtype)
        mask = torch.rand(7, 23, generator=generator) > 0.3
        mask[0] = False  # a row without response tokens
        mask[1] = False
        mask[1, 5] = True  # a row with a single response token
        assert torch.equal(select_top_tokens(scores, mask, ratio, tolerance=0.0), select_by_loop(scores, mask, ratio))
        assert torch.equal(select_top_tokens(scores, mask, ratio), select_by_loop(scores, mask, ratio, TIE_TOLERANCE))


def test_hand_computed_threshold_and_ties_kept():
    scores = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0, 9.0], [2.0, 2.0, 2.0, 1.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True, True, True, False], [True, True, True, True, False, False]])
    # row 0: scores 1..5, 0.6 quantile at position 0.6 * 4 = 2.4 -> 3 + 0.4 * (4 - 3) = 3.4: keeps 4 and 5; the
    # masked-out 9 is never selected. Row 1: sorted [1, 2, 2, 2], position 1.8 -> 2: all three tied 2s are kept.
    selected = select_top_tokens(scores, mask, 0.4)
    assert selected.tolist() == [[False, False, False, True, True, False], [True, True, True, False, False, False]]


def test_ratio_one_selects_every_masked_token():
    scores = torch.randn(4, 10)
    mask = torch.rand(4, 10) > 0.5
    assert torch.equal(select_top_tokens(scores, mask, 1.0), mask)


def test_padding_and_prompt_never_selected_even_with_huge_scores():
    scores = torch.zeros(2, 8)
    scores[:, :3] = 1e9  # prompt positions
    scores[:, 6:] = 1e9  # padding positions
    mask = torch.zeros(2, 8, dtype=torch.bool)
    mask[:, 3:6] = True
    selected = select_top_tokens(scores, mask, 0.5)
    assert not selected[:, :3].any() and not selected[:, 6:].any()
    assert selected[:, 3:6].all()  # all tied at 0: ties are kept


def test_empty_rows_select_nothing_and_stay_finite():
    scores = torch.randn(3, 5)
    mask = torch.zeros(3, 5, dtype=torch.bool)
    assert not select_top_tokens(scores, mask, 0.4).any()


@pytest.mark.parametrize("ratio", [0.0, -0.1, 1.01, 2.0])
def test_ratio_out_of_range_is_an_error(ratio):
    with pytest.raises(ValueError, match=r"selection ratio must be in \(0, 1\]"):
        select_top_tokens(torch.zeros(1, 3), torch.ones(1, 3, dtype=torch.bool), ratio)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="same shape"):
        select_top_tokens(torch.zeros(2, 3), torch.ones(2, 4, dtype=torch.bool), 0.5)


def test_scores_within_the_tolerance_below_the_threshold_are_ties_and_kept():
    # Five scores at ratio 0.5: the threshold is the middle one, 2. A score 0.0005 below it is a tie; 0.002 below is not.
    scores = torch.tensor([[0.0, 1.9995, 2.0, 3.0, 4.0], [0.0, 1.998, 2.0, 3.0, 4.0]])
    mask = torch.ones_like(scores, dtype=torch.bool)
    assert TIE_TOLERANCE == 1e-3
    assert select_top_tokens(scores, mask, 0.5).tolist() == [[False, True, True, True, True], [False, False, True, True, True]]
    assert select_top_tokens(scores, mask, 0.5, tolerance=0.0).tolist() == [[False, False, True, True, True]] * 2


def test_float_noise_on_tied_scores_does_not_decide_the_selection():
    """Scores that are 0 up to float32 noise (the policy's start as reference, log-probs from another batch shape)
    keep every token, as exact zeros do; without the tolerance the noise would pick a share."""
    mask = torch.rand(6, 40, generator=torch.Generator().manual_seed(1)) > 0.2
    noise = 1e-6 * torch.randn(6, 40, generator=torch.Generator().manual_seed(2))
    assert torch.equal(select_top_tokens(torch.zeros(6, 40), mask, 0.4), mask)
    assert torch.equal(select_top_tokens(noise, mask, 0.4), mask)
    noise_picked = select_top_tokens(noise, mask, 0.4, tolerance=0.0)
    assert noise_picked.sum() < 0.5 * mask.sum()


def test_negative_tolerance_is_an_error():
    with pytest.raises(ValueError, match="tie tolerance must be >= 0"):
        select_top_tokens(torch.zeros(1, 3), torch.ones(1, 3, dtype=torch.bool), 0.5, tolerance=-1e-3)
