"""Evaluation: FAD, embedders, the eval set, the generation cache and the table."""

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from vmas_diffusion.errors import CheckpointError, ConfigError, InputError, VMASError
from vmas_diffusion.evaluation import (
    GaussianStats,
    GenerationCache,
    GenerationRecord,
    MelStatsEmbedder,
    PeakMemory,
    beat_offsets,
    build_embedder,
    fit_gaussian,
    frechet_audio_distance,
    frechet_distance,
    generation_key,
    load_eval_set,
    model_fingerprint,
    run_evaluation,
)
from vmas_diffusion.evaluation.dataset import EvalClip
from vmas_diffusion.evaluation.report import TIMING_KEYS
from vmas_diffusion.evaluation.vggish import N_MELS, vggish_mel_matrix, waveform_to_examples

SR = 16000


def synth_music(rng: np.random.Generator, seconds: float = 6.0, sr: int = SR) -> np.ndarray:
    """A harmonic tone with noisy percussive accents at a random tempo, ``(S,)`` float32."""
    t = np.arange(int(sr * seconds)) / sr
    f0 = rng.uniform(110, 440)
    tone = sum(0.3 / (k + 1) * np.sin(2 * np.pi * f0 * (k + 1) * t + rng.uniform(0, 2 * np.pi)) for k in range(4))
    period = 60.0 / rng.uniform(80, 140)
    accent = np.exp(-(t % period) / 0.05)
    x = tone * (0.5 + 0.5 * accent) + 0.3 * accent * rng.standard_normal(t.size)
    return (0.8 * x / np.abs(x).max()).astype(np.float32)


# ---------------------------------------------------------------------------- Fréchet distance


def test_frechet_distance_known_answer_diagonal():
    # For diagonal covariances FD = |mu_a - mu_b|^2 + sum (sqrt(s_a) - sqrt(s_b))^2.
    a = GaussianStats(mu=np.array([0.0, 1.0, 2.0]), sigma=np.diag([1.0, 4.0, 9.0]), count=10)
    b = GaussianStats(mu=np.array([1.0, 1.0, 0.0]), sigma=np.diag([4.0, 4.0, 1.0]), count=10)
    expected = (1 + 0 + 4) + ((1 - 2) ** 2 + 0 + (3 - 1) ** 2)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(b, a) == pytest.approx(expected, rel=1e-9)


def symmetric_frechet(a, b) -> float:
    """Reference: Tr((S_a S_b)^1/2) = Tr((S_a^1/2 S_b S_a^1/2)^1/2), through eigh only."""
    w, v = np.linalg.eigh(a.sigma)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = np.linalg.eigvalsh(root_a @ b.sigma @ root_a)
    return float(np.sum((a.mu - b.mu) ** 2) + np.trace(a.sigma) + np.trace(b.sigma) - 2 * np.sum(np.sqrt(np.clip(inner, 0, None))))


def test_frechet_distance_general_covariances_matches_symmetric_formula():
    rng = np.random.default_rng(0)
    xa, xb = rng.standard_normal((300, 6)), rng.standard_normal((300, 6)) @ rng.standard_normal((6, 6)) + 0.5
    a, b = fit_gaussian(xa), fit_gaussian(xb)
    assert frechet_distance(a, b) == pytest.approx(symmetric_frechet(a, b), rel=1e-6)
    assert frechet_audio_distance(xa, xb) == pytest.approx(symmetric_frechet(a, b), rel=1e-6)


def test_frechet_distance_rank_deficient_sets():
    # Fewer rows than dimensions: singular covariances (the eps offset guards sqrtm; FAD works in their span).
    rng = np.random.default_rng(1)
    x = rng.standard_normal((20, 64))
    y = rng.standard_normal((25, 64)) * 1.5 + 0.3
    assert frechet_audio_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    expected = symmetric_frechet(fit_gaussian(x), fit_gaussian(y))
    assert frechet_audio_distance(x, y) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(fit_gaussian(x), fit_gaussian(y)) == pytest.approx(expected, rel=1e-3)


