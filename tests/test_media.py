"""Media I/O on real clips: probing, timestamp sampling, streaming, audio, muxing, bad input."""

from fractions import Fraction

import av
import dummies
import numpy as np
import pytest
import torch

from vmas_diffusion import utils
from vmas_diffusion.errors import AudioDecodeError, InputError, MediaExportError, VideoDecodeError
from vmas_diffusion.media import (
    VideoClip,
    export_to_video_with_audio,
    iter_video_chunks,
    load_audio,
    load_video,
    probe_video,
    save_audio,
)

BACKENDS = ("decord", "pyav")


def _tone(freq: float, seconds: float, rate: int, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture(scope="module")
def vfr_video(tmp_path_factory):
    """A variable-frame-rate H.264 clip: frame i is flat grey 10*i, shown from PTS[i] ms."""
    pts_ms = np.array([0, 40, 60, 200, 230, 500, 520, 540, 900, 1000, 1300, 1310, 1700, 1800, 1950])
    path = tmp_path_factory.mktemp("vfr") / "vfr.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        stream.options = {"qp": "0", "bf": "0"}
        for i, p in enumerate(pts_ms):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 10 * i, np.uint8), format="rgb24")
            frame.pts, frame.time_base = int(p), Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path, pts_ms / 1000.0


# --------------------------------------------------------------------------- probing / loading


def test_probe_real_clips(media):
    bikes = probe_video(media("bikes.mp4"))
    assert (bikes.width, bikes.height, bikes.num_frames, bikes.has_audio) == (640, 272, 250, False)
    assert bikes.fps == pytest.approx(25.0) and bikes.duration == pytest.approx(10.0)
    bunny = probe_video(media("bigbuckbunny.mp4"))
    assert bunny.has_audio and (bunny.width, bunny.height) == (1280, 720)
    assert probe_video(media("carphone_pristine.mp4")).fps == pytest.approx(30000 / 1001)


@pytest.mark.parametrize("backend", BACKENDS)
def test_load_video_samples_by_timestamp(media, backend):
    clip = load_video(media("bikes.mp4"), fps=8, backend=backend)
    assert isinstance(clip, VideoClip)
    assert clip.frames.shape == (80, 272, 640, 3) and clip.frames.dtype == np.uint8
    assert clip.fps == 8 and clip.duration == pytest.approx(10.0)
    targets = np.arange(80) / 8
    # the frame on screen at k/8: shown at or before it, and less than one native frame (1/25 s) before
    assert np.all(clip.timestamps <= targets + 1e-4)
    assert np.all(targets - clip.timestamps < 1 / 25 + 1e-4)


def test_backends_agree(media):
    a = load_video(media("carphone_pristine.mp4"), fps=8, start=0.5, end=3.0, backend="decord")
    b = load_video(media("carphone_pristine.mp4"), fps=8, start=0.5, end=3.0, backend="pyav")
    np.testing.assert_allclose(a.timestamps, b.timestamps, atol=1e-4)
    np.testing.assert_array_equal(a.frames, b.frames)


@pytest.mark.parametrize("backend", BACKENDS)
def test_variable_frame_rate(vfr_video, backend):
    path, pts = vfr_video
    clip = load_video(path, fps=10, backend=backend)
    targets = np.arange(clip.frames.shape[0]) / 10
    shown = np.searchsorted(pts, targets + 1e-6, side="right") - 1  # frame on screen at each target
    np.testing.assert_allclose(clip.timestamps, pts[shown], atol=1e-3)
    grey = clip.frames.reshape(len(clip), -1).mean(1)
    np.testing.assert_allclose(grey, 10 * shown, atol=3)
    # by index, "every 3rd frame" would sample frame 6 (0.52 s) at 0.6 s; by time it is frame 7
    assert shown[6] == 7 and clip.timestamps[6] == pytest.approx(0.54, abs=1e-3)


