"""What a diffusers user expects of a pipeline, on both backends (the bundled vmas-tiny AR and LDM):
``callback_on_step_end`` with ``callback_on_step_end_tensor_inputs``, ``latents=``, the progress bar
config, ``enable_model_cpu_offload``, ``torch_dtype=`` and the model card ``save_pretrained`` writes."""

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers.utils.torch_utils import randn_tensor

from vmas_diffusion import VideoToMusicPipeline
from vmas_diffusion.conditions import BEAT, VIDEO
from vmas_diffusion.defaults import DEMO_VIDEO
from vmas_diffusion.errors import ConfigError, InputError
from vmas_diffusion.model_card import read_model_card, render_model_card

SECONDS = 1.0  # one window of either bundled model
STEPS = 4


@pytest.fixture(scope="module", params=["ar", "ldm"])
def pipe(request):
    pipe = VideoToMusicPipeline.from_pretrained(f"vmas-tiny-{request.param}")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(pipe, seed=0, **kwargs):
    kwargs.setdefault("duration", SECONDS)
    kwargs.setdefault("generator", torch.Generator().manual_seed(seed))
    return pipe(str(DEMO_VIDEO), num_inference_steps=STEPS, guidance_scale=6.0, **kwargs).audios


# ------------------------------------------------------------------ callback_on_step_end


def test_callback_sees_every_step_and_only_the_asked_tensors(pipe):
    (name,) = pipe._callback_tensor_inputs
    seen = []

    def on_step_end(p, step, timestep, callback_kwargs):
        assert p is pipe
        seen.append((step, sorted(callback_kwargs)))
        return callback_kwargs

    audio = run(pipe, callback_on_step_end=on_step_end)
    assert [step for step, _ in seen] == list(range(pipe.num_timesteps))
    expected = STEPS if pipe.generator.needs_scheduler else pipe.generator._sampling_steps(int(SECONDS * 50), 0)
    assert pipe.num_timesteps == expected
    assert all(names == [name] for _, names in seen)
    np.testing.assert_array_equal(audio, run(pipe))  # a callback that changes nothing changes nothing

    seen.clear()
    run(pipe, callback_on_step_end=on_step_end, callback_on_step_end_tensor_inputs=[])
    assert len(seen) == pipe.num_timesteps and all(names == [] for _, names in seen)


def test_callback_counts_steps_over_windows():
    pipe = VideoToMusicPipeline.from_pretrained("vmas-tiny-ldm")
    pipe.set_progress_bar_config(disable=True)
    windows = len(pipe.generator.plan_windows(int(6 * pipe.codec.frame_rate)))
    assert windows > 1
    steps = []
    run(pipe, duration=6.0, callback_on_step_end=lambda p, step, t, kw: steps.append(step))
    assert steps == list(range(windows * STEPS)) and pipe.num_timesteps == windows * STEPS


def test_ldm_callback_replaces_the_latents():
    pipe = VideoToMusicPipeline.from_pretrained("vmas-tiny-ldm")
    pipe.set_progress_bar_config(disable=True)

    def silence_at_the_end(p, step, timestep, kw):
        return {"latents": torch.zeros_like(kw["latents"])} if step == p.num_timesteps - 1 else kw

    audio = run(pipe, callback_on_step_end=silence_at_the_end)
    frames = int(np.ceil(SECONDS * pipe.codec.frame_rate))
    zeros = pipe.codec.decode(torch.zeros(1, pipe.codec.latent_dim, frames))[..., : audio.shape[-1]]
    np.testing.assert_allclose(audio, zeros.clamp(-1, 1).numpy(), atol=1e-6)
    assert not np.allclose(audio, run(pipe))


def test_ar_callback_replaces_the_tokens():
    pipe = VideoToMusicPipeline.from_pretrained("vmas-tiny-ar")
    pipe.set_progress_bar_config(disable=True)
    special = pipe.generator.special_id

    def force_zero(p, step, timestep, kw):  # the step just sampled becomes token 0 wherever one was sampled
        tokens = kw["tokens"].clone()
        column = tokens[:, :, timestep]
        tokens[:, :, timestep] = torch.where(column == special, column, torch.zeros_like(column))
        return {"tokens": tokens}

    audio = run(pipe, callback_on_step_end=force_zero)
    frames = int(np.ceil(SECONDS * pipe.codec.frame_rate))
    zeros = pipe.codec.decode_tokens(torch.zeros(1, pipe.codec.num_codebooks, frames, dtype=torch.long))
    np.testing.assert_allclose(audio, zeros[..., : audio.shape[-1]].clamp(-1, 1).numpy(), atol=1e-6)