def test_fit_gaussian_pools_clips_and_rejects_bad_input():
    rng = np.random.default_rng(2)
    parts = [rng.standard_normal((5, 3)), rng.standard_normal((7, 3))]
    pooled = fit_gaussian(parts)
    assert pooled.count == 12
    np.testing.assert_allclose(pooled.mu, np.concatenate(parts).mean(axis=0))
    with pytest.raises(InputError, match="at least 2"):
        fit_gaussian(np.zeros((1, 3)))
    with pytest.raises(InputError, match="empty"):
        fit_gaussian([])
    with pytest.raises(InputError, match="NaN"):
        fit_gaussian(np.full((4, 2), np.nan))
    with pytest.raises(InputError, match="dimensions differ"):
        frechet_distance(fit_gaussian(np.eye(3)), fit_gaussian(np.eye(4)))


def test_fad_of_a_set_with_itself_is_zero_and_grows_with_noise():
    rng = np.random.default_rng(0)
    embedder = MelStatsEmbedder()
    clips = [synth_music(rng, seconds=4.0) for _ in range(8)]
    real = [embedder.embed(c, SR) for c in clips]
    assert frechet_audio_distance(real, real) == pytest.approx(0.0, abs=1e-6)
    noise_rng = np.random.default_rng(1)
    distances = []
    for level in (0.001, 0.01, 0.05, 0.2):
        noisy = [embedder.embed(c + level * noise_rng.standard_normal(c.size).astype(np.float32), SR) for c in clips]
        distances.append(frechet_audio_distance(noisy, real))
    assert distances[0] > 0
    assert all(b > a for a, b in zip(distances, distances[1:])), distances


# ---------------------------------------------------------------------------- embedders


