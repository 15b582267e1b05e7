"""VideoToMusicPipeline in the diffusers style: tiny components, both backends."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vmas_diffusion import VideoToMusicPipeline, VideoToMusicPipelineOutput
from vmas_diffusion.errors import CheckpointError, InputError, VideoDecodeError

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {"ar": ROOT / "recipes" / "tiny_ar.yaml", "ldm": ROOT / "recipes" / "tiny_ldm.yaml"}
BACKENDS = ["ar", "ldm"]
FPS = 10.0


def moving_square(num_frames: int = 24, size: int = 40, seed: int = 0) -> np.ndarray:
    """A real-looking synthetic clip: a bright square jumping on a textured background."""
    rng = np.random.default_rng(seed)
    frames = np.repeat(rng.integers(0, 60, (1, size, size, 3), dtype=np.uint8), num_frames, axis=0)
    for t in range(num_frames):
        x = (t * 7) % (size - 8)
        frames[t, 4:12, x : x + 8] = 255 if t % 5 else 120
    return frames


@pytest.fixture(scope="module", params=BACKENDS)
def pipe(request):
    torch.manual_seed(0)
    pipe = VideoToMusicPipeline.from_recipe(RECIPES[request.param])
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(pipe, video, seed=0, **kwargs):
    kwargs.setdefault("num_inference_steps", 2)
    return pipe(video=video, fps=FPS, generator=torch.Generator().manual_seed(seed), **kwargs)


def test_components_and_backend(pipe):
    assert pipe.backend in BACKENDS
    assert (pipe.scheduler is None) == (pipe.backend == "ar")
    assert set(pipe.components) >= {"video_encoder", "generator", "codec", "scheduler"}


def test_output_shape_range_and_sample_rate(pipe):
    out = run(pipe, moving_square())
    assert isinstance(out, VideoToMusicPipelineOutput)
    assert out.sample_rate == pipe.codec.sample_rate
    assert out.audios.dtype == np.float32
    duration = 24 / FPS
    assert out.audios.shape == (1, pipe.codec.channels, int(round(duration * out.sample_rate)))
    assert np.abs(out.audios).max() <= 1.0
    assert np.isfinite(out.audios).all()
    assert out.video_beats.ndim == 1
    # the visual analysis it conditioned on comes along: envelope at the encoder's rate, same beats
    fps = pipe.video_encoder.config.fps
    assert out.visual_beats.fps == fps and len(out.visual_beats.envelope) == int(np.ceil(duration * fps - 1e-6))
    np.testing.assert_array_equal(out.visual_beats.times, out.video_beats)


def test_duration_follows_video_and_argument(pipe):
    short = run(pipe, moving_square(12))
    assert short.audios.shape[-1] == int(round(1.2 * short.sample_rate))
    asked = run(pipe, moving_square(12), duration=0.5)
    assert asked.audios.shape[-1] == int(round(0.5 * asked.sample_rate))


def test_seeded_runs_are_reproducible_and_seed_matters(pipe):
    a = run(pipe, moving_square(), seed=1).audios
    b = run(pipe, moving_square(), seed=1).audios
    c = run(pipe, moving_square(), seed=2).audios
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_batch_of_two_equals_two_single_runs(pipe):
    videos = [moving_square(seed=0), moving_square(seed=1)]
    batch = pipe(
        video=videos, fps=FPS, num_inference_steps=2,
        generator=[torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)],
    ).audios
    singles = [run(pipe, v, seed=s).audios[0] for s, v in enumerate(videos)]
    np.testing.assert_allclose(batch[0], singles[0], atol=1e-4)
    np.testing.assert_allclose(batch[1], singles[1], atol=1e-4)


def test_num_waveforms_per_video_and_pt_output(pipe):
    out = run(pipe, moving_square(), num_waveforms_per_video=2, output_type="pt")
    assert isinstance(out.audios, torch.Tensor) and out.audios.shape[0] == 2
    assert not torch.allclose(out.audios[0], out.audios[1])


def test_return_tuple(pipe):
    audios, sample_rate, beats = run(pipe, moving_square(), return_dict=False)
    assert audios.shape[0] == 1 and sample_rate == pipe.codec.sample_rate and beats.ndim == 1


def test_video_embeds_skip_the_encoder(pipe):
    frames = moving_square()
    full = run(pipe, frames)
    prepared = pipe.prepare_video(frames, FPS)
    embeds = pipe.video_encoder(torch.from_numpy(prepared.frames)[None])
    skipped = run(pipe, frames, video_embeds=embeds)
    np.testing.assert_allclose(full.audios, skipped.audios, atol=1e-5)
    only = pipe(video_embeds=embeds, duration=1.0, num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    assert only.audios.shape[-1] == pipe.codec.sample_rate and only.video_beats.size == 0


def test_save_and_load_give_identical_audio(pipe, tmp_path):
    before = run(pipe, moving_square()).audios
    pipe.save_pretrained(tmp_path)
    assert not list(tmp_path.rglob("*.bin")) and list(tmp_path.rglob("*.safetensors"))
    loaded = VideoToMusicPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert loaded.backend == pipe.backend
    np.testing.assert_array_equal(before, run(loaded, moving_square()).audios)


def test_backend_swap_shares_encoder_and_codec(pipe):
    other = "ldm" if pipe.backend == "ar" else "ar"
    donor = VideoToMusicPipeline.from_recipe(RECIPES[other])
    swapped = pipe.with_generator(donor.generator)
    assert swapped.backend == other
    assert swapped.video_encoder is pipe.video_encoder and swapped.codec is pipe.codec
    swapped.set_progress_bar_config(disable=True)
    out = run(swapped, moving_square())
    assert out.audios.shape == run(pipe, moving_square()).audios.shape


def test_bad_inputs_raise_project_errors(pipe, tmp_path):
    with pytest.raises(InputError, match="fps"):
        pipe(video=moving_square())
    with pytest.raises(InputError, match="duration"):
        run(pipe, moving_square(), duration=-1.0)
    with pytest.raises(InputError, match="output_type"):
        run(pipe, moving_square(), output_type="wav")
    with pytest.raises(InputError, match=r"\(T, H, W, 3\)"):
        run(pipe, np.zeros((4, 8, 8), dtype=np.uint8))
    with pytest.raises(InputError, match="generators"):
        pipe(video=moving_square(), fps=FPS, generator=[torch.Generator()] * 3)
    with pytest.raises(VideoDecodeError):
        pipe(video=str(tmp_path / "missing.mp4"))
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    with pytest.raises(VideoDecodeError):
        pipe(video=str(corrupt))


def test_loading_a_foreign_folder_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="model_index.json"):
        VideoToMusicPipeline.from_pretrained(tmp_path)
    foreign = {"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"]}
    (tmp_path / "model_index.json").write_text(json.dumps(foreign))
    with pytest.raises(CheckpointError, match="StableDiffusionPipeline"):
        VideoToMusicPipeline.from_pretrained(tmp_path)
    # our pipeline class, but a component of the wrong kind or one that does not import
    encoder = ["vmas_diffusion.models.video_encoder", "TemporalVideoEncoder"]
    codec = ["vmas_diffusion.models.codecs.encodec_hf", "EncodecHFCodec"]
    for generator, match in ((["diffusers", "UNet2DConditionModel"], "not a MusicGenerator"),
                             (["no_such_module", "Generator"], "not importable")):
        index = {"_class_name": "VideoToMusicPipeline", "video_encoder": encoder, "generator": generator, "codec": codec}
        (tmp_path / "model_index.json").write_text(json.dumps(index))
        with pytest.raises(CheckpointError, match=match):
            VideoToMusicPipeline.from_pretrained(tmp_path)


def test_real_video_end_to_end(media):
    pipe = VideoToMusicPipeline.from_recipe(RECIPES["ar"])
    pipe.set_progress_bar_config(disable=True)
    out = pipe(video=str(media("bikes.mp4")), duration=2.0, generator=torch.Generator().manual_seed(0))
    assert out.audios.shape[-1] == 2 * out.sample_rate
    # bikes.mp4 has scene cuts near 1.2, 3.0, 5.5, 7.5 and 9.7 s: the beat condition must see some
    assert out.video_beats.size >= 3 and out.video_beats.max() <= 10.5


def test_contrastive_embeddings(pipe):
    video = pipe.embed_video(moving_square(), fps=FPS)
    assert video.shape == (pipe.contrastive_head.config.embed_dim,)
    assert torch.allclose(video.norm(), torch.tensor(1.0), atol=1e-5)
    t = np.arange(16000, dtype=np.float32) / 16000
    tone = 0.3 * np.sin(2 * np.pi * 440 * t)[None]
    noise = np.random.default_rng(0).uniform(-0.3, 0.3, (1, 16000)).astype(np.float32)
    a, b = pipe.embed_music(tone, 16000), pipe.embed_music(tone, 16000)
    torch.testing.assert_close(a, b)  # depends on the music only, deterministically
    assert torch.allclose(a.norm(), torch.tensor(1.0), atol=1e-5)
    assert not torch.allclose(a, pipe.embed_music(noise, 16000))
    resampled = pipe.embed_music(np.repeat(tone, 2, axis=0), 16000)  # stereo in, mono codec
    torch.testing.assert_close(a, resampled, atol=1e-5, rtol=1e-4)
    with pytest.raises(InputError, match="fps"):
        pipe.embed_video(moving_square())


def test_saved_pipeline_loads_in_a_fresh_process(tmp_path):
    """from_pretrained finds the project's component classes without the caller importing them."""
    import subprocess
    import sys

    VideoToMusicPipeline.from_recipe(RECIPES["ldm"]).save_pretrained(tmp_path)
    code = (
        "from vmas_diffusion import VideoToMusicPipeline as P; "
        f"p = P.from_pretrained({str(tmp_path)!r}); "
        "print(p.backend, type(p.contrastive_head).__name__, type(p.scheduler).__name__)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["ldm", "ContrastiveHead", "DPMSolverMultistepScheduler"]


def test_hub_id_offline_is_a_checkpoint_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="not-a/real-model"):
        VideoToMusicPipeline.from_pretrained("not-a/real-model")
