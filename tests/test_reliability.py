"""Reliability of inference: broken inputs, runaway numbers, failed writes, files decord refuses.

Every case either works or ends with the project's error: in Python a VMASError subclass, on
the command line one line on stderr and exit code 2. Runaway numbers (``--duration 1e9``, a
tiny file whose header claims hours) run the CLI in a subprocess under a 4 GB address-space
limit and a timeout, so a regression fails the test instead of exhausting the machine.
"""

import os
import resource
import signal
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import dummies
import numpy as np
import pytest
import torch

from vmas_diffusion import VideoToMusicPipeline, atomic
from vmas_diffusion.cli import main
from vmas_diffusion.conditions import Condition
from vmas_diffusion.errors import InputError, MediaExportError, VMASError
from vmas_diffusion.limits import MAX_MUSIC_SECONDS, MAX_VIDEO_SECONDS
from vmas_diffusion.media import export_to_video_with_audio, load_video, probe_video, save_audio

ROOT = Path(__file__).resolve().parents[1]
TINY_AR = str(ROOT / "recipes" / "tiny_ar.yaml")
MEMORY_LIMIT = 4 << 30  # bytes of address space a runaway CLI call may take


# --------------------------------------------------------------------------- media made here


def _encode(path: Path, codec: str, frames, rate, pix_fmt: str = "yuv420p", pts=None, time_base=None) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], pix_fmt
        if time_base is not None:
            stream.codec_context.time_base = time_base
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            if pts is not None:
                frame.pts, frame.time_base = pts[i], time_base
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def _moving(n: int, height: int = 48, width: int = 64) -> list:
    """Frames with a bright bar moving right: each frame differs, so sampling mistakes show."""
    frames = []
    for i in range(n):
        image = np.full((height, width, 3), 30, np.uint8)
        image[:, (4 * i) % width : (4 * i) % width + 4] = 220
        frames.append(image)
    return frames


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("reliability_media")


@pytest.fixture(scope="module")
def animated_gif(media_dir):
    return _encode(media_dir / "anim.gif", "gif", _moving(12), 10, pix_fmt="rgb8")


@pytest.fixture(scope="module")
def av1_mkv(media_dir):
    """AV1 in Matroska, with whichever AV1 encoder this PyAV build has."""
    if not {"libdav1d", "libaom-av1", "av1"} & set(av.codecs_available):
        pytest.skip("this PyAV build has no AV1 decoder")
    for encoder in ("libsvtav1", "libaom-av1", "librav1e"):
        try:
            return _encode(media_dir / f"av1_{encoder}.mkv", encoder, _moving(16), 8)
        except (av.error.FFmpegError, ValueError):
            continue
    pytest.skip("this PyAV build has no AV1 encoder (libsvtav1, libaom-av1, librav1e) to make the test file")


@pytest.fixture(scope="module")
def three_hour_claim(media_dir):
    """Two frames whose timestamps are 3 hours apart: a ~2 KB file that claims 10,800 s."""
    path = _encode(media_dir / "claims_3h.mp4", "mpeg4", _moving(2, 32, 32), 1, pts=[0, 3 * 3600], time_base=Fraction(1, 1))
    assert path.stat().st_size < 4000
    return path


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)  # the same random weights whatever ran before
    pipe = VideoToMusicPipeline.from_recipe(TINY_AR)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _frames(n: int = 8) -> np.ndarray:
    return np.stack(_moving(n, 32, 32))


def _cli(args, *, fsize: int = None, timeout: float = 180):
    """Run the CLI in a subprocess under the memory limit (and a file-size limit when given)."""

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
        if fsize is not None:  # a write over the limit fails with EFBIG instead of killing the process
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", PYTHONDONTWRITEBYTECODE="1", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "vmas_diffusion.cli", *map(str, args)], preexec_fn=limit,
                          capture_output=True, text=True, env=env, timeout=timeout)


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.startswith("vmas-diffusion: ")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-2000:]
    assert lines[0].startswith("vmas-diffusion: error: ")
    return lines[0]


def _leftovers(folder: Path) -> list:
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name or p.name.startswith("."))


# --------------------------------------------------------------------------- runaway numbers


