"""Guidance with a beat scale of its own, gated by the visual beats (vmas_diffusion.guidance), in both backends."""

import dummies
import pytest
import torch

from vmas_diffusion.conditions import BEAT, VIDEO, Condition
from vmas_diffusion.errors import ConfigError
from vmas_diffusion.guidance import Guidance, plan_guidance


def conditions(beat: torch.Tensor, seed=0, video_rate=10.0, beat_rate=25.0):
    """Random video ``[B, Tv, 16]`` and the given beat envelope ``[B, Tb]`` at ``beat_rate``."""
    b, tb = beat.shape
    tv = int(tb / beat_rate * video_rate)
    video = torch.randn(b, tv, 16, generator=torch.Generator().manual_seed(seed))
    return {VIDEO: Condition(video, torch.ones(b, tv, dtype=torch.bool), video_rate),
            BEAT: Condition(beat[..., None], torch.ones(b, tb, dtype=torch.bool), beat_rate)}


def test_the_gate_is_the_strongest_visual_beat_within_reach():
    beat = torch.zeros(2, 25)
    beat[0, 10] = 0.8  # one visual beat at 0.4 s in the first item; none in the second
    conds = conditions(beat)
    guidance = plan_guidance(conds, 3.0, 12.0, {"beat_guidance_reach": 0.1})
    gate = guidance.gate(torch.arange(50), 50.0)  # music frames at 50 Hz: the beat is at frame 20
    assert gate.shape == (2, 50)
    # read at 50 Hz the beat is 0.4, 0.8, 0.4 at frames 19-21; the gate holds its peak 5 frames (0.1 s) either side
    distance = (torch.arange(50) - 20).abs()
    torch.testing.assert_close(gate[0, distance <= 5], torch.full(((distance <= 5).sum(),), 0.8))
    torch.testing.assert_close(gate[0, distance == 6], torch.full((2,), 0.4))
    assert torch.all(gate[0, distance > 6] == 0) and torch.all(gate[1] == 0)
    assert plan_guidance(conds, 3.0, 12.0, {}).gate(torch.arange(50), 50.0) is None  # no reach: not gated
    assert plan_guidance(conds, 3.0, None, {"beat_guidance_reach": 0.1}).beat_scale is None  # no beat scale: plain CFG
    assert plan_guidance({VIDEO: conds[VIDEO]}, 3.0, 12.0, {}).beat_scale is None  # no beat to guide


def test_combine_is_plain_cfg_where_the_gate_is_closed_and_beat_guidance_where_it_is_open():
    cond, no_beat, null = torch.randn(3, 2, 4, 6, generator=torch.Generator().manual_seed(0))
    out = torch.cat([cond, no_beat, null])
    guidance = Guidance(3.0, 12.0)
    full = null + 3.0 * (no_beat - null) + 12.0 * (cond - no_beat)
    torch.testing.assert_close(guidance.combine(out), full)
    torch.testing.assert_close(guidance.combine(out, torch.zeros(2, 1, 6)), null + 3.0 * (cond - null))
    torch.testing.assert_close(guidance.combine(out, torch.ones(2, 1, 6)), full)
    gate = torch.tensor([0.0, 0.5, 1.0, 0.0, 0.25, 1.0]).expand(2, 1, 6)
    torch.testing.assert_close(guidance.combine(out, gate),
                               null + 3.0 * (no_beat - null) + (3.0 + 9.0 * gate) * (cond - no_beat))


def sample(model, conds, **kwargs):
    """Greedy AR codes or LDM latents for ``conds``, 1 s of music."""
    if model.backend == "ar":
        return model.generate(conds, 50, guidance_scale=3.0, temperature=0.0, **kwargs)
    return model.generate(conds, 50, guidance_scale=3.0, num_inference_steps=3, generator=torch.Generator().manual_seed(0), **kwargs)


@pytest.mark.parametrize("backend", ["ar", "ldm"])
def test_a_gated_beat_scale_is_plain_cfg_without_visual_beats_and_full_with_them_everywhere(backend):
    make = dummies.dummy_ar_generator if backend == "ar" else dummies.dummy_ldm_generator
    gated, ungated = make(beat_guidance_reach=0.1), make()
    ungated.load_state_dict(gated.state_dict())
    silent, busy = conditions(torch.zeros(1, 25)), conditions(torch.ones(1, 25))

    def close(a, b):
        if backend == "ar":
            assert torch.equal(a, b)
        else:
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)

    # no visual beat anywhere: the gate stays shut and the beat scale is the video's
    close(sample(gated, silent, beat_guidance_scale=12.0), sample(ungated, silent))
    # a beat on every frame: the gate is open everywhere
    close(sample(gated, busy, beat_guidance_scale=12.0), sample(ungated, busy, beat_guidance_scale=12.0))
    # weak visual beats: a beat scale between the two, so the music is neither
    weak = conditions(0.5 * torch.rand(1, 25, generator=torch.Generator().manual_seed(1)))
    middle = sample(gated, weak, beat_guidance_scale=12.0)
    assert not torch.equal(middle, sample(ungated, weak, beat_guidance_scale=12.0))
    assert not torch.equal(middle, sample(ungated, weak))
    with pytest.raises(ConfigError, match="beat_guidance_reach"):
        make(beat_guidance_reach=-0.1)