def test_mel_embedder_windows_channels_and_resampling():
    rng = np.random.default_rng(3)
    embedder = MelStatsEmbedder()
    x = synth_music(rng, seconds=3.0)
    windows = embedder.embed(x, SR)
    # 3 s at 10 ms hop, centred STFT: 301 frames -> windows of 96 every 48 frames
    assert windows.shape == (1 + (301 - 96) // 48, 2 * N_MELS)
    assert windows.dtype == np.float32
    # channels are averaged: a stereo pair of identical channels equals the mono clip
    np.testing.assert_allclose(embedder.embed(np.stack([x, x]), SR), windows, rtol=1e-5, atol=1e-5)
    # a clip shorter than a window still gives one window
    assert embedder.embed(x[: SR // 4], SR).shape == (1, 2 * N_MELS)
    # resampled input lands close to the native-rate embedding
    import soxr

    x32 = soxr.resample(x, SR, 32000)
    assert np.abs(embedder.embed(x32, 32000) - windows).mean() < 0.1
    with pytest.raises(InputError):
        embedder.embed(np.zeros(0, dtype=np.float32), SR)
    with pytest.raises(InputError):
        embedder.embed(np.zeros((2, 2, 10), dtype=np.float32), SR)


def test_build_embedder_names_the_choices():
    assert build_embedder("mel").name == "mel-stats"
    with pytest.raises(ConfigError, match="valid choices: clap, mel, panns, vggish"):
        build_embedder("openl3")
    with pytest.raises(ConfigError, match="local weights"):
        build_embedder("vggish")
    with pytest.raises(ConfigError, match="clap_checkpoint"):
        build_embedder("clap")
    with pytest.raises(CheckpointError, match="does not exist"):
        build_embedder("vggish=/nonexistent/vggish.pth")


def test_vggish_front_end():
    mel = vggish_mel_matrix()
    assert mel.shape == (257, N_MELS)
    assert np.all(mel[0] == 0)  # DC bin dropped
    assert np.all(mel.max(axis=0) > 0.5)  # every band has a peak
    # 1 kHz tone: the strongest band is the one centred nearest 1 kHz on the HTK mel scale
    t = np.arange(SR * 2) / SR
    examples = waveform_to_examples(0.5 * np.sin(2 * np.pi * 1000 * t))
    assert examples.shape == (2, 96, N_MELS)
    peak_band = int(np.argmax(examples[0].mean(axis=0)))
    bin_1k = int(round(1000 / (SR / 2) * 256))
    assert peak_band == int(np.argmax(mel[bin_1k]))
    # a clip shorter than one example is zero padded to one
    assert waveform_to_examples(np.zeros(100)).shape == (1, 96, N_MELS)


@pytest.mark.slow
def test_vggish_checkpoint_round_trip(tmp_path):
    from vmas_diffusion.evaluation.vggish import VGGish

    torch.manual_seed(0)
    path = tmp_path / "vggish.pth"
    torch.save(VGGish().state_dict(), path)
    embedder = build_embedder(f"vggish={path}")
    out = embedder.embed(synth_music(np.random.default_rng(0), seconds=3.0), SR)
    assert out.shape == (3, 128) and np.all(np.isfinite(out))
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="not a VGGish state dict"):
        build_embedder(f"vggish={tmp_path / 'bad.pth'}")


def test_panns_front_end_matches_torchlibrosa():
    stft = pytest.importorskip("torchlibrosa.stft", reason="torchlibrosa (the PANNs front end) is not installed")
    from vmas_diffusion.evaluation.panns import LogMelFrontEnd

    x = torch.from_numpy(synth_music(np.random.default_rng(4), seconds=1.0, sr=32000))[None]
    spectrogram = stft.Spectrogram(n_fft=1024, hop_length=320, win_length=1024, window="hann", center=True,
                                   pad_mode="reflect", freeze_parameters=True)
    log_mel = stft.LogmelFilterBank(sr=32000, n_fft=1024, n_mels=64, fmin=50, fmax=14000, ref=1.0, amin=1e-10,
                                    top_db=None, freeze_parameters=True)
    torch.testing.assert_close(LogMelFrontEnd()(x), log_mel(spectrogram(x)), atol=0.05, rtol=1e-3)  # dB; float32 round-off in quiet bins


@pytest.mark.slow
def test_panns_checkpoint_round_trip(tmp_path):
    from vmas_diffusion.evaluation.panns import Cnn14

    torch.manual_seed(0)
    model = Cnn14()
    state = dict(model.state_dict())
    state["logmel_extractor.melW"] = model.front_end.mel_basis.clone()  # as released checkpoints carry it
    torch.save({"model": state, "iteration": 0}, tmp_path / "Cnn14.pth")
    embedder = build_embedder(f"panns={tmp_path / 'Cnn14.pth'}")
    out = embedder.embed(synth_music(np.random.default_rng(0), seconds=2.0), SR)
    assert out.shape == (3, 2048) and np.all(np.isfinite(out))  # 1 s windows every 0.5 s
    state["logmel_extractor.melW"] = torch.zeros_like(state["logmel_extractor.melW"])
    torch.save({"model": state}, tmp_path / "other_front_end.pth")
    with pytest.raises(CheckpointError, match="mel front end"):
        build_embedder(f"panns={tmp_path / 'other_front_end.pth'}")


@pytest.mark.slow
def test_clap_embedder_and_clap_score_row(tmp_path, media):
    from vmas_diffusion.models import clap_audio

    if not clap_audio.clap_available():
        pytest.skip("laion-clap / torchlibrosa not installed")
    from safetensors.torch import save_file

    torch.manual_seed(0)
    encoder = clap_audio.ClapAudioEncoder(htsat_size="tiny")
    checkpoint = tmp_path / "clap.safetensors"
    save_file({k: v.contiguous() for k, v in encoder.state_dict().items()}, str(checkpoint))
    embedder = build_embedder("clap", clap_checkpoint=str(checkpoint))
    x = synth_music(np.random.default_rng(0), seconds=3.0)
    windows = embedder.embed(x, SR)
    assert windows.shape == (1, 512)
    np.testing.assert_allclose(np.linalg.norm(windows, axis=1), 1.0, rtol=1e-4)
    model = make_fake_model(tmp_path / "models", "m", noise=0.0)
    manifest = tmp_path / "set.jsonl"
    manifest.write_text(json.dumps({"video": str(media("bigbuckbunny.mp4")), "end": 2.0}) + "\n")
    report = run_evaluation([model], str(manifest), str(tmp_path / "out"), clap_checkpoint=str(checkpoint),
                            progress=False, plots=False, load_pipeline=FakePipeline)
    score = report.results["models"][0]["metrics"]["clap_music"]
    assert score is not None and -1.0 <= score <= 1.0


# ---------------------------------------------------------------------------- small metric pieces


def test_beat_offsets_known_answer():
    offsets = beat_offsets(np.array([0.1, 0.9, 2.2, 5.0]), np.array([2.0, 0.0, 1.0]))
    np.testing.assert_allclose(offsets, [0.1, -0.1, 0.2, 3.0])
    assert beat_offsets(np.array([1.0]), np.array([])).size == 0


def test_peak_memory_sees_a_large_allocation():
    import mmap

    with PeakMemory("cpu", interval=0.001) as memory:
        # fresh pages from the kernel (not a malloc chunk freed by an earlier test and reused), touched
        block = mmap.mmap(-1, 64 * 2**20)
        np.frombuffer(block, dtype=np.uint8)[:] = 1
        time.sleep(0.05)
        block.close()
    assert memory.kind == "cpu-rss-delta"
    assert memory.peak_mb > 48


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_peak_memory_on_cuda():
    with PeakMemory("cuda:0") as memory:
        block = torch.ones(16 * 2**20, device="cuda:0")  # 64 MiB
        del block
    assert memory.kind == "cuda-allocated"
    assert memory.peak_mb == pytest.approx(64, abs=2)


# ---------------------------------------------------------------------------- evaluation set


def test_manifest_resolves_paths_and_reports_bad_lines(tmp_path, media):
    clip = tmp_path / "videos" / "carphone.mp4"
    clip.parent.mkdir()
    clip.write_bytes(media("carphone_pristine.mp4").read_bytes())
    manifest = tmp_path / "set.jsonl"
    manifest.write_text(
        json.dumps({"video": "videos/carphone.mp4", "start": 0.5, "end": 2.0}) + "\n\n"
        + json.dumps({"video": str(media("bigbuckbunny.mp4")), "id": "bunny"}) + "\n"
    )
    clips = load_eval_set(manifest)
    assert [c.id for c in clips] == ["00000001-carphone", "bunny"]
    assert clips[0].video == clip and (clips[0].start, clips[0].end) == (0.5, 2.0)
    assert clips[0].audio is None  # carphone has no soundtrack
    assert clips[1].audio == media("bigbuckbunny.mp4") and clips[1].is_whole_file
    assert len(load_eval_set(manifest, max_videos=1)) == 1

    def bad(text, pattern):
        manifest.write_text(text)
        with pytest.raises(InputError, match=pattern):
            load_eval_set(manifest)

    bad("", "no clips")
    bad('{"video": "videos/carphone.mp4"}\n{"video": \n', "line 2: not valid JSON")
    bad('{"video": "videos/missing.mp4"}\n', "missing.mp4 does not exist")
    bad('{"video": "videos/carphone.mp4", "strat": 1}\n', "unknown key.* strat")
    bad('{"video": "videos/carphone.mp4", "start": 2, "end": 1}\n', "must be after")
    bad('{"audio": "x.wav"}\n', "line 1: 'video' must be")
    bad('{"video": "videos/carphone.mp4", "id": "a"}\n{"video": "videos/carphone.mp4", "id": "a"}\n', "already used")
    with pytest.raises(InputError, match="does not exist"):
        load_eval_set(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no video files"):
        load_eval_set(tmp_path / "empty")


def test_folder_uses_each_videos_own_soundtrack(tmp_path, media):
    for name in ("bigbuckbunny.mp4", "carphone_pristine.mp4"):
        (tmp_path / name).write_bytes(media(name).read_bytes())
    (tmp_path / "notes.txt").write_text("not a video")
    clips = load_eval_set(tmp_path)
    assert [(c.id, c.audio is not None) for c in clips] == [("bigbuckbunny", True), ("carphone_pristine", False)]


# ---------------------------------------------------------------------------- cache


def test_generation_key_follows_model_files_video_seed_and_kwargs(tmp_path, media):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "weights.safetensors").write_bytes(b"0" * 16)
    clip = EvalClip(id="c", video=media("carphone_pristine.mp4"))
    kwargs = {"duration": None, "num_inference_steps": None, "guidance_scale": 3.0}
    key = generation_key(model_fingerprint(model), clip, 0, kwargs)
    assert key == generation_key(model_fingerprint(model), clip, 0, dict(kwargs))
    assert key != generation_key(model_fingerprint(model), clip, 1, kwargs)
    assert key != generation_key(model_fingerprint(model), clip, 0, {**kwargs, "guidance_scale": 1.0})
    assert key != generation_key(model_fingerprint(model), EvalClip(id="c", video=clip.video, start=1.0), 0, kwargs)
    (model / "weights.safetensors").write_bytes(b"1" * 17)  # retrained weights
    assert key != generation_key(model_fingerprint(model), clip, 0, kwargs)
    with pytest.raises(CheckpointError, match="does not exist"):
        model_fingerprint(tmp_path / "missing")


def test_generation_cache_round_trip(tmp_path):
    cache = GenerationCache(tmp_path / "cache")
    record = GenerationRecord(
        audio=np.random.default_rng(0).standard_normal((1, 800)).astype(np.float32), sample_rate=16000,
        backend="ar", seconds=0.25, peak_memory_mb=12.0, memory_kind="cpu-rss-delta",
        video_embedding=np.ones(4, np.float32), music_embedding=None,
    )
    assert cache.get("k") is None
    cache.put("k", record)
    back = cache.get("k")
    np.testing.assert_array_equal(back.audio, record.audio)
    assert (back.sample_rate, back.backend, back.seconds, back.memory_kind) == (16000, "ar", 0.25, "cpu-rss-delta")
    np.testing.assert_array_equal(back.video_embedding, record.video_embedding)
    assert back.music_embedding is None
    assert back.real_time_factor == pytest.approx(0.25 / 0.05)
    (tmp_path / "cache" / "k.npz").write_bytes(b"truncated")
    assert cache.get("k") is None  # a broken entry is recomputed, not fatal


def test_clip_analysis_round_trip(tmp_path, media):
    from vmas_diffusion.beats import MusicBeats, VisualBeats
    from vmas_diffusion.evaluation import ClipAnalysis, analysis_key, load_analysis, save_analysis

    clip = EvalClip(id="c", video=media("carphone_pristine.mp4"), start=0.5, end=2.0)
    visual = VisualBeats(times=np.array([0.4, 1.2]), envelope=np.linspace(0, 1, 38, dtype=np.float32), fps=25.0,
                         cuts=np.array([1.2]))
    music = MusicBeats(times=np.array([0.5, 1.0]), tempo=120.0, onset_envelope=np.ones(10, np.float32), onset_fps=86.1)
    analysis = ClipAnalysis(clip=clip, duration=1.5, visual=visual, music=music,
                            fad_windows=np.ones((2, 4), np.float32))
    save_analysis(tmp_path / "a.npz", analysis)
    back = load_analysis(tmp_path / "a.npz", clip)
    assert back.duration == 1.5 and back.has_reference and back.clap_embedding is None
    np.testing.assert_array_equal(back.visual.times, visual.times)
    np.testing.assert_array_equal(back.visual.envelope, visual.envelope)
    assert back.visual.fps == 25.0 and back.music.tempo == 120.0
    np.testing.assert_array_equal(back.fad_windows, analysis.fad_windows)
    save_analysis(tmp_path / "b.npz", ClipAnalysis(clip=clip, duration=1.5, visual=visual))
    assert load_analysis(tmp_path / "b.npz", clip).music is None
    assert load_analysis(tmp_path / "missing.npz", clip) is None
    settings = {"visual_fps": 25.0}
    key = analysis_key(clip, settings, [{"name": "mel-stats"}])
    assert key != analysis_key(clip, {"visual_fps": 10.0}, [{"name": "mel-stats"}])
    assert key != analysis_key(clip, settings, [{"name": "vggish"}])


# ---------------------------------------------------------------------------- the table, with a test double


class FakeOutput:
    def __init__(self, audios, sample_rate):
        self.audios, self.sample_rate, self.video_beats = audios, sample_rate, np.zeros(0)


class FakePipeline:
    """Stands in for VideoToMusicPipeline: a click track whose tempo and timbre come from the
    generator's seed and the model folder's ``config.json``; counts its calls."""

    calls: list = []
    sampling: list = []  # the generator options of each call
    guidance: list = []  # (model folder name, guidance_scale) of each call

    def __init__(self, folder):
        self.folder = Path(folder)
        self.config = json.loads((self.folder / "config.json").read_text())
        self.backend = self.config["backend"]

    def _duration(self, video, fps):
        from vmas_diffusion.media import probe_video

        return probe_video(video).duration if fps is None else len(video) / fps

    def __call__(self, video, fps=None, duration=None, num_inference_steps=None, guidance_scale=3.0,
                 generator=None, output_type="np", **sampling):
        FakePipeline.calls.append((self.folder.name, str(video) if fps is None else len(video)))
        FakePipeline.sampling.append(sampling)
        FakePipeline.guidance.append((self.folder.name, guidance_scale))
        seconds = duration or self._duration(video, fps)
        u = torch.rand(2, generator=generator).numpy()
        t = np.arange(int(seconds * SR)) / SR
        period = 60.0 / (90 + 60 * u[0])
        clicks = np.exp(-(t % period) / 0.03) * np.sin(2 * np.pi * (300 + 200 * u[1]) * t)
        noise = np.random.default_rng(int(u[0] * 1e6)).standard_normal(t.size) * self.config["noise"]
        audio = np.clip(0.7 * clicks + noise, -1, 1).astype(np.float32)[None, None]
        return FakeOutput(audio, SR)

    def embed_video(self, video, fps=None, seconds=None):
        if not self.config.get("contrastive", True):
            raise VMASError("this pipeline has no contrastive head")
        key = sum(map(ord, str(video))) if fps is None else int(np.asarray(video).mean() * 1000)
        return torch.from_numpy(np.random.default_rng(key).standard_normal(8)).float()

    def embed_music(self, wav, sample_rate):
        if not self.config.get("contrastive", True):
            raise VMASError("this pipeline has no contrastive head")
        spectrum = np.abs(np.fft.rfft(np.asarray(wav)[0, :4096]))[:8]
        return torch.from_numpy(spectrum / np.linalg.norm(spectrum)).float()


def make_fake_model(root: Path, name: str, noise: float, backend: str = "ar", contrastive: bool = True) -> str:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"backend": backend, "noise": noise, "contrastive": contrastive}))
    (folder / "diffusion_pytorch_model.safetensors").write_bytes(b"weights")
    return str(folder)