def test_huge_duration_fails_fast_under_a_memory_limit(tmp_path):
    video = ROOT / "vmas_diffusion" / "assets" / "demo_bikes.mp4"
    done = _cli(["generate", video, "-o", tmp_path / "o.wav", "--model", TINY_AR, "--duration", "1e9"], timeout=120)
    assert done.returncode == 2
    line = _one_error_line(done.stderr)
    assert "1e+09 s" in line and f"{MAX_MUSIC_SECONDS:g} s limit" in line and "--max-music-seconds" in line
    assert not (tmp_path / "o.wav").exists()


def test_a_tiny_file_claiming_hours_is_refused_before_decoding(three_hour_claim, tmp_path):
    info = probe_video(three_hour_claim)
    assert info.num_frames == 2 and info.duration > 3 * 3600 - 1
    done = _cli(["generate", three_hour_claim, "-o", tmp_path / "o.wav", "--model", TINY_AR], timeout=120)
    assert done.returncode == 2
    line = _one_error_line(done.stderr)
    assert "claims_3h.mp4" in line and f"10801 s, over the {MAX_VIDEO_SECONDS:g} s limit" in line and "--max-video-seconds" in line
    # asking for a short piece does not help: the whole video would be read
    done = _cli(["generate", three_hour_claim, "-o", tmp_path / "o.wav", "--model", TINY_AR, "--duration", "1"])
    assert done.returncode == 2 and "--max-video-seconds" in _one_error_line(done.stderr)


def test_python_limits_are_checked_before_any_allocation(pipe, three_hour_claim):
    frames = _frames(8)
    with pytest.raises(InputError, match=r"8e\+06 s, over the 1800 s limit.*max_video_seconds"):
        pipe(video=frames, fps=1e-6, duration=1)  # resampled to 8 fps this was 64 million frames (1 TiB)
    with pytest.raises(InputError, match="max_music_seconds"):
        pipe(video=frames, fps=8, duration=1e9)
    with pytest.raises(InputError, match="claims_3h.mp4.*max_video_seconds"):
        pipe(video=str(three_hour_claim), duration=1)
    with pytest.raises(InputError, match="0.5 s limit"):
        pipe(video=frames, fps=8, max_video_seconds=0.5)  # 1 s of frames
    with pytest.raises(InputError, match="0.5 s limit"):
        pipe(video=frames, fps=8, max_music_seconds=0.5)  # the music defaults to the video's 1 s
    for bad in (0, -1, float("nan"), "600", True):
        with pytest.raises(InputError, match="max_music_seconds"):
            pipe(video=frames, fps=8, max_music_seconds=bad)
    with pytest.raises(InputError, match=r"10000000 waveforms of 1 s\) is 1e\+07 s"):  # the limit counts every waveform
        pipe(video=frames, fps=8, duration=1, num_waveforms_per_video=10**7)
    with pytest.raises(InputError, match="max_video_seconds"):
        pipe.embed_video(frames, fps=1e-6)
    with pytest.raises(InputError, match="less than one sample"):
        pipe(video=frames, fps=8, duration=1e-9)