def test_native_rate_window_and_resize(media):
    clip = load_video(media("bikes.mp4"), start=2.0, end=3.0, size=(64, 96))
    assert clip.frames.shape == (25, 64, 96, 3)
    np.testing.assert_allclose(clip.timestamps, 2.0 + np.arange(25) / 25, atol=1e-4)
    assert clip.duration == pytest.approx(1.0) and clip.fps == pytest.approx(25.0)
    square = load_video(media("bikes.mp4"), fps=2, size=32, backend="pyav")
    assert square.frames.shape == (20, 32, 32, 3)
    # end past the video is clipped to its duration
    assert load_video(media("bikes.mp4"), fps=4, start=9.0, end=50.0).duration == pytest.approx(1.0)


def test_max_frames_guard(media):
    with pytest.raises(InputError, match="max_frames"):
        load_video(media("bikes.mp4"), fps=8, max_frames=79)
    assert len(load_video(media("bikes.mp4"), fps=8, max_frames=80)) == 80


@pytest.mark.parametrize("backend", BACKENDS)
def test_iter_video_chunks_matches_load_video(media, backend):
    whole = load_video(media("bikes.mp4"), fps=8, size=(68, 160), backend=backend)
    chunks = list(iter_video_chunks(media("bikes.mp4"), fps=8, chunk_seconds=3.0, size=(68, 160), backend=backend))
    assert [len(c) for c in chunks] == [24, 24, 24, 8]
    assert [c.duration for c in chunks] == pytest.approx([3.0, 3.0, 3.0, 1.0])
    np.testing.assert_array_equal(np.concatenate([c.frames for c in chunks]), whole.frames)
    np.testing.assert_allclose(np.concatenate([c.timestamps for c in chunks]), whole.timestamps)
    native = list(iter_video_chunks(media("bikes.mp4"), fps=None, chunk_seconds=4.0, start=1.0, backend=backend))
    assert [len(c) for c in native] == [100, 100, 25] and native[0].timestamps[0] == pytest.approx(1.0)


# --------------------------------------------------------------------------- bad video input


def test_missing_and_empty_video(tmp_path):
    with pytest.raises(VideoDecodeError, match="does not exist") as err:
        load_video(tmp_path / "nope.mp4")
    assert "nope.mp4" in str(err.value)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(VideoDecodeError, match="empty"):
        load_video(empty)