@pytest.fixture
def eval_manifest(tmp_path, media):
    manifest = tmp_path / "set.jsonl"
    lines = [
        {"video": str(media("bigbuckbunny.mp4")), "start": 0.0, "end": 2.5, "id": "bunny"},
        {"video": str(media("carphone_pristine.mp4")), "id": "carphone"},
        {"video": str(media("bikes.mp4")), "start": 1.0, "end": 3.0, "id": "bikes"},
    ]
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return manifest


def _quality(report):
    """Every metric value except the timing ones, per model."""
    return [{k: v for k, v in m["metrics"].items() if k not in TIMING_KEYS} for m in report.results["models"]]


def test_guidance_defaults_to_each_models_own(tmp_path, eval_manifest, monkeypatch):
    import vmas_diffusion.defaults as defaults

    monkeypatch.setattr(defaults, "ASSETS", tmp_path / "assets")
    bundled = make_fake_model(tmp_path / "assets" / defaults.DEFAULT_MODEL, "ldm", noise=0.0, backend="ldm")
    other = make_fake_model(tmp_path / "models", "mine", noise=0.0)
    FakePipeline.guidance = []
    run = lambda out, **kw: run_evaluation(  # noqa: E731
        [bundled, other], str(eval_manifest), str(out), seed=0, progress=False, plots=False,
        load_pipeline=FakePipeline, **kw)

    report = run(tmp_path / "out")
    assert set(FakePipeline.guidance) == {("ldm", defaults.RECOMMENDED_GUIDANCE["ldm"]), ("mine", 3.0)}
    assert [m["guidance_scale"] for m in report.results["models"]] == [defaults.RECOMMENDED_GUIDANCE["ldm"], 3.0]
    assert f"guidance ldm {defaults.RECOMMENDED_GUIDANCE['ldm']:g}, mine 3" in report.markdown

    FakePipeline.guidance = []  # a given guidance is every model's, and a new cache key
    report = run(tmp_path / "out", guidance_scale=1.5)
    assert set(FakePipeline.guidance) == {("ldm", 1.5), ("mine", 1.5)}
    assert report.markdown.splitlines()[0].count("guidance 1.5") == 1
    with pytest.raises(InputError, match="guidance_scale"):
        run(tmp_path / "out", guidance_scale=-1.0)