def test_bad_callbacks_raise_project_errors(pipe):
    (name,) = pipe._callback_tensor_inputs
    other = "latents" if name == "tokens" else "tokens"
    with pytest.raises(InputError, match=f"\\['{other}'\\] are not tensors of the {pipe.backend} backend"):
        run(pipe, callback_on_step_end=lambda *a: {}, callback_on_step_end_tensor_inputs=[other])
    with pytest.raises(InputError, match="must be callable"):
        run(pipe, callback_on_step_end="progress")
    with pytest.raises(InputError, match="must return a dict"):
        run(pipe, callback_on_step_end=lambda p, s, t, kw: 1)
    with pytest.raises(InputError, match="must keep shape"):
        run(pipe, callback_on_step_end=lambda p, s, t, kw: {name: kw[name][..., :1]})
    with pytest.raises(InputError, match="may replace only"):
        run(pipe, callback_on_step_end=lambda p, s, t, kw: {"prompt_embeds": kw[name]})


def test_progress_bar_config_is_honoured(pipe, capsys):
    pipe.set_progress_bar_config(disable=False, desc="writing music")
    try:
        run(pipe)
    finally:
        pipe.set_progress_bar_config(disable=True)
    err = capsys.readouterr().err
    assert "writing music" in err and f"{pipe.num_timesteps}/{pipe.num_timesteps}" in err
    run(pipe)
    assert capsys.readouterr().err == ""


# ------------------------------------------------------------------ latents=


def test_ldm_latents_equal_the_noise_a_generator_draws():
    pipe = VideoToMusicPipeline.from_pretrained("vmas-tiny-ldm")
    pipe.set_progress_bar_config(disable=True)
    frames = int(np.ceil(SECONDS * pipe.codec.frame_rate))
    noise = randn_tensor((1, pipe.codec.latent_dim, frames), generator=torch.Generator().manual_seed(7))
    np.testing.assert_array_equal(run(pipe, latents=noise, generator=None), run(pipe, seed=7))

    # past one window the in-painting noise comes from the latents too: no generator needed
    long = randn_tensor((1, pipe.codec.latent_dim, 6 * int(pipe.codec.frame_rate)), generator=torch.Generator().manual_seed(1))
    a = run(pipe, duration=6.0, latents=long, generator=None)
    torch.manual_seed(123)
    np.testing.assert_array_equal(a, run(pipe, duration=6.0, latents=long.clone(), generator=None))
    assert not np.allclose(a, run(pipe, duration=6.0, latents=-long, generator=None))

    with pytest.raises(InputError, match=r"latents must be \[B, latent_dim, frames\] = \(1, 128, 50\).*got \(1, 128, 49\)"):
        run(pipe, latents=noise[..., :-1])
    with pytest.raises(InputError, match=r"= \(2, 128, 50\)"):
        run(pipe, latents=noise, num_waveforms_per_video=2)


def test_ar_refuses_latents():
    pipe = VideoToMusicPipeline.from_pretrained("vmas-tiny-ar")
    with pytest.raises(InputError, match="the ar backend samples without them"):
        run(pipe, latents=torch.zeros(1, 4, 50))


# ------------------------------------------------------------------ model CPU offload and dtypes


def test_model_cpu_offload_moves_each_component_when_used(pipe):
    """No accelerator here: the execution device is the CPU, so the audio must not change, and every
    component's offload hook must fire before it is used (sampling and decoding are not forward calls)."""
    expected = run(pipe)
    offloaded = VideoToMusicPipeline.from_pretrained(pipe.name_or_path)
    offloaded.set_progress_bar_config(disable=True)
    offloaded.enable_model_cpu_offload()
    assert offloaded._offload_device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    order = []
    for name in ("video_encoder", "generator", "codec"):
        hook = getattr(offloaded, name)._hf_hook
        original = hook.pre_forward

        def record(module, *args, _name=name, _original=original, **kwargs):
            order.append(_name)
            return _original(module, *args, **kwargs)

        hook.pre_forward = record
    np.testing.assert_array_equal(run(offloaded), expected)
    assert [name for i, name in enumerate(order) if i == 0 or order[i - 1] != name] == ["video_encoder", "generator", "codec"]
    assert offloaded.embed_video(str(DEMO_VIDEO)).shape == pipe.embed_video(str(DEMO_VIDEO)).shape


