"""Guidance with a beat scale of its own, gated by the visual beats (vmas_diffusion.guidance), in both backends."""

from dataclasses import replace

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


# ---------------------------------------------------------------------------- flux guidance (LDM)
def flux_setup(ys, scale=0.5, **overrides):
    """A tiny LDM whose latents are a tiny mel codec's (32 bands), with a constant flux map at ``ys`` dB."""
    codec = dummies.dummy_mel_codec()
    model = dummies.dummy_ldm_generator(latent_dim=32, beat_fuse="adaln", flux_guidance_scale=scale,
                                        flux_map=[[0.0, 4.0], [ys, ys]], **overrides)
    return model, codec


def mean_flux(codec, latents):
    return float(codec.spectral_flux(latents).mean())


def generate(model, codec, beat, **kwargs):
    return model.generate(conditions(beat), 150, guidance_scale=3.0, generator=torch.Generator().manual_seed(0),
                          num_inference_steps=10, spectral_flux=codec.spectral_flux, **kwargs)


@pytest.mark.parametrize("smoothing", [0.0, 0.08])  # the gradient step; the step towards the smoothed latents
def test_flux_guidance_moves_the_music_s_flux_towards_the_map_s_and_is_off_at_scale_zero(smoothing):
    beat = torch.zeros(1, 150)
    beat[0, ::25] = 1.0  # a visual beat a second, 6 s at 25 fps: two windows
    calm, codec = flux_setup(ys=0.5)
    busy, _ = flux_setup(ys=40.0)
    free = generate(calm, codec, beat, flux_guidance_scale=0.0)
    torch.testing.assert_close(generate(busy, codec, beat, flux_guidance_scale=0.0), free, atol=0, rtol=0)
    # off without a beat condition: nothing says how busy the video is
    no_beat = {VIDEO: conditions(beat)[VIDEO]}
    kwargs = dict(guidance_scale=3.0, num_inference_steps=10, spectral_flux=codec.spectral_flux)
    torch.testing.assert_close(calm.generate(no_beat, 150, generator=torch.Generator().manual_seed(0), **kwargs),
                               calm.generate(no_beat, 150, generator=torch.Generator().manual_seed(0),
                                             flux_guidance_scale=0.0, **kwargs), atol=0, rtol=0)
    lowered, raised = (generate(m, codec, beat, flux_guidance_smoothing=smoothing) for m in (calm, busy))
    assert mean_flux(codec, lowered) < 0.85 * mean_flux(codec, free)
    assert mean_flux(codec, raised) > 1.15 * mean_flux(codec, free)


@pytest.mark.parametrize("smoothing", [0.0, 2.0])
@pytest.mark.parametrize("prediction_type", ["v_prediction", "epsilon", "flow"])
def test_the_steered_output_predicts_the_shifted_clean_latents(prediction_type, smoothing):
    from vmas_diffusion.guidance import FluxGuidance

    model, codec = flux_setup(ys=0.5, prediction_type=prediction_type)
    sample, output = torch.randn(2, 1, 32, 40, generator=torch.Generator().manual_seed(0))
    flux = FluxGuidance(0.5, codec.spectral_flux, torch.ones(1, 40), [[0.0], [0.5]], smoothing)
    target = torch.tensor([0.5]).log()
    timestep = 0.3 * model.config.num_train_timesteps if prediction_type == "flow" else torch.tensor(300)

    def clean(out):  # the clean latents a model output predicts at this noisy sample
        if prediction_type == "flow":
            return sample - 0.3 * out
        ac = model.noise_scheduler.alphas_cumprod[300]
        if prediction_type == "v_prediction":
            return ac.sqrt() * sample - (1 - ac).sqrt() * out
        return (sample - (1 - ac).sqrt() * out) / ac.sqrt()

    steered = model._steer_flux(output, sample, timestep, flux, target)
    shift = flux.clean_shift(clean(output), target)
    torch.testing.assert_close(clean(steered), clean(output) + shift, atol=1e-4, rtol=1e-4)
    assert shift.pow(2).mean().sqrt() > 0.1  # a real move (RMS scale x error, the error clamped to 1)
    assert mean_flux(codec, clean(steered)) < mean_flux(codec, clean(output))


def test_flux_guidance_needs_a_map_a_codec_with_flux_and_a_valid_scale():
    from vmas_diffusion.errors import InputError

    beat = torch.zeros(1, 50)
    model, codec = flux_setup(ys=1.0)
    with pytest.raises(InputError, match="spectral_flux"):
        model.generate(conditions(beat), 50, num_inference_steps=2)  # no codec flux given
    for bad in (-1.0, float("nan"), "1"):
        for name in ("flux_guidance_scale", "flux_guidance_smoothing", "flux_guidance_reach", "flux_guidance_contrast"):
            with pytest.raises(InputError, match=name):
                generate(model, codec, beat, **{name: bad})
    plain = dummies.dummy_ldm_generator(latent_dim=32)
    with pytest.raises(InputError, match="flux_map"):
        plain.generate(conditions(beat), 50, num_inference_steps=2, flux_guidance_scale=0.5,
                       spectral_flux=codec.spectral_flux)
    for config, match in ((dict(flux_guidance_scale=0.5), "flux_map"),
                          (dict(flux_map=[[1.0, 0.0], [1.0, 2.0]]), "flux_map"),
                          (dict(flux_guidance_scale=-0.5, flux_map=[[0.0], [1.0]]), "flux_guidance_scale"),
                          (dict(flux_guidance_smoothing=float("inf")), "flux_guidance_smoothing"),
                          (dict(flux_guidance_reach=-0.1), "flux_guidance_reach"),
                          (dict(flux_guidance_contrast=float("nan")), "flux_guidance_contrast"),
                          (dict(flux_guidance_pivot=0.0), "flux_guidance_pivot")):
        with pytest.raises(ConfigError, match=match):
            dummies.dummy_ldm_generator(latent_dim=32, **config)