def test_table_one_column_per_model_deterministic_and_cached(tmp_path, eval_manifest):
    models_dir = tmp_path / "models"
    a = make_fake_model(models_dir, "clean", noise=0.0)
    b = make_fake_model(models_dir, "noisy", noise=0.2, backend="ldm", contrastive=False)
    c = make_fake_model(models_dir, "third", noise=0.05)
    FakePipeline.calls = []
    run = lambda models, out, **kw: run_evaluation(  # noqa: E731
        models, str(eval_manifest), str(out), seed=0, progress=False, load_pipeline=FakePipeline, **kw
    )

    first = run([a, b], tmp_path / "out")
    assert len(FakePipeline.calls) == 2 * 3
    assert first.columns == ["clean (ar)", "noisy (ldm)"]
    header = next(line for line in first.markdown.splitlines() if line.startswith("| metric"))
    assert header.count("|") == 2 + 2  # metric column + one per model
    assert all(len(cells) == 2 for _, cells in first.rows)
    data = json.loads(Path(first.json_path).read_text())
    assert [m["name"] for m in data["models"]] == ["clean", "noisy"]
    assert data["fad_embedder"] == "mel-stats" and "mel-stats" in first.markdown
    clean, noisy = (m["metrics"] for m in data["models"])
    # only bunny has real music: FAD and the music-beat rows come from it, the noisy model is further away
    assert clean["fad"] is not None and noisy["fad"] > clean["fad"]
    assert clean["music.bhs_window"] is not None and clean["visual.bhs_window"] is not None
    assert clean["R@1"] is not None and clean["chance@1"] == pytest.approx(1 / 3)
    assert noisy["R@1"] is None and noisy["video_music"] is None  # no contrastive head -> n/a
    assert "n/a" in dict(first.rows)["R@1 video→generated music (chance 0.33)"][1]
    assert clean["clap_music"] is None  # no CLAP checkpoint given
    assert clean["rtf"] > 0 and clean["generated_this_run"] == 3
    assert data["clips"][0]["reference_audio"] and data["clips"][1]["reference_audio"] is None
    for path in first.plots:
        assert Path(path).stat().st_size > 1000
    assert len(first.plots) == 2 * 3 + 2 + 1  # alignment per (clip, model) + offset histogram per model + pace
    assert Path(first.plots[-1]).name == "pace.png"

    # same seed, fresh output folder: the same table (timings aside)
    again = run([a, b], tmp_path / "out2", plots=False)
    assert _quality(again) == _quality(first)
    assert len(FakePipeline.calls) == 4 * 3

    # re-run in the first folder: everything comes from the cache
    FakePipeline.calls = []
    cached = run([a, b], tmp_path / "out", plots=False)
    assert FakePipeline.calls == []
    assert _quality(cached) == _quality(first)
    assert [m["metrics"]["generated_this_run"] for m in cached.results["models"]] == [0, 0]
    assert cached.results["computed"] == {"generations": 0, "clip_analyses": 0}
    assert first.results["computed"] == {"generations": 6, "clip_analyses": 3}

    # adding a model computes only its column
    added = run([a, b, c], tmp_path / "out", plots=False)
    assert {name for name, _ in FakePipeline.calls} == {"third"} and len(FakePipeline.calls) == 3
    assert added.columns == ["clean (ar)", "noisy (ldm)", "third (ar)"]
    assert _quality(added)[:2] == _quality(first)

    # touching a model's weights invalidates its entries only
    weights = Path(a) / "diffusion_pytorch_model.safetensors"
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    FakePipeline.calls = []
    run([a, b, c], tmp_path / "out", plots=False)
    assert {name for name, _ in FakePipeline.calls} == {"clean"}


