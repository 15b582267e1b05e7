"""LatentDiT, the LDM backend: denoiser, training objective, samplers, CFG, windows, save/load, EMA.

Several tests swap the network for an *ideal denoiser* written from the textbook
formulas (diffusers' ``alphas_cumprod``, rectified-flow interpolation): with it every
sampler must land on the known answer, which checks that training targets, timestep
conventions and the schedulers ``make_scheduler`` builds all agree.
"""

import time
from dataclasses import replace

import pytest
import torch
from diffusers import DDPMScheduler, FlowMatchEulerDiscreteScheduler

from dummies import dummy_codec, dummy_ldm_generator
from vmas_diffusion.conditions import BEAT, VIDEO, Condition
from vmas_diffusion.errors import ConfigError, InputError
from vmas_diffusion.models.generators import build_generator
from vmas_diffusion.models.generators.latent_dit import LatentDiT

D = 16  # dummy latent_dim (matches dummy_codec)
SAMPLERS = {
    "v_prediction": ["ddpm", "ddim", "dpmsolver++", "euler"],
    "epsilon": ["ddpm", "ddim", "dpmsolver++", "euler"],
    "flow": ["euler", "dpmsolver++"],
}


@pytest.fixture(autouse=True)
def one_thread():
    """These tensors are tiny: one thread avoids thread hand-off costs (10-50x on a busy 2-core box)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape, seed=0) -> torch.Tensor:
    return torch.randn(*shape, generator=gen(seed))


def make_conditions(batch=2, seconds=1.2, seed=0, video_rate=8.0, beat_rate=25.0):
    """Video ``[B, Tv, 16]`` at 8 Hz and beat strength ``[B, Tb, 1]`` at 25 Hz."""
    g = gen(seed)
    tv, tb = int(seconds * video_rate), int(seconds * beat_rate)
    return {
        VIDEO: Condition(torch.randn(batch, tv, 16, generator=g), torch.ones(batch, tv, dtype=torch.bool), video_rate),
        BEAT: Condition(torch.rand(batch, tb, 1, generator=g), torch.ones(batch, tb, dtype=torch.bool), beat_rate),
    }


def item(conditions, i):
    return {k: Condition(c.tensor[i : i + 1], c.mask[i : i + 1], c.frame_rate) for k, c in conditions.items()}


def ideal_denoiser(model: LatentDiT, x0: torch.Tensor):
    """``_denoise`` replacement: the exact model output when the data are always ``x0 [B, D, T]``."""
    cfg = model.config
    alphas_cumprod = DDPMScheduler(
        num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule
    ).alphas_cumprod

    def denoise(sample, timestep, prepared, frame_mask=None):
        x = x0.repeat(sample.shape[0] // x0.shape[0], 1, 1)  # CFG doubles the batch
        if cfg.prediction_type == "flow":
            sigma = (timestep / cfg.num_train_timesteps)[:, None, None]
            out = (sample - x) / sigma  # x_t = (1 - s) x0 + s noise, target noise - x0
        else:
            a_bar = alphas_cumprod[timestep.round().long()][:, None, None]
            alpha, sigma = a_bar.sqrt(), (1 - a_bar).sqrt()
            eps = (sample - alpha * x) / sigma
            out = eps if cfg.prediction_type == "epsilon" else alpha * eps - sigma * x
        return out, torch.zeros(sample.shape[0], sample.shape[-1], cfg.hidden_size)

    return denoise


# ---------------------------------------------------------------------------------- the network


@pytest.mark.parametrize(
    "video_fuse,beat_fuse",
    [("cross", "sum"), ("sum", "cross"), ("prepend", "prepend"), ("cross", "cross"), ("cross", "adaln"),
     ("prepend", "adaln")],
)
def test_forward_shapes_and_conditioning(video_fuse, beat_fuse):
    model = dummy_ldm_generator(video_fuse=video_fuse, beat_fuse=beat_fuse)
    x, t = randn(2, D, 60), torch.tensor([10, 700])
    conds = make_conditions()
    out = model(x, t, conds)
    assert out.shape == (2, D, 60) and torch.isfinite(out).all()
    # each condition changes the output; a missing condition is the dropped (null) one
    other_video = dict(conds, video=make_conditions(seed=1)[VIDEO])
    other_beat = dict(conds, beat=make_conditions(seed=1)[BEAT])
    assert (model(x, t, other_video) - out).abs().max() > 1e-4
    assert (model(x, t, other_beat) - out).abs().max() > 1e-4
    torch.testing.assert_close(model(x, t, {}), model(x, t, model.null_conditions(conds)), atol=1e-6, rtol=0)
    # scalar timestep == the same timestep per item
    torch.testing.assert_close(model(x, torch.tensor(10), conds), model(x, torch.tensor([10, 10]), conds))


def test_video_tokens_are_cut_to_the_window():
    """A window of frames 50..100 sees only video tokens of its own time span, at window positions."""
    model = dummy_ldm_generator()
    conds = make_conditions(batch=1, seconds=2.0)  # 16 video frames at 8 Hz = 6.25 latent frames each
    whole = model.fuse_conditions(conds, 100)
    late = model.fuse_conditions(conds, 50, start_frame=50)
    assert whole.cross.shape[1] == 16
    times = torch.arange(16) * 6.25
    assert late.cross.shape[1] == int(((times > 50 - 6.25) & (times < 100)).sum())
    # the beat ("sum") embedding of the late window equals the whole clip's frames 50..100
    torch.testing.assert_close(late.frame_add, whole.frame_add[:, 50:])


def test_adaln_beat_modulates_each_frame_and_starts_silent():
    """An "adaln" beat acts frame by frame (a beat late in the clip leaves the early frames' output
    nearly alone: only attention carries it there), is cut to the window like a "sum" one, and a
    fresh model's pathway outputs zero, so adding it to a trained model changes nothing at first."""
    model = dummy_ldm_generator(beat_fuse="adaln")
    x, t = randn(1, D, 100), torch.tensor([300])
    conds = make_conditions(batch=1, seconds=2.0)
    beat = conds[BEAT]
    late = dict(conds, beat=Condition(tensor=beat.tensor.clone(), mask=beat.mask, frame_rate=beat.frame_rate))
    late[BEAT].tensor[:, 40:] += 1.0  # frames of 1.6 s on (latent frame 80 on)
    diff = (model(x, t, late) - model(x, t, conds)).abs().amax(dim=1)[0]
    assert diff[76:].mean() > 5 * diff[:60].mean()
    whole, tail = model.fuse_conditions(conds, 100), model.fuse_conditions(conds, 50, start_frame=50)
    assert whole.frame_add is None and whole.frame_modulation.shape == (1, 100, 32)
    # frames far from the window edge see the same context (9-frame convolution)
    torch.testing.assert_close(tail.frame_modulation[:, 5:], whole.frame_modulation[:, 55:])
    fresh = LatentDiT(**dict(model.config, beat_fuse="adaln"))
    assert fresh.fuse_conditions(conds, 100).frame_modulation.abs().max() == 0