def test_frames_shorter_than_one_encoder_frame_still_give_music(pipe):
    out = pipe(video=_frames(2), fps=1e9, duration=0.25, generator=torch.Generator().manual_seed(0))
    assert out.audios.shape == (1, 1, pipe.sample_rate // 4)


def test_ldm_runaway_steps_and_overflowing_guidance(tmp_path):
    ldm = VideoToMusicPipeline.from_recipe(str(ROOT / "recipes" / "tiny_ldm.yaml"))
    ldm.set_progress_bar_config(disable=True)
    with pytest.raises(InputError, match="at most the scheduler's 1000 training steps"):
        ldm(video=_frames(8), fps=8, num_inference_steps=10**9)  # was a 7.5 GB timestep array
    with pytest.raises(InputError, match="the ldm generator takes no 'top_k'"):
        ldm(video=_frames(8), fps=8, top_k=50)
    with pytest.raises(InputError, match="NaN or infinite samples"):
        ldm(video=_frames(8), fps=8, num_inference_steps=2, guidance_scale=1e308)


def test_limits_can_be_lifted(pipe, media_dir):
    frames = _frames(2)
    out = pipe(video=frames, fps=0.5, duration=0.5, max_video_seconds=None, max_music_seconds=float("inf"),
               generator=torch.Generator().manual_seed(0))
    assert out.audios.shape == (1, 1, pipe.sample_rate // 2)
    with pytest.raises(InputError, match="max_video_seconds"):
        pipe(video=frames, fps=0.5, duration=0.5, max_video_seconds=3.0)  # 4 s of frames


def test_cli_limit_flags(media, tmp_path, capsys):
    clip = media("carphone_pristine.mp4")  # about 4 s
    out = tmp_path / "o.wav"
    assert main(["generate", str(clip), "-o", str(out), "--model", TINY_AR, "--max-video-seconds", "1"]) == 2
    assert "--max-video-seconds" in capsys.readouterr().err
    assert main(["generate", str(clip), "-o", str(out), "--model", TINY_AR, "--duration", "3", "--max-music-seconds", "2"]) == 2
    assert "3 s, over the 2 s limit" in capsys.readouterr().err
    assert main(["generate", str(clip), "-o", str(out), "--model", TINY_AR, "--duration", "0.5",
                 "--max-video-seconds", "none", "--max-music-seconds", "0.5"]) == 0
    assert out.is_file()


def test_frames_at_an_absurd_rate_are_resized_before_they_are_repeated(pipe):
    """Two 720p frames at 0.01 fps are 200 s: 1,600 encoder frames. Memory follows the small
    output (1,600 x 32 x 32 x 3), not 1,600 copies of 720p frames as floats (35 GB)."""
    import tracemalloc

    frames = np.random.default_rng(0).integers(0, 255, (2, 720, 1280, 3), dtype=np.uint8)
    tracemalloc.start()
    prepared = pipe.prepare_video(frames, 0.01)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert prepared.frames.shape == (1600, 32, 32, 3) and prepared.duration == 200.0
    assert peak < 100 << 20, f"{peak / 2**20:.0f} MB"
    np.testing.assert_array_equal(prepared.frames[0], prepared.frames[799])  # frame 0 until t = 100 s
    assert not np.array_equal(prepared.frames[799], prepared.frames[800])


def test_resizing_once_per_frame_equals_resizing_every_pick(pipe):
    import torch.nn.functional as F

    frames = np.random.default_rng(1).integers(0, 255, (5, 40, 50, 3), dtype=np.uint8)
    prepared = pipe.prepare_video(frames, 3.0)  # 8 fps from 3 fps: frames repeat unevenly
    index = np.minimum(np.floor(np.arange(14) / 8 * 3 + 1e-6).astype(int), 4)
    picked = torch.from_numpy(frames[index]).permute(0, 3, 1, 2).float()
    direct = F.interpolate(picked, size=(32, 32), mode="bilinear", antialias=True, align_corners=False)
    np.testing.assert_array_equal(prepared.frames, direct.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy())


# --------------------------------------------------------------------------- broken-input matrix (Python)


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        (dict(video=[]), "empty list"),
        (dict(video=[42], fps=8), "path or a"),
        (dict(video="FRAMES", fps="8"), "`fps` must be a positive number"),
        (dict(video="FRAMES", fps=float("nan")), "`fps` must be a positive number"),
        (dict(video="FRAMES", fps=8, generator=42), "torch.Generator().manual_seed"),
        (dict(video="FRAMES", fps=8, generator=[torch.Generator(), 3]), "`generator` must be"),
        (dict(video="FRAMES", fps=8, num_waveforms_per_video=True), "num_waveforms_per_video"),
        (dict(video="FRAMES", fps=8, num_waveforms_per_video=1.0), "num_waveforms_per_video"),
        (dict(video="FRAMES", fps=8, num_inference_steps=False), "num_inference_steps"),
        (dict(video="FRAMES", fps=8, duration=float("nan")), "`duration`"),
        (dict(video="FRAMES", fps=8, duration=-1), "`duration`"),
        (dict(video="FRAMES", fps=8, guidance_scale=float("nan")), "guidance_scale"),
        (dict(video="FRAMES", fps=8, temperature=float("nan")), "temperature"),
        (dict(video="FRAMES", fps=8, top_p=float("nan")), "top_p"),
        (dict(video="FRAMES", fps=8, top_k=2.5), "top_k"),
        (dict(video="FRAMES", fps=8, temperature=float("inf")), "finite"),
        (dict(video="FRAMES", fps=8, temprature=0.5),
         "takes no 'temprature'; its options are: beat_guidance_scale, temperature, top_k, top_p"),
        (lambda d: dict(video_embeds=torch.zeros(1, 8, d + 1), duration=1), "D="),
        (lambda d: dict(video_embeds=torch.zeros(1, 0, d), duration=1), "B, T > 0"),
        (lambda d: dict(video_embeds=torch.zeros(1, 8, d, dtype=torch.long), duration=1), "float"),
        (lambda d: dict(video_embeds=Condition(torch.zeros(1, 8, d), torch.ones(1, 8)), duration=1), "frame_rate"),
    ],
)
def test_bad_pipeline_arguments_raise_the_projects_error(pipe, kwargs, needle):
    if callable(kwargs):  # video_embeds of the encoder's width D
        kwargs = kwargs(pipe.video_encoder.config.hidden_dim)
    if kwargs.get("video") == "FRAMES":
        kwargs = dict(kwargs, video=_frames(8))
    with pytest.raises(VMASError) as err:
        pipe(**kwargs)
    assert needle in str(err.value)