def test_sampling_options_reach_the_pipeline_and_key_the_cache(tmp_path, eval_manifest):
    model = make_fake_model(tmp_path / "models", "m", noise=0.0)
    run = lambda **kw: run_evaluation([model], str(eval_manifest), str(tmp_path / "out"), seed=0, progress=False,  # noqa: E731
                                      plots=False, load_pipeline=FakePipeline, **kw)
    FakePipeline.calls, FakePipeline.sampling = [], []
    run()
    assert FakePipeline.sampling == [{}] * 3  # none given: the model's own
    cool = run(sampling={"temperature": 0.8, "top_k": 50})
    assert FakePipeline.sampling[3:] == [{"temperature": 0.8, "top_k": 50}] * 3  # another key: generated again
    assert cool.results["models"][0]["metrics"]["generated_this_run"] == 3
    assert json.loads(Path(cool.json_path).read_text())["settings"]["sampling"] == {"temperature": 0.8, "top_k": 50}
    assert run(sampling={"top_k": 50, "temperature": 0.8}).results["models"][0]["metrics"]["generated_this_run"] == 0
    # best-of-N's pace term reaches the pipeline and the cache key too
    FakePipeline.sampling = []
    run(num_candidates=2, pace_weight=1.0)
    assert FakePipeline.sampling == [{"num_candidates": 2, "pace_weight": 1.0}] * 3
    with pytest.raises(InputError, match="pace_weight"):
        run(num_candidates=2, pace_weight=-1.0)


