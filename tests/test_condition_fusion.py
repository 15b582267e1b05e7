"""The shared condition fusion: one check, window slicing with window positions, sum-fusion values."""

import numpy as np
import pytest
import torch

from vmas_diffusion.conditions import (
    BEAT,
    PACE,
    Condition,
    check_pace_map,
    fit_pace_map,
    local_pace,
    map_pace,
    pace_condition,
)
from vmas_diffusion.errors import InputError
from vmas_diffusion.modules.condition_fusion import FusedConditions, check_conditions, frame_values, window_tokens
from vmas_diffusion.modules.transformer import sinusoidal_embedding


def ramp(batch=1, frames=16, rate=8.0, width=1) -> Condition:
    """Frame ``i`` holds the value ``i``: which frames a window kept is readable from the tokens."""
    values = torch.arange(frames, dtype=torch.float32)[None, :, None].expand(batch, frames, width).clone()
    return Condition(values, torch.ones(batch, frames, dtype=torch.bool), rate)


def test_window_tokens_keep_the_window_and_its_positions():
    cond = ramp(frames=32)  # 8 Hz for 4 s: 6.25 music frames (50 Hz) per condition frame
    tokens, mask = window_tokens(cond, torch.nn.Identity(), 50, 50, 50.0)
    times = torch.arange(32) * 6.25
    kept = ((times > 50 - 6.25) & (times < 100)).nonzero()[:, 0]  # straddling the start .. before the end
    assert tokens.shape[1] == len(kept) and mask.all()
    positions = kept.float() * 6.25 - 50
    torch.testing.assert_close(tokens[0], kept.float()[:, None] + sinusoidal_embedding(positions, 1))
    with_tail, _ = window_tokens(cond, torch.nn.Identity(), 50, 50, 50.0, tail=1)
    assert with_tail.shape[1] == len(kept) + 1  # one frame past the window
    assert window_tokens(cond, torch.nn.Identity(), 200, 50, 50.0) is None  # the condition ended before it
    last, _ = window_tokens(cond, torch.nn.Identity(), 150, 100, 50.0, tail=1)
    assert float(last[0, -1, 0] - sinusoidal_embedding(torch.tensor([31 * 6.25 - 150]), 1)[0, 0]) == pytest.approx(31)  # capped


def test_window_tokens_of_an_untimed_condition_are_all_of_it():
    cond = Condition(torch.randn(2, 3, 4), torch.ones(2, 3, dtype=torch.bool))
    tokens, mask = window_tokens(cond, torch.nn.Identity(), 100, 50, 50.0)
    assert torch.equal(tokens, cond.tensor) and torch.equal(mask, cond.mask)


def test_frame_values_read_the_resampled_condition():
    cond = ramp(frames=4, rate=10.0)
    frames = torch.tensor([[0, 5], [10, 20]])
    values, valid = frame_values(cond, frames, 50.0)
    assert values.shape == (1, 2, 2, 1)
    torch.testing.assert_close(values[0, :, :, 0], torch.tensor([[0.0, 1.0], [2.0, 0.0]]))  # frame 20 is past the end
    assert valid.tolist() == [[[True, True], [True, False]]]


def test_check_conditions_names_what_is_wrong():
    widths = {"video": 4, "beat": 1}
    video = Condition(torch.zeros(2, 3, 4), torch.ones(2, 3, dtype=torch.bool), 8.0)
    assert check_conditions({"video": video}, widths) == 2
    assert check_conditions({}, widths, 5) == 5 and check_conditions(None, widths) is None
    bad = {
        "unknown condition": {"text": video},
        "has width 4": {"beat": video},
        "must be a Condition": {"video": video.tensor},
        "batch sizes disagree": {"video": video, "beat": Condition(torch.zeros(3, 3, 1), torch.ones(3, 3), 8.0)},
        "needs a frame_rate": {"beat": Condition(torch.zeros(2, 3, 1), torch.ones(2, 3))},
    }
    for match, conditions in bad.items():
        with pytest.raises(InputError, match=match):
            check_conditions(conditions, widths, time_aligned=["beat"])
    with pytest.raises(InputError, match="dict"):
        check_conditions([video], widths)


def test_fused_conditions_concatenate_tokens_per_mode():
    a, b = torch.ones(1, 2, 3), torch.zeros(1, 1, 3)
    m = torch.ones(1, 2, dtype=torch.bool)
    fused = FusedConditions.from_tokens({"cross": [(a, m), (b, m[:, :1])], "prepend": []})
    assert fused.cross.shape == (1, 3, 3) and fused.cross_mask.shape == (1, 3)
    assert fused.prefix is None and fused.prefix_len == 0


def test_local_pace_counts_beats_per_second_in_its_window():
    rate = 10.0
    strength = torch.zeros(2, 120, 1)
    strength[0, 5::10] = 1.0  # a cut every second
    strength[1, 5::5] = 0.6  # a beat every half second ...
    strength[1, 60:] = 0.1  # ... then calm: movement below a beat's height
    mask = torch.ones(2, 120, dtype=torch.bool)
    pace = local_pace(Condition(strength, mask, rate), window_seconds=4.0)
    assert pace.tensor.shape == (2, 120, 2) and pace.frame_rate == rate and torch.equal(pace.mask, mask)
    window = 41 / rate  # 4 s centred on a frame: 41 frames
    # frame 60 sees frames 40-80: cuts at 45, 55, 65, 75, strength 1 on those 4 frames
    torch.testing.assert_close(pace.tensor[0, 60], torch.tensor([4 / window, 4 / 41]))
    assert pace.tensor[1, 30, 0] == pytest.approx(9 / window)  # beats at 10, 15, ..., 50 and pace.tensor[1, 100, 0] == 0  # busy, then calm
    assert pace.tensor[1, 100, 1] == pytest.approx(0.1)  # the calm part still moves a little
    # at the start only the window's valid frames count: frames 0-20 hold two cuts
    assert pace.tensor[0, 0, 0] == pytest.approx(2 / 2.1)


