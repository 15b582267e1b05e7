"""The contrastive head's rhythm part: video and music embeddings that know when things happen."""

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from vmas_diffusion.errors import InputError
from vmas_diffusion.losses import retrieval_recall
from vmas_diffusion.models.contrastive_head import ContrastiveHead

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("fit_rhythm_head", ROOT / "scripts" / "fit_rhythm_head.py")
fit_rhythm_head = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fit_rhythm_head)

FPS, SECONDS, SR = 10.0, 4.0, 16000
EVENTS = (0.5, 1.3, 2.1, 2.9, 3.4)  # irregular, so no shift of the train matches it again


def impulses(times, rate, seconds=SECONDS):
    out = torch.zeros(int(round(seconds * rate)))
    for t in times:
        out[int(round(t * rate))] = 1.0
    return out


def test_no_rhythm_part_by_default():
    head = ContrastiveHead(6, 5, embed_dim=8)
    assert head.output_dim == 8 and not hasattr(head, "rhythm_kernel")
    torch.testing.assert_close(head.embed_video(torch.ones(1, 6), torch.ones(1, 40)), head.embed_video(torch.ones(1, 6)))


def test_similarity_is_the_share_weighted_sum_of_global_cosine_and_envelope_correlation():
    torch.manual_seed(0)
    share = 0.3
    head = ContrastiveHead(6, 5, embed_dim=8, rhythm_frames=40, rhythm_share=share)
    video, music = torch.randn(2, 6), torch.randn(2, 5)
    beats = torch.stack([impulses(EVENTS, FPS), impulses([1.0, 2.0, 3.0], FPS)])
    onsets = torch.stack([impulses(EVENTS, 50.0), impulses([0.7, 3.7], 50.0)])  # any rate: pooled onto 40 bins
    with torch.no_grad():
        v, m = head.embed_video(video, beats), head.embed_music(music, onsets)
    assert v.shape == (2, 48) and head.output_dim == 48
    torch.testing.assert_close(v.norm(dim=-1), torch.ones(2))
    cos = torch.nn.functional.cosine_similarity
    glob = cos(head.video_proj(video)[:, None], head.music_proj(music)[None], dim=-1).detach()
    rhythm = (head.rhythm(beats, video=True) @ head.rhythm(onsets, video=False).T).detach()
    torch.testing.assert_close(v @ m.T, (1 - share) * glob + share * rhythm)
    assert float(rhythm[0, 0]) == pytest.approx(1.0, abs=1e-5)  # the same events: a perfect match
    assert float(rhythm[0, 1]) < 0.2 and float(rhythm[1, 0]) < 0.2


def test_a_flat_envelope_leaves_the_global_part_alone_and_errors_are_clear():
    torch.manual_seed(0)
    head = ContrastiveHead(6, 5, embed_dim=8, rhythm_frames=20, rhythm_share=0.5)
    video = torch.randn(1, 6)
    v = head.embed_video(video, torch.zeros(1, 30))  # no visual event: nothing to say about timing
    torch.testing.assert_close(v[:, :8], torch.nn.functional.normalize(head.video_proj(video), dim=-1))
    assert torch.all(v[:, 8:] == 0)
    with pytest.raises(InputError, match="needs the beat envelope"):
        head.embed_video(video)
    with pytest.raises(InputError, match="onset envelope"):
        head.embed_music(torch.randn(1, 5))
    with pytest.raises(InputError, match=r"\[B, T\]"):
        head.embed_video(video, torch.zeros(1, 0))
    with pytest.raises(InputError, match="2 onset envelopes"):
        head.embed_music(torch.randn(1, 5), torch.zeros(2, 10))
    for bad in (dict(rhythm_share=1.5), dict(rhythm_frames=-1), dict(rhythm_reach=1.5)):
        with pytest.raises(InputError, match="rhythm"):
            ContrastiveHead(6, 5, **bad)


def test_fitting_learns_the_lag_between_visual_events_and_their_onsets(tmp_path):
    """Music onsets that come 2 bins after the visual events: the identity kernel retrieves at chance
    level, the fitted one (the script's InfoNCE) nearly always, with its peak 2 taps back."""
    rng = np.random.default_rng(0)

    def windows(n):
        beats = torch.zeros(n, 40)
        for row in beats:
            row[rng.choice(36, size=5, replace=False)] = 1.0
        return {"beat": beats, "onset": torch.roll(beats, 2, dims=1) + 0.05 * torch.rand(n, 40)}

    train, val = windows(512), windows(64)
    head = ContrastiveHead(6, 5, embed_dim=8, rhythm_frames=40, rhythm_reach=3, rhythm_share=1.0)

    def recall():
        with torch.no_grad():
            return retrieval_recall(head.rhythm(val["beat"], video=True), head.rhythm(val["onset"], video=False))["R@1"]

    before = recall()
    losses = fit_rhythm_head.fit_kernel(head, train, steps=300, batch=128, lr=0.05, seed=0)
    assert before < 0.2 < 0.9 < recall()
    assert losses[-1] < losses[0]
    assert int(head.rhythm_kernel.argmax()) == 3 - 2  # conv1d correlates: a bin's output reads 2 bins back