def test_torch_dtype_bfloat16_stays_close(pipe):
    """bf16 on the CPU: every component loads in it (or as a dict says) and the model's own output on the
    same inputs stays close to float32's: the LDM's denoiser prediction on the float32 run's final latents
    within 8% relative L2 at late, middle and early timesteps (measured 4.2%, 1.4%, 0.8%), the AR's next-token
    distributions on the float32 run's tokens almost all agree (measured 99.5% argmax, KL 2e-4). Sampled
    outputs are no fair measure: guidance 6 + beat guidance 12 extrapolates the LDM's difference (its final
    latents 9-11% apart), Griffin-Lim's phase and the AR's sampling amplify any difference."""
    low = VideoToMusicPipeline.from_pretrained(pipe.name_or_path, torch_dtype={"codec": torch.float32, "default": torch.bfloat16})
    low.set_progress_bar_config(disable=True)
    assert low.generator.dtype == low.video_encoder.dtype == torch.bfloat16 and low.codec.dtype == torch.float32
    whole = VideoToMusicPipeline.from_pretrained(pipe.name_or_path, torch_dtype=torch.bfloat16)
    whole.set_progress_bar_config(disable=True)
    assert {whole.generator.dtype, whole.codec.dtype, whole.video_encoder.dtype} == {torch.bfloat16}
    assert np.isfinite(run(whole)).all()

    last = {}
    run(pipe, callback_on_step_end=lambda _, s, t, kw: last.update(kw) or kw)
    (name,) = pipe._callback_tensor_inputs
    sample = last[name]
    conditions = []
    for p in (pipe, low):
        video, beat, _ = p.encode_video([p.prepare_video(str(DEMO_VIDEO), None)])
        conditions.append({VIDEO: video, BEAT: beat})
    if pipe.generator.needs_scheduler:
        for timestep in (100, 500, 900):
            high_out, low_out = (p.generator(sample.to(p.generator.dtype), timestep, c).float()
                                 for p, c in zip((pipe, low), conditions))
            assert ((low_out - high_out).norm() / high_out.norm()).item() < 0.08
    else:
        inputs = torch.cat([torch.full_like(sample[..., :1], pipe.generator.special_id), sample[..., :-1]], 2)
        logp = [p.generator(inputs, c).float().log_softmax(-1) for p, c in zip((pipe, low), conditions)]
        agree = (logp[0].argmax(-1) == logp[1].argmax(-1)).float().mean().item()
        kl = (logp[0].exp() * (logp[0] - logp[1])).sum(-1).mean().item()
        assert agree > 0.95 and kl < 0.01
    with pytest.raises(InputError, match="not both"):
        VideoToMusicPipeline.from_pretrained(pipe.name_or_path, torch_dtype=torch.float16, dtype=torch.float16)


# ------------------------------------------------------------------ model cards


def test_bundled_models_carry_their_cards(pipe):
    card = pipe.model_card
    assert card["license"] == "apache-2.0" and "game soundtracks" in card["training_data"]
    assert ("0.617" if pipe.backend == "ar" else "0.777") in card["alignment"]
    # the shipped README is what save_pretrained writes for these components and facts
    readme = (Path(pipe.name_or_path) / "README.md").read_text()
    assert readme == render_model_card(pipe, card)
    assert readme.startswith("---\nlibrary_name: vmas-diffusion\nlicense: apache-2.0\npipeline_tag: any-to-any\n")
    assert f"backend-{pipe.backend}" in readme and "## Measured alignment" in readme


def test_save_pretrained_writes_the_card_and_it_reloads(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "same")
    assert read_model_card(tmp_path / "same") == pipe.model_card  # a reloaded pipeline saves the same card
    facts = {"name": "my model", "training_data": "10 h of drums", "alignment": "BHS 0.5", "license": "mit",
             "datasets": ["me/drums"], "tags": ["drums"]}
    pipe.save_pretrained(tmp_path / "mine", model_card=facts)
    text = (tmp_path / "mine" / "README.md").read_text()
    assert "license: mit" in text and "- me/drums" in text and "- drums" in text and "10 h of drums" in text
    loaded = VideoToMusicPipeline.from_pretrained(tmp_path / "mine")
    assert loaded.model_card == facts
    with pytest.raises(InputError, match="unknown keys \\['licence'\\]"):
        pipe.save_pretrained(tmp_path / "bad", model_card={"licence": "mit"})
    built = VideoToMusicPipeline.from_recipe("recipes/tiny_ldm.yaml")
    built.save_pretrained(tmp_path / "new")
    assert "license: unknown" in (tmp_path / "new" / "README.md").read_text() and read_model_card(tmp_path / "new") == {}
    (tmp_path / "new" / "README.md").write_text("# someone else's notes\n")
    assert VideoToMusicPipeline.from_pretrained(tmp_path / "new").model_card is None


def test_a_backend_without_steps_refuses_a_callback(monkeypatch):
    pipe = VideoToMusicPipeline.from_pretrained("vmas-tiny-ar")
    monkeypatch.setattr(type(pipe.generator), "callback_tensor_inputs", ())
    with pytest.raises(ConfigError, match="no sampling steps"):
        run(pipe, callback_on_step_end=lambda *a: {})