def test_smoothing_over_time_keeps_steady_latents_and_never_adds_rises():
    from vmas_diffusion.guidance import smooth_over_time

    steady = torch.linspace(-1.0, 1.0, 8)[None, :, None].expand(2, 8, 30)
    torch.testing.assert_close(smooth_over_time(steady, 2.0), steady)  # a held note stays exactly as it is
    jittery = torch.randn(2, 8, 60, generator=torch.Generator().manual_seed(0))
    for std in (0.5, 2.0, 6.0):
        smoothed = smooth_over_time(jittery, std)
        assert smoothed.shape == jittery.shape
        rises = [torch.relu(x.diff(dim=-1)).sum(dim=-1) for x in (jittery, smoothed)]
        assert bool((rises[1] <= rises[0] + 1e-5).all())
    assert smooth_over_time(jittery, 6.0).diff(dim=-1).abs().mean() < 0.2 * jittery.diff(dim=-1).abs().mean()


def test_a_window_s_target_is_the_map_at_its_mean_pace():
    from vmas_diffusion.guidance import plan_flux_guidance

    beat = torch.zeros(2, 200)  # 8 s at 25 fps
    beat[0, :100:25] = 1.0  # first item: a beat a second for 4 s, then none; second item: none
    conds = conditions(beat)
    conds[BEAT].mask[1] = False  # the second item has no video: no target
    flux_map = [[0.0, 1.0, 2.0], [1.0, 2.0, 4.0]]
    plan = plan_flux_guidance(conds, 400, 50.0, 0.5, flux_map, lambda x: x, 2.0)
    assert plan_flux_guidance(conds, 400, 50.0, 0.0, flux_map, lambda x: x, 2.0) is None
    first, last = plan.window_target(0, 200), plan.window_target(200, 200)
    assert torch.isnan(first[1]) and torch.isnan(last[1])
    pace = plan.pace[0, :200].mean()
    assert 0.5 < pace < 1.1  # about a beat a second (less near the end of the beats)
    torch.testing.assert_close(first[0], torch.log(1.0 + pace))  # the map is 1 + pace below 1 beat/s
    assert last[0] < first[0]
    # a contrast stretches the log target around the pivot: calmer than the map below it, busier above
    for pivot in (1.0, 4.0):
        stretched = plan_flux_guidance(conds, 400, 50.0, 0.5, flux_map, lambda x: x, 2.0, contrast=1.5, pivot=pivot)
        log_pivot = torch.tensor(pivot).log()
        torch.testing.assert_close(stretched.window_target(0, 200)[0], log_pivot + 1.5 * (first[0] - log_pivot))
        assert torch.isnan(stretched.window_target(0, 200)[1])


def test_flux_guidance_holds_off_near_visual_beats_within_its_reach():
    from vmas_diffusion.guidance import beat_nearby, plan_flux_guidance

    beat = torch.zeros(1, 100)  # 4 s at 25 fps, a strong beat at 1 s and a weak one at 3 s
    beat[0, 25], beat[0, 75] = 1.0, 0.5
    conds = conditions(beat)
    rises = lambda x: x.diff(dim=-1).clamp_min(0).mean(dim=1)  # noqa: E731 (a flux in latent units)
    plan = plan_flux_guidance(conds, 200, 50.0, 0.5, [[0.0], [1.0]], rises, 2.0, 0.08, reach=0.1)
    torch.testing.assert_close(plan.keep, 1.0 - beat_nearby(conds[BEAT], torch.arange(200), 50.0, 0.1))
    assert plan.keep[0, 50] == 0 and plan.keep[0, 150] == 0.5 and plan.keep[0, 100] == 1  # at the beats; between
    assert plan_flux_guidance(conds, 200, 50.0, 0.5, [[0.0], [1.0]], rises, 2.0, 0.08).keep is None
    jittery = torch.randn(1, 8, 100, generator=torch.Generator().manual_seed(0))
    target = torch.tensor([-5.0])
    unkept = replace(plan, keep=None).clean_shift(jittery, target)
    first, second = plan.clean_shift(jittery, target, start=0), plan.clean_shift(jittery, target, start=100)
    assert unkept[..., 50].abs().min() > 0 and torch.all(first[..., 50] == 0)  # the strong beat's frame is kept
    torch.testing.assert_close(second[..., 50], 0.5 * unkept[..., 50])  # half of the step at the weak beat (150)
    torch.testing.assert_close(first[..., 80], unkept[..., 80])  # the whole step away from the beats


def test_flux_guidance_held_off_everywhere_samples_as_without_it():
    beat = torch.ones(1, 150)  # a visual beat on every video frame: the guidance holds off on every music frame
    model, codec = flux_setup(ys=0.5)
    free = generate(model, codec, beat, flux_guidance_scale=0.0)
    torch.testing.assert_close(generate(model, codec, beat, flux_guidance_reach=0.1), free, atol=1e-6, rtol=0)
    assert not torch.allclose(generate(model, codec, beat), free, atol=1e-3)  # without a reach it steers