def _cuts(times, fps, seconds=SECONDS, size=32):
    """Frames at ``fps`` that cut between two textured shots at each time: one visual event each."""
    rng = np.random.default_rng(1)
    shots = rng.integers(0, 255, (2, size, size, 3), dtype=np.uint8)
    cut_frames = [int(round(t * fps)) for t in times]
    return np.stack([shots[sum(i >= c for c in cut_frames) % 2] for i in range(int(seconds * fps))])


def _clicks(times, seconds=SECONDS):
    wav = np.zeros(int(seconds * SR), np.float32)
    burst = np.random.default_rng(0).uniform(-0.8, 0.8, 400).astype(np.float32) * np.exp(-np.arange(400) / 80)
    for t in times:
        i = int(round(t * SR))
        wav[i : i + 400] += burst[: len(wav) - i]
    return wav[None]


@pytest.mark.parametrize("recipe", ["ar", "ldm"])
def test_pipeline_embeddings_rank_music_on_the_video_beats_first(tmp_path, recipe):
    from vmas_diffusion.pipelines import VideoToMusicPipeline

    torch.manual_seed(0)
    pipe = VideoToMusicPipeline.from_recipe(ROOT / "recipes" / f"tiny_{recipe}.yaml")
    old = pipe.contrastive_head
    head = ContrastiveHead(old.config.video_dim, old.config.music_dim, embed_dim=old.config.embed_dim,
                           rhythm_frames=40, rhythm_reach=2, rhythm_share=1.0)
    pipe.register_modules(contrastive_head=head)
    fps = float(pipe.video_encoder.config.fps)
    video = pipe.embed_video(_cuts(EVENTS, fps), fps=fps)
    assert video.shape == (head.output_dim,)
    on_beat = float(video @ pipe.embed_music(_clicks(EVENTS), SR))
    late = [float(video @ pipe.embed_music(_clicks([t + shift for t in EVENTS if t + shift < SECONDS - 0.1]), SR))
            for shift in (0.3, 0.5)]
    assert on_beat > 0.5 > max(late)
    # `seconds`: the stretch of video a piece of music was written for, the same as cutting the video first
    half = _cuts(EVENTS, fps)[: int(2 * fps)]
    torch.testing.assert_close(pipe.embed_video(_cuts(EVENTS, fps), fps=fps, seconds=2.0), pipe.embed_video(half, fps=fps))
    with pytest.raises(InputError, match="seconds"):
        pipe.embed_video(half, fps=fps, seconds=0.0)
    pipe.save_pretrained(tmp_path / "p")  # the rhythm part travels with the pipeline
    again = VideoToMusicPipeline.from_pretrained(tmp_path / "p")
    assert again.contrastive_head.config.rhythm_frames == 40
    torch.testing.assert_close(again.embed_video(_cuts(EVENTS, fps), fps=fps), video)


def test_training_feeds_the_rhythm_part_its_envelopes(tmp_path):
    import dummies
    from dummies import make_synthetic_data

    from vmas_diffusion.data import ShardDataset
    from vmas_diffusion.recipes import LossWeights
    from vmas_diffusion.training.task import VideoMusicTask

    batch = next(iter(ShardDataset(make_synthetic_data(tmp_path), batch_size=3)))
    torch.manual_seed(0)
    head = ContrastiveHead(video_dim=16, music_dim=32, embed_dim=8, rhythm_frames=10, rhythm_share=0.5)
    task = VideoMusicTask(dummies.dummy_video_encoder(), dummies.dummy_ar_generator().train(), head,
                          LossWeights(beat_onset=0.0, beat_visual=0.0), seed=0)
    total, terms, _ = task(batch)
    total.backward()
    assert head.rhythm_kernel.grad is not None and head.rhythm_kernel.grad.abs().sum() > 0
    assert math.isfinite(float(terms["contrastive"]))
    with pytest.raises(InputError, match="onset"):
        task({k: v for k, v in batch.items() if k != "onset"})


def test_fit_script_gives_a_pipeline_a_fitted_rhythm_head(tmp_path, capsys):
    from dummies import make_music_set

    from vmas_diffusion.pipelines import VideoToMusicPipeline

    data = make_music_set(tmp_path, splits=("train", "val"))
    args = ["--model", "vmas-tiny-ar", "--data", str(data), "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache"),
            "--seconds", "4", "--window", "2", "--frames", "20", "--steps", "20", "--batch", "4", "--shares", "0,1"]
    assert fit_rhythm_head.main(args) == 0
    printed = capsys.readouterr().out
    assert "6 training windows, 6 validation windows" in printed and "| 1 |" in printed
    head = VideoToMusicPipeline.from_pretrained(tmp_path / "out").contrastive_head
    assert head.config.rhythm_frames == 20 and head.config.rhythm_share in (0.0, 1.0)
    assert sorted(p.suffix for p in (tmp_path / "cache").iterdir()) == [".safetensors"] * 2  # no pickle
    original = VideoToMusicPipeline.from_pretrained("vmas-tiny-ar").contrastive_head
    torch.testing.assert_close(head.video_proj.weight, original.video_proj.weight)  # the global part as trained
    assert fit_rhythm_head.main(args) == 0  # the second run reads the cached envelopes