@pytest.mark.parametrize("backend", BACKENDS)
def test_corrupt_and_truncated_video(media, tmp_path, backend):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).bytes(50_000))
    data = media("bikes.mp4").read_bytes()  # moov atom at the end: cut in half, no index left
    half = tmp_path / "half.mp4"
    half.write_bytes(data[: len(data) // 2])
    fast = tmp_path / "fast.mp4"  # moov first: the index survives, the frames do not
    dummies.remux_video(media("bikes.mp4"), fast, faststart=True)
    cut = tmp_path / "fast_cut.mp4"
    cut.write_bytes(fast.read_bytes()[: fast.stat().st_size // 2])
    for path in (garbage, half, cut):
        with pytest.raises(VideoDecodeError) as err:
            load_video(path, fps=8, backend=backend)
        assert path.name in str(err.value)


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_video_with_zero_frames(tmp_path, suffix):
    path = tmp_path / f"zero{suffix}"
    with av.open(str(path), "w") as out:  # a header with a video stream, and no frame
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        out.start_encoding()
    for backend in BACKENDS:
        with pytest.raises(VideoDecodeError, match=path.name):
            load_video(path, backend=backend)


def test_audio_only_file_is_not_a_video(tmp_path):
    wav = save_audio(tmp_path / "music.wav", _tone(440, 1.0, 16000), 16000)
    with pytest.raises(VideoDecodeError, match="no video stream"):
        load_video(wav)
    m4a = tmp_path / "music.m4a"
    with av.open(str(m4a), "w") as out:  # an AAC-only mp4 container
        stream = out.add_stream("aac", rate=16000, layout="mono")
        frame = av.AudioFrame.from_ndarray(_tone(440, 0.5, 16000)[None], format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 16000, 0
        for packet in list(stream.encode(frame)) + list(stream.encode(None)):
            out.mux(packet)
    with pytest.raises(VideoDecodeError, match="no video stream"):
        probe_video(m4a)


def test_bad_arguments(media):
    with pytest.raises(InputError, match="fps"):
        load_video(media("bikes.mp4"), fps=0)
    with pytest.raises(InputError, match="size"):
        load_video(media("bikes.mp4"), size=(0, 5))
    with pytest.raises(InputError, match="past the end"):
        load_video(media("bikes.mp4"), start=11.0)
    with pytest.raises(InputError, match="end"):
        load_video(media("bikes.mp4"), start=3.0, end=2.0)
    with pytest.raises(InputError, match="backend"):
        load_video(media("bikes.mp4"), backend="opencv")


# --------------------------------------------------------------------------- audio


def test_soundtrack_of_a_video(media):
    mono = load_audio(media("bigbuckbunny.mp4"), 16000)
    assert mono.dtype == np.float32 and mono.shape == (1, round(5.312 * 16000))
    assert 0.001 < np.abs(mono).max() <= 1.0
    # a window after a seek holds the same samples as a full decode (AAC pre-roll handled)
    native = load_audio(media("bigbuckbunny.mp4"), 48000)
    window = load_audio(media("bigbuckbunny.mp4"), 48000, start=3.3, end=4.3)
    np.testing.assert_allclose(window, native[:, 158400:206400], atol=1e-6)
    window = load_audio(media("bigbuckbunny.mp4"), 16000, start=3.3, end=4.3)
    assert window.shape == (1, 16000)  # resampled alone: equal to the full decode but near its edges
    np.testing.assert_allclose(window[:, 100:-100], mono[:, 52900:68700], atol=1e-5)
    surround = load_audio(media("bigbuckbunny.mp4"), 32000, mono=False, start=1.0, end=2.5)
    assert surround.shape == (6, 48000)  # 5.1 track, 1.5 s
    np.testing.assert_allclose(
        surround.mean(0), load_audio(media("bigbuckbunny.mp4"), 32000, start=1.0, end=2.5)[0], atol=1e-5
    )


def test_resampling_is_band_limited(tmp_path):
    rate = 44100
    save_audio(tmp_path / "tones.wav", _tone(7000, 1.0, rate) + _tone(10000, 1.0, rate), rate, subtype="FLOAT")
    out = load_audio(tmp_path / "tones.wav", 16000)[0]
    assert out.shape == (16000,)
    spectrum = np.abs(np.fft.rfft(out * np.hanning(out.size)))
    freqs = np.fft.rfftfreq(out.size, 1 / 16000)
    level = lambda f: spectrum[np.abs(freqs - f) < 20].max()  # noqa: E731
    # 7 kHz is kept; 10 kHz is above the new Nyquist (8 kHz) and must not alias to 6 kHz
    assert level(7000) > 1000 * level(6000)


def test_save_load_round_trip(tmp_path):
    stereo = np.stack([_tone(220, 0.5, 24000), _tone(330, 0.5, 24000, amp=0.5)])
    path = save_audio(tmp_path / "sub" / "x.wav", torch.from_numpy(stereo), 24000)
    back = load_audio(path, 24000, mono=False)
    np.testing.assert_allclose(back, stereo, atol=1e-4)
    part = load_audio(path, 24000, mono=False, start=0.1, end=0.3)
    np.testing.assert_allclose(part, stereo[:, 2400:7200], atol=1e-4)


def test_audio_errors(media, tmp_path):
    with pytest.raises(AudioDecodeError, match="no audio stream"):
        load_audio(media("bikes.mp4"), 16000)
    with pytest.raises(AudioDecodeError, match="does not exist"):
        load_audio(tmp_path / "missing.wav", 16000)
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(np.random.default_rng(1).bytes(4096))
    with pytest.raises(AudioDecodeError, match="garbage.wav"):
        load_audio(garbage, 16000)
    with pytest.raises(InputError, match="sample_rate"):
        load_audio(media("bigbuckbunny.mp4"), 0)
    with pytest.raises(InputError):
        save_audio(tmp_path / "bad.wav", np.zeros((2, 3, 4), np.float32), 16000)


# --------------------------------------------------------------------------- export


def _streams(path):
    with av.open(str(path)) as c:
        return {s.type: (s.codec_context.name, float(s.duration * s.time_base)) for s in c.streams}


def _video_packets(path):
    with av.open(str(path)) as c:
        return [bytes(p) for p in c.demux(c.streams.video[0]) if p.size]


@pytest.mark.parametrize("seconds", [3.0, 8.0])  # music shorter (padded) and longer (trimmed)
def test_export_with_audio(media, tmp_path, seconds):
    rate = 32000
    music = _tone(440, seconds, rate)
    out = export_to_video_with_audio(str(media("bigbuckbunny.mp4")), music, rate, tmp_path / "o" / "with_music.mp4")
    streams = _streams(out)
    assert streams["video"][0] == "h264" and streams["audio"][0] == "aac"
    assert abs(streams["video"][1] - streams["audio"][1]) <= 1 / 25
    info = probe_video(out)
    assert info.num_frames == 132 and info.duration == pytest.approx(5.28)  # copied, not re-encoded
    back = load_audio(out, rate)[0]  # only the music: the source's own soundtrack is dropped
    assert abs(back.size / rate - info.duration) <= 1 / 25
    inside = back[rate // 2 : int(min(seconds, 5.28) * rate) - rate // 2]
    assert np.abs(inside).max() == pytest.approx(0.3, abs=0.03)
    if seconds < 5.28:  # padded with silence after the music ends
        assert np.abs(back[int(3.2 * rate) :]).max() < 0.01
    assert _video_packets(out) == _video_packets(media("bigbuckbunny.mp4"))  # bit-exact stream copy


def test_export_frames_torch_audio_and_odd_rate(tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (24, 50, 66, 3), dtype=np.uint8)
    audio = torch.from_numpy(np.stack([_tone(300, 1.0, 20000)] * 2))  # 20 kHz: not an AAC rate
    out = utils.export_to_video_with_audio(frames, audio, 20000, tmp_path / "frames.mp4", fps=12)
    info = probe_video(out)
    assert (info.num_frames, info.width, info.height) == (24, 66, 50)
    assert info.duration == pytest.approx(2.0)
    streams = _streams(out)
    assert abs(streams["video"][1] - streams["audio"][1]) <= 1 / 12
    assert load_audio(out, 20000, mono=False).shape[0] == 2


def test_export_errors(media, tmp_path):
    tone = _tone(440, 1.0, 16000)
    with pytest.raises(InputError, match="suffix"):
        export_to_video_with_audio(str(media("bikes.mp4")), tone, 16000, tmp_path / "noext")
    with pytest.raises(InputError, match="channels"):
        export_to_video_with_audio(str(media("bikes.mp4")), np.zeros((6, 100), np.float32), 16000, tmp_path / "a.mp4")
    with pytest.raises(VideoDecodeError):
        export_to_video_with_audio(str(tmp_path / "missing.mp4"), tone, 16000, tmp_path / "b.mp4")
    with pytest.raises(MediaExportError, match="x.webm"):  # WebM cannot hold AAC
        export_to_video_with_audio(str(media("bikes.mp4")), tone, 16000, tmp_path / "x.webm")
    assert list(tmp_path.glob("*.partial*")) == [] and not (tmp_path / "x.webm").exists()


def test_utils_reexports():
    from vmas_diffusion import media

    assert utils.load_video is media.load_video and utils.load_audio is media.load_audio
    assert utils.export_to_video_with_audio is media.export_to_video_with_audio


@pytest.mark.parametrize("size", [(32, 48), (50, 72), (33, 47)])
def test_resize_to_sizes_where_decord_scaler_breaks(size):
    """decord returns 4 channels at some sizes; load_video falls back to PyAV there."""
    from pathlib import Path

    clip_path = Path(__file__).resolve().parents[1] / "vmas_diffusion" / "assets" / "demo_bikes.mp4"
    clip = load_video(clip_path, fps=4, size=size)
    assert clip.frames.shape == (24,) + size + (3,)
    reference = load_video(clip_path, fps=4, size=size, backend="pyav")
    np.testing.assert_array_equal(clip.timestamps, reference.timestamps)
    chunks = list(iter_video_chunks(clip_path, fps=4, chunk_seconds=2.0, size=size, backend="decord"))
    assert sum(c.frames.shape[0] for c in chunks) == 24 and chunks[0].frames.shape[1:] == size + (3,)