@pytest.mark.parametrize("beat_fuse", ["sum", "adaln"])
def test_pace_enters_the_beats_way_and_starts_silent(beat_fuse):
    """``pace_seconds``: the beat condition's local pace joins the beat's per-frame pathway through a
    zero-initialised projection: a trained model computes the same output once it is added, then
    a frame sees whether the video around it is busy."""
    model = dummy_ldm_generator(beat_fuse=beat_fuse, pace_seconds=1.0)
    assert model.pace_proj.weight.abs().max() == 0
    plain = dummy_ldm_generator(beat_fuse=beat_fuse)
    model.load_state_dict(plain.state_dict(), strict=False)
    x, t = randn(1, D, 100), torch.tensor([300])
    conds = make_conditions(batch=1, seconds=2.0)
    torch.testing.assert_close(model(x, t, conds), plain(x, t, conds), atol=0, rtol=0)
    torch.nn.init.normal_(model.pace_proj.weight)
    fused = model.fuse_conditions(conds, 100)
    pathway = fused.frame_add if beat_fuse == "sum" else fused.frame_modulation
    reference = plain.fuse_conditions(conds, 100)
    assert (pathway - (reference.frame_add if beat_fuse == "sum" else reference.frame_modulation)).abs().max() > 1e-3
    assert not torch.allclose(model(x, t, conds), plain(x, t, conds), atol=1e-4)
    null = {name: c.null() for name, c in conds.items()}
    torch.testing.assert_close(model(x, t, null), plain(x, t, null), atol=0, rtol=0)  # no beat, no pace
    # a given pace replaces the video's; it needs a frame rate, and a model without the pace takes none
    other = Condition(randn(1, 40, 2), torch.ones(1, 40, dtype=torch.bool), 20.0)
    assert not torch.allclose(model(x, t, {**conds, "pace": other}), model(x, t, conds), atol=1e-4)
    with pytest.raises(InputError, match="frame_rate"):
        model(x, t, {**conds, "pace": Condition(other.tensor, other.mask)})
    with pytest.raises(InputError, match="unknown condition"):
        plain(x, t, {**conds, "pace": other})