def test_run_evaluation_bad_inputs(tmp_path, eval_manifest):
    model = make_fake_model(tmp_path / "models", "m", noise=0.0)
    kw = dict(progress=False, load_pipeline=FakePipeline)
    with pytest.raises(CheckpointError, match="missing_model does not exist"):
        run_evaluation([str(tmp_path / "missing_model")], str(eval_manifest), str(tmp_path / "o"), **kw)
    with pytest.raises(InputError, match="does not exist"):
        run_evaluation([model], str(tmp_path / "no_data"), str(tmp_path / "o"), **kw)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(InputError, match="no clips"):
        run_evaluation([model], str(empty), str(tmp_path / "o"), **kw)
    with pytest.raises(ConfigError, match="unknown fad_embedder"):
        run_evaluation([model], str(eval_manifest), str(tmp_path / "o"), fad_embedder="wav2vec", **kw)
    with pytest.raises(InputError, match="at least one"):
        run_evaluation([], str(eval_manifest), str(tmp_path / "o"), **kw)


# ---------------------------------------------------------------------------- the real tiny pipelines


def test_evaluate_real_tiny_pipelines(tmp_path, media):
    from vmas_diffusion.pipelines import VideoToMusicPipeline

    root = Path(__file__).resolve().parents[1]
    recipes = [root / "recipes" / "tiny_ar.yaml", root / "recipes" / "tiny_ldm.yaml"]
    models = []
    for recipe in recipes:
        torch.manual_seed(0)
        pipe = VideoToMusicPipeline.from_recipe(str(recipe))
        assert pipe.contrastive_head is not None  # the tiny recipes carry one: retrieval is scored
        folder = tmp_path / recipe.stem
        pipe.save_pretrained(str(folder))
        models.append(str(folder))
    manifest = tmp_path / "set.jsonl"
    manifest.write_text(
        json.dumps({"video": str(media("bigbuckbunny.mp4")), "start": 0.0, "end": 1.5, "id": "bunny"}) + "\n"
        + json.dumps({"video": str(media("carphone_pristine.mp4")), "end": 1.5, "id": "carphone"}) + "\n"
    )
    report = run_evaluation(models, str(manifest), str(tmp_path / "out"), seed=0, num_inference_steps=2,
                            progress=False, plots=False)
    assert report.columns == ["tiny_ar (ar)", "tiny_ldm (ldm)"]
    for model in report.results["models"]:
        m = model["metrics"]
        assert m["generated_this_run"] == 2
        assert m["fad"] is not None and np.isfinite(m["fad"])
        assert m["visual.bcs_window"] is not None and m["rtf"] > 0
        assert m["R@1"] is not None and m["video_music"] is not None
        assert 0.0 <= m["harmonic_share"] <= 1.0 and 0.0 <= m["sustained_pitch"] <= 1.0 and m["onset_density"] >= 0
        assert m["pace_tempo_rho"] is None  # a rank correlation over 2 clips is not defined
    # the real music (bigbuckbunny's soundtrack) is the reference of the content rows, kept in the clip cache
    assert 0.0 < report.results["reference"]["harmonic_share"] <= 1.0
    assert "| Harmonic share of energy (HPSS) |" in report.markdown
    second = run_evaluation(models, str(manifest), str(tmp_path / "out"), seed=0, num_inference_steps=2,
                            progress=False, plots=False)
    assert [m["metrics"]["generated_this_run"] for m in second.results["models"]] == [0, 0]
    assert _quality(second) == _quality(report)
    assert second.results["reference"]["harmonic_share"] == report.results["reference"]["harmonic_share"]