def test_embed_music_refuses_bad_audio(pipe):
    with pytest.raises(InputError, match="NaN"):
        pipe.embed_music(np.full(16000, np.nan, np.float32), 16000)
    for rate in (0, -5, 1.5, float("nan"), "16000x"):
        with pytest.raises(InputError, match="sample_rate"):
            pipe.embed_music(np.zeros(16000, np.float32), rate)
    with pytest.raises(InputError, match="no samples"):
        pipe.embed_music(np.zeros(0, np.float32), 16000)
    embedding = pipe.embed_music(torch.zeros(2, 8000), 8000)  # stereo at another rate works
    assert embedding.shape == (pipe.contrastive_head.config.embed_dim,) and torch.isfinite(embedding).all()


def test_raw_video_embeds_are_at_the_encoders_frame_rate(pipe):
    """The documented ``[B, T, D]`` tensor: the same music as the Condition at the encoder's fps."""
    fps = pipe.video_encoder.config.fps
    # 2 s at 8 fps, varying strongly in time, under strong guidance: the frame rate shows in the tokens
    embeds = 5 * torch.randn(1, 16, pipe.video_encoder.config.hidden_dim, generator=torch.Generator().manual_seed(1))
    seed = dict(duration=1.5, guidance_scale=20.0, generator=torch.Generator().manual_seed(3))
    raw = pipe(video_embeds=embeds, **seed).audios
    seed["generator"] = torch.Generator().manual_seed(3)
    as_condition = pipe(video_embeds=Condition(embeds, torch.ones(1, 16, dtype=torch.bool), fps), **seed).audios
    assert raw.shape == (1, 1, int(1.5 * pipe.sample_rate))
    np.testing.assert_array_equal(raw, as_condition)
    seed["generator"] = torch.Generator().manual_seed(3)
    slower = pipe(video_embeds=Condition(embeds, torch.ones(1, 16, dtype=torch.bool), fps / 2), **seed).audios
    assert not np.array_equal(raw, slower)  # the frame rate is used, not ignored


# --------------------------------------------------------------------------- broken-input matrix (CLI)


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["generate", "{video}", "-o", "{tmp}/o.wav", "--seed", str(2**64)], "0 to 2**64 - 1"),
        (["generate", "{video}", "-o", "{tmp}/o.wav", "--seed", "-1"], "0 to 2**64 - 1"),
        (["generate", "{video}", "-o", "{tmp}/o.wav", "--duration", "nan"], "positive number of seconds"),
        (["generate", "{video}", "-o", "{tmp}/o.wav", "--duration", "inf"], "positive number of seconds"),
        (["generate", "{video}", "-o", "{tmp}/o.wav", "--duration", "0"], "positive number of seconds"),
        (["generate", "{video}", "-o", "{tmp}/o.wav", "--max-music-seconds", "0"], "'none'"),
        (["generate", "{video}", "-o", "{tmp}/o.wav", "--max-video-seconds", "lots"], "'none'"),
        (["demo", "-o", "{tmp}/o.mp4", "--seed", "1e3"], "0 to 2**64 - 1"),
        (["evaluate", "--model", "x", "--data", "y", "--seed", str(2**70)], "0 to 2**64 - 1"),
        (["prepare", "{png}", "--out", "{tmp}/data", "--recipe", TINY_AR], "not a UTF-8 text file"),
        (["train", TINY_AR, "train.learning_rate=nan"], "train.learning_rate must be a finite number"),
        (["train", TINY_AR, "train.adam_epsilon=-inf"], "train.adam_epsilon must be a finite number"),
    ],
)
def test_bad_cli_input_gives_one_line_and_exit_2(argv, needle, tmp_path, capsys):
    png = tmp_path / "plot.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    video = ROOT / "vmas_diffusion" / "assets" / "demo_bikes.mp4"
    argv = [a.format(video=video, tmp=tmp_path, png=png) for a in argv]
    assert main(argv + (["--model", TINY_AR] if argv[0] == "generate" else [])) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vmas-diffusion: error: ") and needle in err[0], err
    assert not (tmp_path / "o.wav").exists() and not (tmp_path / "data").exists()