def test_beat_dropout_drops_the_beat_alone():
    """beat_dropout 0.99 trains on the video without its beat (the beat guidance's middle branch)."""
    model = dummy_ldm_generator(cond_dropout=0.0, beat_dropout=0.99, align_features="denoiser").train()
    latents, conds = randn(2, D, 30), make_conditions()
    no_beat = dict(conds, beat=conds[BEAT].null())
    dropped = model.forward_train({"latents": latents, "conditions": conds, "generator": gen(5)})
    reference = model.forward_train({"latents": latents, "conditions": no_beat, "generator": gen(5)})
    torch.testing.assert_close(dropped.losses["diffusion"], reference.losses["diffusion"])
    kept = model.eval().forward_train({"latents": latents, "conditions": conds, "generator": gen(5)})
    assert (kept.losses["diffusion"] - reference.losses["diffusion"]).abs() > 1e-6


def test_forward_train_outputs_and_gradients():
    model = dummy_ldm_generator().train()
    batch = {"latents": randn(2, D, 40), "conditions": make_conditions(), "generator": gen(3)}
    out = model.forward_train(batch)
    assert set(out.losses) == {"diffusion"} and out.losses["diffusion"].dim() == 0
    assert out.music_embedding.shape == (2, 32) and out.onset_logits.shape == (2, 40)
    again = model.forward_train(dict(batch, generator=gen(3)))
    torch.testing.assert_close(out.losses["diffusion"], again.losses["diffusion"])
    (out.losses["diffusion"] + out.music_embedding.sum() + out.onset_logits.sum()).backward()
    names = ["proj_in.weight", "blocks.0.self_attn.q_proj.weight", "blocks.1.cross_attn.k_proj.weight"]
    names += ["cond_proj.video.weight", "cond_proj.beat.weight", "beat_head.1.weight", "proj_out.weight"]
    for name in names:
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


@pytest.mark.parametrize("align_features", ["clean", "denoiser"])
def test_padding_frames_change_nothing(align_features):
    """With a frame mask, what sits in the padding cannot reach the loss or the alignment outputs."""
    model = dummy_ldm_generator(align_features=align_features)
    latents, mask = randn(2, D, 40), torch.ones(2, 40, dtype=torch.bool)
    mask[1, 25:] = False
    garbage = latents.clone()
    garbage[1, :, 25:] = 100.0
    conds = make_conditions()
    a = model.forward_train({"latents": latents, "conditions": conds, "mask": mask, "generator": gen(0)})
    b = model.forward_train({"latents": garbage, "conditions": conds, "mask": mask, "generator": gen(0)})
    torch.testing.assert_close(a.losses["diffusion"], b.losses["diffusion"])
    torch.testing.assert_close(a.music_embedding, b.music_embedding)
    torch.testing.assert_close(a.onset_logits[mask], b.onset_logits[mask])


def test_condition_dropout_reaches_the_null_branch():
    """cond_dropout drops all conditions of an item: with dropout 0.99 training equals null conditions."""
    model = dummy_ldm_generator(cond_dropout=0.99, align_features="denoiser").train()
    latents, conds = randn(2, D, 30), make_conditions()
    dropped = model.forward_train({"latents": latents, "conditions": conds, "generator": gen(5)})
    null = model.forward_train({"latents": latents, "conditions": model.null_conditions(conds), "generator": gen(5)})
    kept = model.eval().forward_train({"latents": latents, "conditions": conds, "generator": gen(5)})
    torch.testing.assert_close(dropped.losses["diffusion"], null.losses["diffusion"])
    assert (kept.losses["diffusion"] - null.losses["diffusion"]).abs() > 1e-6


# ---------------------------------------------------------------------------------- objective and samplers


