"""Beat sync (vmas_diffusion.beats.sync) and best-of-N: on synthetic clicks with known beats, and
wired through the pipeline, the CLI, the app and the evaluation."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vmas_diffusion import VideoToMusicPipeline
from vmas_diffusion.beats import BeatSync, beat_scores, match_beats_monotone, music_beats, sync_to_beats, warp_audio
from vmas_diffusion.errors import InputError

from test_beats import _clicks as clicks  # tests/ is on sys.path (conftest.py)

ROOT = Path(__file__).resolve().parents[1]
TINY_AR = str(ROOT / "recipes" / "tiny_ar.yaml")
RATE = 16000
FPS = 10.0


def _clicks(times, seconds):
    """Decaying noise bursts at ``times`` over faint noise: beats with a sharp, known onset."""
    return clicks(times, seconds, rate=RATE)


def _onset_near(audio, t, rate=RATE, window=0.08):
    """Time of the first sample within ``window`` s of ``t`` louder than half the loudest there."""
    a, b = int((t - window) * rate), int((t + window) * rate)
    seg = np.abs(audio[max(a, 0) : b])
    return (max(a, 0) + int(np.argmax(seg > 0.5 * seg.max()))) / rate


BEATS = np.arange(0.25, 8.0, 0.5)  # 120 BPM clicks over 8 s
SHIFT = 0.15 * np.sin(2 * np.pi * BEATS / 8.0)  # the video's beats drift up to 150 ms off: stretch <= 12 %


def test_warp_puts_the_beats_on_the_visual_beats():
    audio = _clicks(BEATS, 8.0)
    visual = BEATS + SHIFT
    warped, report = sync_to_beats(audio, RATE, visual)
    assert isinstance(report, BeatSync) and report.applied and report.reason == ""
    assert warped.shape == (1, audio.size)
    # every visual beat got its own music beat (but the first and last, which the tracker does not report)
    assert report.pairs[:, 1].tolist() == visual[1:-1].tolist() and report.matched_share == 14 / 16
    # each click of the warped audio starts where the time map sends the original click (within 12 ms:
    # the vocoder's 32 ms window blurs an attack), including the unmatched first and last ones
    for click in BEATS:
        expected = np.interp(_onset_near(audio, click), report.knots[:, 0], report.knots[:, 1])
        assert abs(_onset_near(warped[0], expected) - expected) < 0.012, click
    # the time map runs from (0, 0) to (8, 8) through the pairs, each segment within the limit
    np.testing.assert_allclose(report.knots[[0, -1]], [[0, 0], [8, 8]])
    assert np.all(np.abs(report.factors - 1) <= 0.15 + 1e-9) and 0.05 < report.max_abs_stretch <= 0.15
    assert 0 < report.mean_abs_stretch < report.max_abs_stretch
    # the beats tracked again on the warped audio hit the visual beats, which the original's did not all do
    assert report.bhs_before < 0.5 and report.bhs_after == 14 / 16
    assert report.bhs_after == beat_scores(music_beats(warped, RATE).times, visual, 8.0)["bhs_window"]


def test_stretch_limit_is_respected_and_far_beats_stay_unmatched():
    audio = _clicks(BEATS, 8.0)
    visual = BEATS + SHIFT
    _, loose = sync_to_beats(audio, RATE, visual, max_stretch=0.15)
    _, tight = sync_to_beats(audio, RATE, visual, max_stretch=0.05)
    assert np.all(np.abs(tight.factors - 1) <= 0.05 + 1e-9) and tight.max_stretch == 0.05
    assert 0 < len(tight.pairs) < len(loose.pairs)
    # a visual beat 0.2 s off in the middle of a steady run would need ±40 % on a 0.5 s beat: left alone
    visual = BEATS.copy()
    visual[8] += 0.2
    _, report = sync_to_beats(audio, RATE, visual)
    assert visual[8] not in report.pairs[:, 1] and report.pairs[:, 1].tolist() == np.delete(visual, [0, 8]).tolist()
    assert np.all(np.abs(report.factors - 1) <= 0.15 + 1e-9)


def test_length_and_channels_are_kept_and_aligned_music_is_untouched():
    mono = _clicks(BEATS, 8.0)
    stereo = np.stack([0.5 * mono, 0.25 * mono])  # quiet enough that the output is not clipped at 1
    warped, report = sync_to_beats(stereo, RATE, BEATS + SHIFT)
    assert warped.shape == stereo.shape and warped.dtype == np.float32 and report.applied
    np.testing.assert_allclose(warped[1], 0.5 * warped[0], atol=1e-6)
    # beats already on the visual beats: every factor is 1 and the audio comes back sample for sample
    quiet = 0.5 * mono
    same, report = sync_to_beats(quiet, RATE, music_beats(quiet, RATE).times)
    assert report.applied and np.allclose(report.factors, 1.0)
    np.testing.assert_allclose(same[0], quiet, atol=1e-6)


def test_nothing_to_sync_returns_the_music_with_a_reason():
    audio = _clicks(BEATS, 8.0)
    out, report = sync_to_beats(audio, RATE, [])
    assert not report.applied and "no visual beats" in report.reason
    np.testing.assert_array_equal(out[0], audio)
    assert report.summary()["applied"] is False and report.max_abs_stretch == 0.0
    silence = np.zeros(RATE * 4, np.float32)
    out, report = sync_to_beats(silence, RATE, [1.0, 2.0])
    assert not report.applied and "no beats" in report.reason and np.array_equal(out[0], silence)


def test_monotone_match_known_answer():
    music = [1.0, 2.0, 3.0]
    # 2.3 would need a 1.25 stretch after (1, 1.05): the best chain skips it and keeps the other two
    pairs = match_beats_monotone(music, [1.05, 2.3, 3.05], duration=4.0, max_stretch=0.15, max_shift=0.4)
    assert pairs.tolist() == [[0, 0], [2, 2]]
    # one-to-one and in order: two visual beats near one music beat take one of them
    pairs = match_beats_monotone(music, [1.9, 2.05], duration=4.0, max_shift=0.4)
    assert pairs.tolist() == [[1, 1]]  # 2.05 needs less stretch than 1.9 (0.05 vs 0.1 s off)
    # more pairs beat less stretch
    pairs = match_beats_monotone([1.0, 2.0], [1.1, 2.1], duration=4.0, max_shift=0.3)
    assert pairs.tolist() == [[0, 0], [1, 1]]
    assert match_beats_monotone([], [1.0], 4.0).shape == (0, 2)


@pytest.mark.parametrize("bad", [0, 1, -0.1, 1.5, "0.1", True, float("nan")])
def test_bad_max_stretch_is_an_input_error(bad):
    with pytest.raises(InputError, match="max_stretch"):
        sync_to_beats(np.zeros(RATE, np.float32), RATE, [0.5], max_stretch=bad)


def test_bad_knots_are_an_input_error():
    with pytest.raises(InputError, match="knots"):
        warp_audio(np.zeros(RATE, np.float32), RATE, [[0, 0]])
    with pytest.raises(InputError, match="increase"):
        warp_audio(np.zeros(RATE, np.float32), RATE, [[0, 0], [0.5, 0.6], [0.4, 0.8], [1, 1]])


# ---------------------------------------------------------------------------- the pipeline


def _square(num_frames=30, size=40, seed=0):
    """A bright square that jumps every 5 frames on a textured background: visual beats at 2 Hz."""
    rng = np.random.default_rng(seed)
    frames = np.repeat(rng.integers(0, 60, (1, size, size, 3), dtype=np.uint8), num_frames, axis=0)
    for t in range(num_frames):
        x = ((t // 5) * 13) % (size - 8)
        frames[t, 4:12, x : x + 8] = 255
    return frames


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    pipe = VideoToMusicPipeline.from_recipe(TINY_AR)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _run(pipe, seed=0, **kwargs):
    return pipe(video=_square(), fps=FPS, generator=torch.Generator().manual_seed(seed), **kwargs)


def test_best_of_n_keeps_the_best_scoring_candidate_deterministically(pipe):
    from vmas_diffusion.pipelines.video_to_music.alignment import SIMILARITY_WEIGHT, CandidateScores

    plain = _run(pipe)
    out = _run(pipe, num_candidates=3)
    again = _run(pipe, num_candidates=3)
    scores = out.candidates
    assert isinstance(scores, CandidateScores) and out.beat_sync is None and plain.candidates is None
    assert scores.bhs.shape == scores.similarity.shape == scores.score.shape == (3,)
    np.testing.assert_allclose(scores.score, scores.bhs + SIMILARITY_WEIGHT * scores.similarity)
    assert scores.selected == int(np.argmax(scores.score))
    assert out.audios.shape == plain.audios.shape
    # the same seed gives the same candidates and the same choice
    np.testing.assert_array_equal(out.audios, again.audios)
    assert again.candidates.summary() == scores.summary()
    # candidate 0 is the num_candidates=1 music, and the kept audio is the chosen candidate
    visual, duration = out.visual_beats.times, plain.audios.shape[-1] / out.sample_rate

    def bhs(audio):
        return beat_scores(music_beats(audio[0], out.sample_rate).times, visual, duration)["bhs_window"]

    assert scores.bhs[0] == pytest.approx(bhs(plain.audios))
    assert scores.bhs[scores.selected] == pytest.approx(bhs(out.audios))
    video = pipe.embed_video(_square(), fps=FPS)
    similarity = float(video @ pipe.embed_music(out.audios[0], out.sample_rate))
    assert scores.similarity[scores.selected] == pytest.approx(similarity, abs=1e-5)


def test_best_of_n_keeps_the_candidate_as_busy_as_the_video_asks():
    """With a pace map, of candidates that hit the (no) visual beats alike the one whose onset rate is the
    video's pace on the music's scale is kept: a calm map picks the calm candidate, a busy one the busy."""
    from types import SimpleNamespace

    from vmas_diffusion.beats.visual import VisualBeats
    from vmas_diffusion.pipelines.video_to_music.alignment import select_candidates

    seconds = 8.0
    candidates = [torch.from_numpy(_clicks(np.arange(0.1, seconds, period), seconds)).float()[None, None]
                  for period in (1 / 1.5, 1 / 6.0)]  # N of (B=1, C=1, S): 1.5 and 6 onsets a second
    envelope = np.zeros(int(seconds * FPS), np.float32)
    envelope[::5] = 1.0  # the video: 2 beats a second (none found as times, so both candidates hit nothing)
    analysis = VisualBeats(times=np.zeros(0), envelope=envelope, fps=FPS, cuts=np.zeros(0))

    def kept(table):
        pipe = SimpleNamespace(sample_rate=RATE, contrastive_head=None, codec=SimpleNamespace(frame_rate=50.0),
                               generator=SimpleNamespace(config={"pace_map": table, "pace_seconds": 0.0}))
        _, (scores,), _ = select_candidates(pipe, candidates, [analysis], [], 1, pace_weight=0.0 if table is None else 1.0)
        return scores

    strength = [[0.0, 1.0], [0.0, 1.0]]  # the second feature (mean strength) is not scored
    calm, busy = kept([[[0.0, 10.0], [0.0, 7.5]], strength]), kept([[[0.0, 10.0], [0.0, 30.0]], strength])
    assert calm.target_pace == pytest.approx(1.5, rel=0.15) and busy.target_pace == pytest.approx(6.0, rel=0.15)
    assert calm.pace[0] < calm.pace[1] and calm.bhs[0] == calm.bhs[1]
    assert (calm.selected, busy.selected) == (0, 1)
    plain = kept(None)  # no pace term: the tie goes to the first
    assert plain.pace is None and plain.target_pace is None and plain.selected == 0
    pipe = SimpleNamespace(sample_rate=RATE, contrastive_head=None, codec=SimpleNamespace(frame_rate=50.0),
                           generator=SimpleNamespace(config={"pace_seconds": 0.0}))
    with pytest.raises(InputError, match="pace_map"):
        select_candidates(pipe, candidates, [analysis], [], 1, pace_weight=1.0)


def test_pipeline_sync_beats_reports_the_warp_and_keeps_the_length(pipe):
    plain = _run(pipe)
    out = _run(pipe, sync_beats=True, max_stretch=0.1)
    report = out.beat_sync
    assert isinstance(report, BeatSync) and report.max_stretch == 0.1
    assert out.audios.shape == plain.audios.shape and out.audios.dtype == np.float32
    np.testing.assert_allclose(report.visual, out.visual_beats.times[out.visual_beats.times <= 3.0])
    if report.applied:
        assert np.all(np.abs(report.factors - 1) <= 0.1 + 1e-9) and len(report.pairs) >= 1
    else:  # untrained music may have no beats to move: then the music is the plain one
        np.testing.assert_array_equal(out.audios, plain.audios)
    # a batch gives one report per waveform; pt output works too
    two = pipe(video=[_square(), _square(seed=1)], fps=FPS, generator=torch.Generator().manual_seed(0),
               sync_beats=True, num_candidates=2, output_type="pt")
    assert isinstance(two.audios, torch.Tensor) and len(two.beat_sync) == 2 and len(two.candidates) == 2


def test_sync_without_visual_beats_returns_the_music_with_a_reason(pipe):
    encoded = pipe.video_encoder(torch.from_numpy(pipe.prepare_video(_square(), FPS).frames)[None])
    kwargs = dict(video_embeds=encoded, duration=2.0, generator=torch.Generator().manual_seed(0))
    plain = pipe(**kwargs)
    kwargs["generator"] = torch.Generator().manual_seed(0)
    out = pipe(sync_beats=True, num_candidates=2, **kwargs)
    assert not out.beat_sync.applied and "video_embeds" in out.beat_sync.reason
    assert out.candidates.similarity is None  # no frames, no video embedding: scored on beats alone
    assert out.audios.shape == plain.audios.shape


@pytest.mark.parametrize("kwargs, needle", [
    ({"num_candidates": 0}, "num_candidates"),
    ({"num_candidates": -2}, "num_candidates"),
    ({"num_candidates": 1.5}, "num_candidates"),
    ({"num_candidates": True}, "num_candidates"),
    ({"num_candidates": 2, "pace_weight": -1.0}, "pace_weight"),
    ({"num_candidates": 2, "pace_weight": float("nan")}, "pace_weight"),
    ({"sync_beats": "yes"}, "sync_beats"),
    ({"sync_beats": True, "max_stretch": 1.5}, "max_stretch"),
    ({"max_stretch": 0}, "max_stretch"),
])
def test_bad_alignment_arguments_are_input_errors(pipe, kwargs, needle):
    with pytest.raises(InputError, match=needle):
        _run(pipe, **kwargs)


# ---------------------------------------------------------------------------- CLI, app, evaluation


def test_cli_generate_with_sync_and_candidates(media, tmp_path, capsys):
    from vmas_diffusion.cli import main

    out = tmp_path / "music.wav"
    args = ["generate", str(media("bikes.mp4")), "-o", str(out), "--model", TINY_AR, "--duration", "2"]
    assert main(args + ["--sync-beats", "--max-stretch", "0.1", "--candidates", "2"]) == 0
    err = capsys.readouterr().err
    assert out.is_file() and "best of 2 candidates: kept #" in err and "beat sync" in err
    for extra, needle in ((["--candidates", "0"], "num_candidates"), (["--sync-beats", "--max-stretch", "2"], "max_stretch"),
                          (["--candidates", "2", "--pace-weight", "1"], "pace_map")):  # a random recipe has no pace map
        assert main(args + extra) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("vmas-diffusion: error:") and needle in err[0]


def test_app_checkbox_reaches_the_pipeline(tmp_path):
    sys.path.insert(0, str(ROOT))
    import app as vmas_app

    limits = vmas_app.AppLimits()
    ldm = "recipes/tiny_ldm.yaml"
    assert vmas_app.check_settings(ldm, "auto", 2, 3.0, 0, [ldm], limits, True).sync_beats is True
    assert vmas_app.check_settings(ldm, "auto", 2, 3.0, 0, [ldm], limits).sync_beats is False
    with pytest.raises(InputError, match="sync beats"):
        vmas_app.check_settings(ldm, "auto", 2, 3.0, 0, [ldm], limits, "maybe")
    seen = {}

    class Spy:
        """Wraps the real pipeline and records what the page asked it for."""

        def __init__(self, pipe):
            self.pipe = pipe

        def __getattr__(self, name):
            return getattr(self.pipe, name)

        def __call__(self, **kwargs):
            seen.update(kwargs)
            return self.pipe(**kwargs)

    pipes = vmas_app.PipelineCache(loader=lambda model, backend: Spy(vmas_app._load_pipeline(model, backend)))
    video, audio, plot, status = vmas_app.handle_request(str(vmas_app.DEMO_CLIP), ldm, "auto", 2, 3.0, 0, True,
                                                         models=[ldm], pipes=pipes, limits=limits, out_root=tmp_path)
    assert status.startswith("**Done.**") and seen["sync_beats"] is True and "Beat sync" in status, status
    gr = pytest.importorskip("gradio")
    demo = vmas_app.build_demo([ldm], limits)
    boxes = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "sync-beats"]
    assert len(boxes) == 1 and isinstance(boxes[0], gr.Checkbox) and boxes[0].value is False


def test_evaluate_rows_for_sync_and_best_of_n(media, tmp_path):
    from vmas_diffusion.evaluation import run_evaluation

    torch.manual_seed(0)
    folder = tmp_path / "tiny_ar"
    VideoToMusicPipeline.from_recipe(TINY_AR).save_pretrained(str(folder))
    manifest = tmp_path / "set.jsonl"
    manifest.write_text('{"video": "%s", "start": 1.0, "end": 3.0, "id": "bikes"}\n' % media("bikes.mp4"))
    kwargs = dict(seed=0, progress=False, plots=False, num_candidates=2, sync_beats=True)
    report = run_evaluation([str(folder)], str(manifest), str(tmp_path / "out"), **kwargs)
    m = report.results["models"][0]["metrics"]
    clip = report.results["models"][0]["per_clip"][0]
    assert m["candidates.bhs_mean"] is not None and 0 <= m["candidates.bhs_mean"] <= m["candidates.bhs_selected"] <= 1
    assert 0 <= m["visual.bhs_window_before_sync"] <= 1
    assert 0 <= m["sync.mean_abs_stretch"] <= m["sync.max_abs_stretch"] <= 0.15 + 1e-9
    assert clip["sync.applied"] in (0.0, 1.0)
    for label in ("before beat sync", "Beat sync: max abs(stretch - 1)", "Best-of-N: BHS of the kept candidate"):
        assert label in report.markdown
    # the settings are part of the cache key: the same run reads it back, a plain one generates again
    again = run_evaluation([str(folder)], str(manifest), str(tmp_path / "out"), **kwargs)
    assert again.results["models"][0]["metrics"]["generated_this_run"] == 0
    assert again.results["models"][0]["metrics"]["sync.max_abs_stretch"] == m["sync.max_abs_stretch"]
    plain = run_evaluation([str(folder)], str(manifest), str(tmp_path / "out"), seed=0, progress=False, plots=False)
    assert plain.results["models"][0]["metrics"]["generated_this_run"] == 1
    assert "before beat sync" not in plain.markdown
    with pytest.raises(InputError, match="num_candidates"):
        run_evaluation([str(folder)], str(manifest), str(tmp_path / "o2"), num_candidates=0, progress=False)