def test_evaluate_takes_a_bundled_name_and_the_sampling_of_its_config(tmp_path, media):
    """``--model vmas-tiny-ar`` is the bundled folder, as for ``generate``; its own temperature (0.8) is what a
    plain run samples with, and naming it gives the same generations (the cache key differs, the music not)."""
    manifest = tmp_path / "set.jsonl"
    manifest.write_text(json.dumps({"video": str(media("bikes.mp4")), "start": 1.0, "end": 2.0, "id": "bikes"}) + "\n")
    run = lambda out, **kw: run_evaluation(["vmas-tiny-ar"], str(manifest), str(tmp_path / out), seed=0,  # noqa: E731
                                           guidance_scale=6.0, progress=False, plots=False, **kw)
    plain = run("plain")
    assert plain.columns == ["ar (ar)"] and plain.results["models"][0]["metrics"]["generated_this_run"] == 1
    named = run("named", sampling={"temperature": 0.8})
    assert _quality(named) == _quality(plain)
    warmer = run("warmer", sampling={"temperature": 1.0})
    assert _quality(warmer) != _quality(plain)
    with pytest.raises(CheckpointError, match="bundled name"):
        run_evaluation(["vmas-tiny-xyz"], str(manifest), str(tmp_path / "o"), progress=False)