@pytest.mark.parametrize("prediction_type", list(SAMPLERS))
def test_training_target_and_every_sampler_agree_with_the_ideal_denoiser(prediction_type):
    """The ideal denoiser scores zero training loss, and every sampler then returns the data exactly."""
    model = dummy_ldm_generator(prediction_type=prediction_type)
    x0 = randn(2, D, 30, seed=7)
    model._denoise = ideal_denoiser(model, x0)
    out = model.forward_train({"latents": x0, "conditions": make_conditions(), "generator": gen(0)})
    assert out.losses["diffusion"] < 1e-6
    for name in SAMPLERS[prediction_type]:
        scheduler = model.make_scheduler(name)
        latents = model.generate(make_conditions(), 30, scheduler=scheduler, num_inference_steps=8, generator=gen(1))
        torch.testing.assert_close(latents, x0, atol=2e-3, rtol=0, msg=f"{prediction_type} / {name}")


def test_make_scheduler_names_and_mismatch():
    v = dummy_ldm_generator()
    for name in SAMPLERS["v_prediction"]:
        assert v.make_scheduler(name).config.prediction_type == "v_prediction"
    flow = dummy_ldm_generator(prediction_type="flow", flow_shift=3.0)
    assert isinstance(flow.make_scheduler("euler"), FlowMatchEulerDiscreteScheduler)
    assert flow.make_scheduler("euler").config.shift == 3.0
    assert flow.make_scheduler("dpmsolver++").config.prediction_type == "flow_prediction"
    with pytest.raises(InputError, match="ddim"):
        flow.make_scheduler("ddim")
    with pytest.raises(InputError, match="valid"):
        v.make_scheduler("heun")
    eps_sched = dummy_ldm_generator(prediction_type="epsilon").make_scheduler("ddim")
    with pytest.raises(InputError, match="epsilon"):
        v.generate(make_conditions(), 10, scheduler=eps_sched, num_inference_steps=2)
    with pytest.raises(InputError, match="flow"):
        v.generate(make_conditions(), 10, scheduler=flow.make_scheduler("euler"), num_inference_steps=2)


# ---------------------------------------------------------------------------------- guidance and seeds


def test_cfg_scale_one_is_the_conditional_branch():
    model = dummy_ldm_generator()
    x, t, conds = randn(2, D, 30), torch.tensor(400), make_conditions()
    cond = model(x, t, conds)
    uncond = model(x, t, model.null_conditions(conds))
    assert (cond - uncond).abs().max() > 1e-4
    torch.testing.assert_close(model.guided_output(x, t, conds, guidance_scale=1.0), cond, atol=0, rtol=0)
    torch.testing.assert_close(model.guided_output(x, t, conds, guidance_scale=3.0), uncond + 3.0 * (cond - uncond))
    torch.testing.assert_close(model.guided_output(x, t, conds, guidance_scale=0.0), uncond)