# --------------------------------------------------------------------------- files decord refuses


def test_decord_refusals_fall_back_to_pyav(animated_gif, av1_mkv):
    for path, frames in ((animated_gif, 12), (av1_mkv, 16)):
        info = probe_video(path)
        assert info.num_frames == frames
        clip = load_video(path, fps=8, size=32)  # decord refuses both files
        ref = load_video(path, fps=8, size=32, backend="pyav")
        np.testing.assert_array_equal(clip.frames, ref.frames)
        np.testing.assert_array_equal(clip.timestamps, ref.timestamps)
        assert len(clip) == int(np.ceil(info.duration * 8 - 1e-6))
    gif = load_video(animated_gif)  # native rate: every frame, the bar moving 4 px a frame
    assert len(gif) == 12 and gif.frames[1, 20, 4:8].mean() > 150 and gif.frames[1, 20, 0:4].mean() < 100


def test_cli_generates_for_a_gif_and_an_av1_file(animated_gif, av1_mkv, tmp_path, capsys):
    for path in (animated_gif, av1_mkv):
        out = tmp_path / f"{path.stem}.wav"
        assert main(["generate", str(path), "-o", str(out), "--model", TINY_AR]) == 0, capsys.readouterr().err
        assert out.is_file()
    mp4 = tmp_path / "gif_with_music.mp4"  # the GIF's picture is re-encoded (an .mp4 cannot hold GIF)
    assert main(["generate", str(animated_gif), "-o", str(mp4), "--model", TINY_AR]) == 0
    assert probe_video(mp4).has_audio and probe_video(mp4).num_frames == 12


# --------------------------------------------------------------------------- atomic writes


def test_atomic_path_leaves_nothing_on_failure_and_keeps_the_old_file(tmp_path):
    final = tmp_path / "report.json"
    atomic.write_text(final, "old")
    for error in (OSError(28, "No space left on device"), KeyboardInterrupt()):
        with pytest.raises(type(error)):
            with atomic.atomic_path(final) as tmp:
                assert tmp.parent == final.parent and tmp.suffix == ".json" and tmp != final
                tmp.write_text("half of the new")
                raise error
        assert final.read_text() == "old" and _leftovers(tmp_path) == []
    atomic.write_text(final, "new")
    assert final.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]
    atomic.write_bytes(tmp_path / "sub" / "deeper" / "x.bin", b"\x00\x01")  # parent folders are made
    assert (tmp_path / "sub" / "deeper" / "x.bin").read_bytes() == b"\x00\x01"


