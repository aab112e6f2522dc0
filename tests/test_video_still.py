"""Still steps: finding them in frames, marking them in codes, and decoding them as copies
of the frame before them."""

import torch

from vqvae.modalities.video.still import copy_still, fill_still, mark_still, still_steps


def _clip(frames: list[int]) -> torch.Tensor:
    """One window ``(1, 3, T, 4, 4)`` whose frame t is filled with ``frames[t] / 10``."""
    return torch.stack([torch.full((3, 4, 4), v / 10) for v in frames], dim=1).unsqueeze(0)


def test_a_step_is_still_when_all_its_frames_repeat_the_frame_before_it():
    #               step 0   step 1   step 2   step 3   step 4
    video = _clip([1, 1,   1, 1,   2, 2,   2, 3,   3, 3])
    assert still_steps(video, 2).tolist() == [[False, True, False, False, True]]  # step 0 has no frame before it
    video[0, 1, 9, 0, 0] += 0.01  # one pixel of one channel moves
    assert still_steps(video, 2)[0, 4].item() is False


def test_still_steps_hold_the_extra_symbol_at_every_position():
    codes = torch.arange(24).view(1, 3, 2, 4)
    marked = mark_still(codes, torch.tensor([[False, True, False]]), 99)
    assert (marked[0, 1] == 99).all() and torch.equal(marked[0, [0, 2]], codes[0, [0, 2]])


def test_filling_takes_the_code_one_step_earlier_and_a_majority_makes_a_step_still():
    k = 9
    codes = torch.tensor([[[[k, 1], [2, 3]],     # step 0: a stray still symbol becomes code 0
                           [[k, k], [k, 5]],     # step 1: 3 of 4 positions: still
                           [[k, k], [7, 8]]]])   # step 2: 2 of 4: still (half counts)
    filled, still = fill_still(codes, k)
    assert still.tolist() == [[False, True, True]]
    assert filled.tolist() == [[[[0, 1], [2, 3]], [[0, 1], [2, 5]], [[0, 1], [7, 8]]]]
    assert int(filled.max()) < k


def test_still_steps_copy_the_frame_before_them_and_given_frames_come_first():
    decoded = _clip([1, 2, 3, 4, 5, 6])
    still = torch.tensor([[False, True, True]])
    copied = copy_still(decoded, still, 2)
    assert copied[0, 0, :, 0, 0].mul(10).round().tolist() == [1, 2, 2, 2, 2, 2]  # a run repeats one frame
    given = _clip([7, 8])
    copied = copy_still(decoded, still, 2, given=given)
    assert copied[0, 0, :, 0, 0].mul(10).round().tolist() == [7, 8, 8, 8, 8, 8]  # the true last given frame
    assert copy_still(decoded, torch.tensor([[False, False, False]]), 2).equal(decoded)