def test_beat_guidance_is_a_third_branch_without_the_beat():
    """null + g (no_beat - null) + g_beat (cond - no_beat): equal to plain CFG when g_beat = g, to the
    conditional branch when both are 1, and off without a beat condition."""
    model = dummy_ldm_generator()
    conds = make_conditions(batch=1)

    def sample(conditions=conds, **kwargs):
        return model.generate(conditions, 30, num_inference_steps=3, generator=gen(0), **kwargs)

    plain = sample(guidance_scale=3.0)
    torch.testing.assert_close(sample(guidance_scale=3.0, beat_guidance_scale=3.0), plain, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(sample(guidance_scale=1.0, beat_guidance_scale=1.0), sample(guidance_scale=1.0),
                               atol=1e-5, rtol=1e-4)
    louder = sample(guidance_scale=3.0, beat_guidance_scale=12.0)
    assert (louder - plain).abs().max() > 1e-3
    video_only = {VIDEO: conds[VIDEO]}
    torch.testing.assert_close(sample(video_only, guidance_scale=3.0, beat_guidance_scale=12.0),
                               sample(video_only, guidance_scale=3.0), atol=0, rtol=0)
    # one model call, as a hand-written loop makes it: the same combination of the three branches
    x, t = randn(1, D, 30), torch.tensor(400)
    cond, no_beat, null = (model(x, t, c) for c in (conds, video_only, model.null_conditions(conds)))
    torch.testing.assert_close(model.guided_output(x, t, conds, 3.0, beat_guidance_scale=12.0),
                               null + 3.0 * (no_beat - null) + 12.0 * (cond - no_beat), atol=1e-5, rtol=1e-4)
    # the config's value is the default, the argument overrides it
    model.register_to_config(beat_guidance_scale=12.0)
    torch.testing.assert_close(sample(guidance_scale=3.0), louder, atol=0, rtol=0)
    torch.testing.assert_close(model.guided_output(x, t, conds, 3.0), null + 3.0 * (no_beat - null) + 12.0 * (cond - no_beat),
                               atol=1e-5, rtol=1e-4)
    for bad in (-1.0, float("nan"), True):
        with pytest.raises(InputError, match="beat_guidance_scale"):
            sample(guidance_scale=3.0, beat_guidance_scale=bad)
    with pytest.raises(ConfigError, match="beat_guidance_scale"):
        dummy_ldm_generator(beat_guidance_scale=-2.0)


@pytest.mark.parametrize("prediction_type", ["v_prediction", "flow"])
def test_a_hand_written_diffusers_loop_equals_generate(prediction_type):
    """What a pipeline that runs the loop itself does: scheduler visible, one guided call per step."""
    from diffusers.utils.torch_utils import randn_tensor

    model = dummy_ldm_generator(prediction_type=prediction_type)
    conds, scheduler = make_conditions(), model.make_scheduler("dpmsolver++")
    expected = model.generate(
        conds, 30, scheduler=scheduler, num_inference_steps=5, guidance_scale=2.0, generator=gen(0)
    )
    scheduler.set_timesteps(5)
    latents = randn_tensor((2, D, 30), generator=gen(0)) * scheduler.init_noise_sigma
    with torch.no_grad():
        for i, t in enumerate(scheduler.timesteps):
            model_input = scheduler.scale_model_input(latents, t)
            output = model.guided_output(model_input, model.model_timestep(scheduler, i), conds, guidance_scale=2.0)
            latents = scheduler.step(output, t, latents).prev_sample
    torch.testing.assert_close(latents, expected)


def test_cross_attention_context_is_projected_once_per_window(monkeypatch):
    """The context's keys and values are the same at every denoising step: generate projects them once
    per window and block, and gets what projecting them at every step (guided_output) gives."""
    from vmas_diffusion.modules.transformer import Attention

    model = dummy_ldm_generator(max_duration=0.5, window_overlap=0.1)  # 60 frames: three windows
    conds, scheduler = make_conditions(), model.make_scheduler("dpmsolver++")
    calls = []
    project_kv = Attention.project_kv

    def counted(self, context):
        calls.append(self)
        return project_kv(self, context)

    monkeypatch.setattr(Attention, "project_kv", counted)
    cross = [block.cross_attn for block in model.blocks]
    cached = model.generate(conds, 60, scheduler=scheduler, num_inference_steps=4, guidance_scale=2.0, generator=gen(0))
    windows = len(model.plan_windows(60))
    assert windows == 3 and sum(c in cross for c in calls) == windows * len(cross)
    calls.clear()
    uncached = model.__class__._denoise

    def every_step(self, sample, timestep, prepared, frame_mask=None):
        return uncached(self, sample, timestep, replace(prepared, cross_kv=None), frame_mask)

    monkeypatch.setattr(model.__class__, "_denoise", every_step)
    again = model.generate(conds, 60, scheduler=scheduler, num_inference_steps=4, guidance_scale=2.0, generator=gen(0))
    assert sum(c in cross for c in calls) == windows * len(cross) * (1 + 4)  # the unused cache, then every step
    torch.testing.assert_close(again, cached, rtol=0, atol=0)


@pytest.mark.parametrize("sampler", ["dpmsolver++", "ddpm"])
def test_generation_is_seeded_and_a_batch_equals_single_runs(sampler):
    """Across three windows (in-painting noise included) and a stochastic sampler (ddpm)."""
    model = dummy_ldm_generator(max_duration=0.5, window_overlap=0.1)
    conds = make_conditions(seconds=1.2)
    kwargs = dict(num_inference_steps=4, guidance_scale=2.5)
    batch = model.generate(conds, 60, scheduler=model.make_scheduler(sampler), generator=[gen(1), gen(2)], **kwargs)
    again = model.generate(conds, 60, scheduler=model.make_scheduler(sampler), generator=[gen(1), gen(2)], **kwargs)
    torch.testing.assert_close(batch, again, atol=0, rtol=0)
    for i, seed in enumerate((1, 2)):
        single = model.generate(
            item(conds, i), 60, scheduler=model.make_scheduler(sampler), generator=gen(seed), **kwargs
        )
        torch.testing.assert_close(batch[i : i + 1], single, atol=1e-5, rtol=1e-5)
    assert (batch[0] - batch[1]).abs().max() > 1e-2


def test_progress_bar_factory_is_used():
    calls = []

    class Bar:
        def __init__(self, total):
            calls.append(total)
            self.n = 0

        def update(self, n=1):
            self.n += n

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    bars = []
    model = dummy_ldm_generator(max_duration=0.5, window_overlap=0.1)
    model.generate(
        make_conditions(), 60, num_inference_steps=3, progress_bar=lambda total: bars.append(Bar(total)) or bars[-1]
    )
    assert calls == [9] and bars[0].n == 9  # 3 windows x 3 steps


# ---------------------------------------------------------------------------------- windows


def test_plan_windows_known_answers():
    model = dummy_ldm_generator(max_duration=0.5, window_overlap=0.1)  # 25-frame windows, 5-frame overlap
    assert model.plan_windows(20) == [(0, 20, 0)]
    assert model.plan_windows(25) == [(0, 25, 0)]
    assert model.plan_windows(45) == [(0, 25, 0), (20, 25, 5)]
    assert model.plan_windows(60) == [(0, 25, 0), (20, 25, 5), (35, 25, 10)]
    for n in range(26, 140):
        plan = model.plan_windows(n)
        end = 0
        for start, length, known in plan:
            assert length == 25 and known == end - start and (start == 0 or known >= 5)
            end = start + length
        assert end == n


def test_windowed_generation_keeps_the_overlap():
    """Later windows in-paint their overlap: the long run's first window is the short run, unchanged."""
    model = dummy_ldm_generator(max_duration=0.5, window_overlap=0.1)
    conds = make_conditions(seconds=1.2)
    long = model.generate(conds, 60, num_inference_steps=4, generator=gen(0))
    first = model.generate(conds, 25, num_inference_steps=4, generator=gen(0))
    torch.testing.assert_close(long[..., :25], first, atol=1e-6, rtol=0)
    assert torch.isfinite(long).all() and long[..., 25:].abs().mean() > 0.1  # the rest was generated


@pytest.mark.parametrize(
    "prediction_type,sampler", [("v_prediction", "ddim"), ("epsilon", "dpmsolver++"), ("flow", "euler")]
)
def test_inpainting_carries_content_across_windows(prediction_type, sampler):
    """Data that are constant in time, and the exact denoiser for them (posterior mean of the
    constant): one window comes out constant; with in-painting the following windows continue the
    constant they were handed, so the long sequence varies far less in time than independent windows do."""
    model = dummy_ldm_generator(max_duration=0.5, window_overlap=0.1, prediction_type=prediction_type)
    cfg = model.config
    alphas_cumprod = DDPMScheduler(
        num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule
    ).alphas_cumprod

    def constant_denoiser(sample, timestep, prepared, frame_mask=None):
        if prediction_type == "flow":
            sigma = (timestep / cfg.num_train_timesteps)[:, None, None]
            alpha = 1 - sigma
        else:
            a_bar = alphas_cumprod[timestep.round().long()][:, None, None]
            alpha, sigma = a_bar.sqrt(), (1 - a_bar).sqrt()
        # posterior mean of c ~ N(0, 1) per channel given T frames alpha * c + sigma * noise
        c = alpha * sample.sum(-1, keepdim=True) / (alpha**2 * sample.shape[-1] + sigma**2)
        x = c.expand_as(sample)
        if prediction_type == "flow":
            return (sample - x) / sigma, None
        eps = (sample - alpha * x) / sigma
        return (eps if prediction_type == "epsilon" else alpha * eps - sigma * x), None

    model._denoise = constant_denoiser
    scheduler = model.make_scheduler(sampler)
    one = model.generate({}, 25, scheduler=scheduler, num_inference_steps=10, generator=[gen(i) for i in range(4)])
    assert one.std(-1).max() < 1e-3  # a single window is constant
    spread = (
        torch.stack(
            [
                model.generate({}, 25, scheduler=scheduler, num_inference_steps=10, generator=gen(10 + i))[0, :, 0]
                for i in range(8)
            ]
        )
        .std(0)
        .mean()
    )
    long = model.generate({}, 100, scheduler=scheduler, num_inference_steps=10, generator=[gen(i) for i in range(4)])
    torch.testing.assert_close(long[..., :25], one)
    # 4 independent windows would vary in time about as much as the constants spread (~0.87 x spread)
    assert long.std(-1).mean() < 0.65 * spread


# ---------------------------------------------------------------------------------- save / load / EMA / registry


def test_save_load_round_trip(tmp_path):
    model = dummy_ldm_generator(prediction_type="flow", video_fuse="prepend", flow_shift=2.0)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    loaded = LatentDiT.from_pretrained(tmp_path).eval()
    public = lambda config: {k: v for k, v in config.items() if not k.startswith("_")}  # noqa: E731
    assert public(loaded.config) == public(model.config)
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        torch.testing.assert_close(a, b, atol=0, rtol=0, msg=name)
    conds = make_conditions()
    x = randn(2, D, 30)
    torch.testing.assert_close(
        loaded(x, torch.tensor(300.0), conds), model(x, torch.tensor(300.0), conds), atol=0, rtol=0
    )
    a = model.generate(conds, 30, scheduler=model.make_scheduler("euler"), num_inference_steps=3, generator=gen(0))
    b = loaded.generate(conds, 30, scheduler=loaded.make_scheduler("euler"), num_inference_steps=3, generator=gen(0))
    torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_ema_update_save_and_load(tmp_path):
    from diffusers.training_utils import EMAModel

    model = dummy_ldm_generator().train()
    ema = model.create_ema(decay=0.5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    expected = [p.detach().clone() for p in model.parameters()]
    for step in range(1, 4):
        loss = model.forward_train(
            {"latents": randn(2, D, 20, seed=step), "conditions": make_conditions(), "generator": gen(step)}
        )
        optimizer.zero_grad()
        loss.losses["diffusion"].backward()
        optimizer.step()
        ema.step(model.parameters())
        decay = 0.0 if step == 1 else min(0.5, step / (9 + step))  # EMAModel's warm-up rule
        expected = [decay * e + (1 - decay) * p.detach() for e, p in zip(expected, model.parameters())]
    for e, s in zip(expected, ema.shadow_params):
        torch.testing.assert_close(s, e)
    ema.save_pretrained(tmp_path / "ema")
    loaded = LatentDiT.from_pretrained(tmp_path / "ema")  # a normal model folder
    for e, p in zip(expected, loaded.parameters()):
        torch.testing.assert_close(p, e)
    assert any((p - e).abs().max() > 1e-4 for p, e in zip(model.parameters(), expected))
    resumed = EMAModel.from_pretrained(tmp_path / "ema", model_cls=LatentDiT)
    assert resumed.optimization_step == 3 and resumed.decay == 0.5


def test_registry_builds_ldm():
    model = build_generator(
        {
            "type": "ldm",
            "config": {"latent_dim": 8, "hidden_size": 16, "num_layers": 1, "num_heads": 2, "video_dim": 16},
        }
    )
    assert isinstance(model, LatentDiT) and model.backend == "ldm"
    with pytest.raises(ConfigError, match="hidden_sise"):
        build_generator({"type": "ldm", "config": {"hidden_sise": 16}})


# ---------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "config,match",
    [
        ({"prediction_type": "x0"}, "prediction_type"),
        ({"video_fuse": "concat"}, "video_fuse"),
        ({"hidden_size": 30, "num_heads": 4}, "divisible"),
        ({"window_overlap": 4.0}, "window_overlap"),
        ({"cond_dropout": 1.0}, "cond_dropout"),
        ({"beat_dropout": -0.1}, "beat_dropout"),
        ({"beat_fuse": "film"}, "beat_fuse"),
        ({"pace_seconds": -1.0}, "pace_seconds"),
        ({"pace_seconds": 2.0, "beat_fuse": "cross"}, "pace_seconds"),
        ({"pace_source": "audio"}, "pace_source"),
        ({"pace_map": [[[0.0, 1.0], [0.0]], [[0.0], [0.0]]]}, "pace_map"),
        ({"beta_schedule": "cosine"}, "beta_schedule"),
    ],
)
def test_bad_config_raises_config_error(config, match):
    with pytest.raises(ConfigError, match=match):
        dummy_ldm_generator(**config)


def test_bad_inputs_raise_input_error():
    model = dummy_ldm_generator()
    conds, x, t = make_conditions(), randn(2, D, 30), torch.tensor(5)
    bad_calls = {
        "sample must be": lambda: model(randn(2, D + 1, 30), t, conds),
        "no frames": lambda: model(randn(2, D, 0), t, conds),
        "timestep": lambda: model(x, torch.tensor([1, 2, 3]), conds),
        "unknown condition": lambda: model(x, t, dict(conds, text=conds[VIDEO])),
        "has width 3": lambda: model(x, t, dict(conds, video=Condition(torch.zeros(2, 4, 3), torch.ones(2, 4), 8.0))),
        "batch sizes": lambda: model(randn(3, D, 30), t, conds),
        "needs a frame_rate": lambda: model(x, t, dict(conds, beat=Condition(torch.zeros(2, 4, 1), torch.ones(2, 4)))),
        "must be a Condition": lambda: model(x, t, {VIDEO: torch.zeros(2, 4, 16)}),
        "frame_mask": lambda: model(x, t, conds, frame_mask=torch.ones(2, 29, dtype=torch.bool)),
        "num_frames": lambda: model.generate(conds, 0),
        "num_inference_steps": lambda: model.generate(conds, 10, num_inference_steps=0),
        "guidance_scale": lambda: model.generate(conds, 10, guidance_scale=-1.0),
        "generators": lambda: model.generate(conds, 10, generator=[gen(0)]),
        "diffusers scheduler": lambda: model.generate(conds, 10, scheduler=object()),
        "needs 'latents'": lambda: model.forward_train({"codes": x, "conditions": conds}),
        "mask": lambda: model.forward_train(
            {"latents": x, "conditions": conds, "mask": torch.ones(2, 31, dtype=torch.bool)}
        ),
    }
    for match, call in bad_calls.items():
        with pytest.raises(InputError, match=match):
            call()


# ---------------------------------------------------------------------------------- overfit one real clip


def spectrogram(wav: torch.Tensor) -> torch.Tensor:
    """Log-magnitude STFT ``[B, F, N]`` of ``wav [B, 1, S]`` (floor 60 dB under the peak)."""
    mag = torch.stft(wav[:, 0], 512, 128, window=torch.hann_window(512), return_complex=True).abs()
    return torch.log(mag + 1e-3 * mag.max())


def test_overfits_one_real_music_clip(media):
    """A tiny model learns one 2-second clip of real music (Big Buck Bunny's soundtrack,
    through the tiny codec): the loss falls >= 4x and every sampler, unretrained, returns
    latents 10x closer to the clip's than random latents are, and decoded audio whose
    spectrogram is 2x closer to the decoded clip's than random latents' decoding is."""
    from vmas_diffusion.media import load_audio

    start = time.perf_counter()
    torch.manual_seed(0)
    codec = dummy_codec().freeze()
    wav = torch.from_numpy(load_audio(media("bigbuckbunny.mp4"), codec.sample_rate, start=3.0, end=5.0))[None]
    wav = wav * (0.5 / wav.abs().max())  # the trailer's soundtrack is quiet; peak-normalise
    codec.fit_latent_stats([wav])
    x0 = codec.encode(wav)  # [1, 16, 100], normalised
    conds = make_conditions(batch=1, seconds=2.0, seed=3)
    batch_size, steps = 8, 400
    batch_conds = {k: c.repeat_interleave(batch_size) for k, c in conds.items()}

    model = dummy_ldm_generator(align_features="denoiser").train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-2, total_steps=steps, pct_start=0.1)
    noise_gen, losses = gen(1), []
    for _ in range(steps):
        out = model.forward_train(
            {"latents": x0.expand(batch_size, -1, -1), "conditions": batch_conds, "generator": noise_gen}
        )
        optimizer.zero_grad()
        out.losses["diffusion"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(out.losses["diffusion"].item())
    model.eval()
    first, last = sum(losses[:10]) / 10, sum(losses[-20:]) / 20
    assert first / last >= 4.0, (first, last)

    with torch.no_grad():
        reference = spectrogram(codec.decode(x0))
        rand = randn(*x0.shape, seed=5)
        rand_latent = (rand - x0).pow(2).mean()
        rand_spec = (spectrogram(codec.decode(rand)) - reference).abs().mean()
        for name in SAMPLERS["v_prediction"][1:]:  # ddim, dpmsolver++, euler
            latents = model.generate(
                conds,
                x0.shape[-1],
                scheduler=model.make_scheduler(name),
                num_inference_steps=25,
                guidance_scale=3.0,
                generator=gen(0),
            )
            latent_err = (latents - x0).pow(2).mean()
            spec_err = (spectrogram(codec.decode(latents)) - reference).abs().mean()
            assert latent_err < 0.1 * rand_latent, (name, float(latent_err), float(rand_latent))
            assert spec_err < 0.5 * rand_spec, (name, float(spec_err), float(rand_spec))
    print(f"overfit: loss {first:.3f} -> {last:.3f}, {time.perf_counter() - start:.1f} s")