def _half_then_fail(real, method: bool = False):
    """A writer (function or method) that writes the first half of its file, then hits a full disk."""

    def write(*args, **kwargs):
        real(*args, **kwargs)
        path = args[1] if method else args[0]
        with open(path, "r+b") as handle:
            handle.truncate(os.path.getsize(path) // 2)
        raise OSError(28, "No space left on device")

    return write


def test_save_audio_failure_mid_write_leaves_no_file(tmp_path, monkeypatch):
    import soundfile

    monkeypatch.setattr(soundfile, "write", _half_then_fail(soundfile.write))
    with pytest.raises(MediaExportError, match="No space left"):
        save_audio(tmp_path / "music.wav", np.zeros(16000, np.float32), 16000)
    assert list(tmp_path.iterdir()) == []


def test_plots_and_mp4_failure_mid_write_leave_no_file(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from vmas_diffusion.beats import music_beats, plot_alignment, visual_beats
    from vmas_diffusion.evaluation.plots import plot_offset_histogram
    from vmas_diffusion.media import export as export_module

    music = np.sin(np.linspace(0, 3000, 16000 * 2, dtype=np.float32)) * 0.3
    visual = visual_beats(_frames(16), 8.0)
    monkeypatch.setattr(Figure, "savefig", _half_then_fail(Figure.savefig, method=True))
    with pytest.raises(MediaExportError):
        plot_alignment(tmp_path / "beats.png", visual, music=music_beats(music, 16000))
    with pytest.raises(OSError):
        plot_offset_histogram(tmp_path / "offsets.png", np.zeros(3), title="t")
    monkeypatch.undo()

    def broken_encode(frames, fps, height, width, tmp, audio, rate):
        Path(tmp).write_bytes(b"\x00" * 1000)
        raise av.error.FFmpegError(28, "No space left on device")

    monkeypatch.setattr(export_module, "_encode_frames", broken_encode)
    with pytest.raises(MediaExportError, match="No space left"):
        export_to_video_with_audio(_frames(8), music, 16000, tmp_path / "clip.mp4", fps=8)
    assert list(tmp_path.iterdir()) == []


def test_cli_output_over_the_file_size_limit_leaves_nothing(tmp_path):
    """A real write failure (RLIMIT_FSIZE, as a full disk): exit 2, one line, no file, no temp file."""
    video = ROOT / "vmas_diffusion" / "assets" / "demo_bikes.mp4"
    out = tmp_path / "out" / "music.wav"  # 2 s of 16 kHz PCM-16 is 64 KB, over the 16 KB limit
    done = _cli(["generate", video, "-o", out, "--model", TINY_AR, "--duration", "2"], fsize=16_000)
    assert done.returncode == 2
    assert "music.wav" in _one_error_line(done.stderr)
    assert not out.exists() and list(out.parent.iterdir()) == []


def test_evaluation_and_data_writers_are_atomic(tmp_path, monkeypatch):
    """The report, the manifest, the shard index and the shards go through vmas_diffusion.atomic."""
    from vmas_diffusion.data.manifest import write_manifest
    from vmas_diffusion.data.shards import ShardWriter, write_index

    def fail_commit(tmp, path):
        Path(tmp).unlink()
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic, "commit", fail_commit)
    with pytest.raises(OSError):
        write_manifest(tmp_path / "m.jsonl", [{"video": "a.mp4"}])
    with pytest.raises(OSError):
        write_index(tmp_path, [], {})
    monkeypatch.undo()
    import vmas_diffusion.data.shards as shards

    monkeypatch.setattr(shards, "commit", fail_commit)
    with pytest.raises(OSError):
        with ShardWriter(tmp_path, 0) as writer:
            writer.write("clip", {"x": torch.zeros(3)}, {"id": "clip"})
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- the app


def test_app_messages_never_show_server_paths(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("vmas_app_reliability", ROOT / "app.py")
    app = importlib.util.module_from_spec(spec)
    sys.modules["vmas_app_reliability"] = app
    spec.loader.exec_module(app)

    upload = tmp_path / "gradio" / "0f3a9c" / "my clip.mp4"
    upload.parent.mkdir(parents=True)
    dummies.remux_video(ROOT / "vmas_diffusion" / "assets" / "demo_bikes.mp4", tmp_path / "fast.mp4", faststart=True)
    data = (tmp_path / "fast.mp4").read_bytes()
    upload.write_bytes(data[: len(data) // 2])  # the header and first frames probe fine; the rest is cut

    limits = app.AppLimits(max_megabytes=5.0, max_seconds=8.0, max_steps=50)
    _, _, _, status = app.handle_request(str(upload), "recipes/tiny_ldm.yaml", "auto", 2, 3.0, 0,
                                         models=["recipes/tiny_ldm.yaml"], pipes=app.PipelineCache(),
                                         limits=limits, out_root=tmp_path / "runs")
    assert status.startswith("**Cannot generate:**") and "my clip.mp4" in status, status
    assert str(tmp_path) not in status and "gradio" not in status and "0f3a9c" not in status, status

    decord_text = ("decord cannot read /srv/uploads/ab12/anim.gif: [18:09:02] /github/workspace/src/video/"
                   "video_reader.cc:270: [/srv/uploads/ab12/anim.gif] broken metadata; 1/2 s at C:\\Users\\me\\x.mp4")
    assert app.public_message(decord_text) == (
        "decord cannot read anim.gif: [18:09:02] video_reader.cc:270: [anim.gif] broken metadata; 1/2 s at x.mp4")