def test_local_pace_ignores_padding_and_keeps_a_null_beat_null():
    g = torch.Generator().manual_seed(0)
    strength = torch.rand(1, 50, 1, generator=g)
    alone = local_pace(Condition(strength, torch.ones(1, 50, dtype=torch.bool), 10.0), 4.0)
    padded = Condition(torch.cat([strength, torch.ones(1, 20, 1)], 1), torch.arange(70)[None] < 50, 10.0)
    batched = local_pace(padded, 4.0)
    torch.testing.assert_close(batched.tensor[:, :50], alone.tensor)
    assert batched.tensor[:, 50:].abs().max() == 0 and not batched.mask[:, 50:].any()
    null = local_pace(padded.null(), 4.0)
    assert null.tensor.abs().max() == 0 and not null.mask.any()
    with pytest.raises(InputError, match="frame_rate"):
        local_pace(Condition(strength, torch.ones(1, 50, dtype=torch.bool)), 4.0)
    with pytest.raises(InputError, match="width 1"):
        local_pace(Condition(strength.expand(1, 50, 2), torch.ones(1, 50, dtype=torch.bool), 10.0), 4.0)


def test_fit_pace_map_pairs_quantiles_and_map_pace_interpolates():
    g = torch.Generator().manual_seed(0)
    video = torch.rand(4000, 2, generator=g) * torch.tensor([4.0, 0.5])
    music = 2.0 * video + torch.tensor([1.0, 0.0])  # a monotone relation: the map recovers it
    table = fit_pace_map(video[torch.randperm(4000, generator=g)], music, num_quantiles=11)
    assert len(table) == 2 and all(len(xs) == len(ys) == 11 for xs, ys in table)
    probe = Condition(torch.tensor([[[1.0, 0.1], [3.0, 0.4], [9.0, -1.0]]]), torch.ones(1, 3, dtype=torch.bool), 10.0)
    mapped = map_pace(probe, table)
    torch.testing.assert_close(mapped.tensor[0, :2], 2.0 * probe.tensor[0, :2] + torch.tensor([1.0, 0.0]), atol=0.05, rtol=0)
    # flat beyond the fitted range, as np.interp
    torch.testing.assert_close(mapped.tensor[0, 2], torch.tensor([table[0][1][-1], table[1][1][0]]))
    xs, ys = table[0]
    assert np.allclose(mapped.tensor[0, :, 0].numpy(), np.interp(probe.tensor[0, :, 0].numpy(), xs, ys), atol=1e-6)
    # masked frames stay zero; no table: the pace as it is
    half = Condition(probe.tensor, torch.tensor([[True, False, True]]), 10.0)
    assert map_pace(half, table).tensor[0, 1].abs().max() == 0
    assert map_pace(probe, None) is probe
    # ties (600 frames without a beat: the levels 0 .. 0.5 all give 0) keep the mean of their partners
    calm = torch.cat([torch.zeros(600, 2), torch.rand(400, 2, generator=g) + 1.0])
    tied = fit_pace_map(calm, torch.arange(1000.0)[:, None].expand(1000, 2), num_quantiles=11)
    xs, ys = tied[0]
    assert xs[0] == 0.0 and xs[1] > 0 and ys[0] == pytest.approx(np.mean(np.quantile(np.arange(1000.0), np.linspace(0, 0.5, 6))), abs=1e-3)
    assert check_pace_map(tied, "pace_map") is None and check_pace_map(None, "pace_map") is None
    for bad in ([[[0, 1], [0]]] * 2, [[[1, 0], [0, 1]]] * 2, [[[0, 1], [0, 1]]], "map", [[[0, float("nan")], [0, 1]]] * 2):
        assert "pace_map must be" in check_pace_map(bad, "pace_map")
    with pytest.raises(InputError, match="same shape"):
        fit_pace_map(torch.zeros(5, 2), torch.zeros(4, 2))


def test_pace_condition_prefers_the_given_pace_and_follows_the_beat():
    g = torch.Generator().manual_seed(0)
    beat = Condition(torch.rand(2, 40, 1, generator=g), torch.ones(2, 40, dtype=torch.bool), 10.0)
    table = [[[0.0, 10.0], [0.0, 20.0]], [[0.0, 1.0], [1.0, 2.0]]]  # doubles the beats per second, adds 1 to the strength
    from_video = pace_condition({BEAT: beat}, 4.0, table)
    torch.testing.assert_close(from_video.tensor, local_pace(beat, 4.0).tensor * torch.tensor([2.0, 1.0]) + torch.tensor([0.0, 1.0]))
    given = Condition(torch.rand(2, 100, 2, generator=g), torch.ones(2, 100, dtype=torch.bool), 25.0)
    assert pace_condition({BEAT: beat, PACE: given}, 4.0, table).tensor.equal(given.tensor)
    # a dropped beat drops its pace: no beat, no pace; a null item's given pace is null
    assert pace_condition({PACE: given}, 4.0, table) is None
    dropped = pace_condition({BEAT: beat.drop_items(torch.tensor([True, False])), PACE: given}, 4.0, table)
    assert dropped.tensor[0].abs().max() == 0 and not dropped.mask[0].any() and dropped.tensor[1].equal(given.tensor[1])
