"""The command line: outputs on good input, one line and exit code 2 on bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vmas_diffusion.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY_AR = str(ROOT / "recipes" / "tiny_ar.yaml")
TINY_LDM = str(ROOT / "recipes" / "tiny_ldm.yaml")


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("vmas-diffusion: error: ")
    return err[0]


@pytest.fixture(scope="module")
def saved_pipeline(tmp_path_factory):
    from vmas_diffusion import VideoToMusicPipeline

    folder = tmp_path_factory.mktemp("pipe")
    VideoToMusicPipeline.from_recipe(TINY_AR).save_pretrained(folder)
    return folder


def test_generate_mp4_with_music(media, saved_pipeline, tmp_path, capsys):
    from vmas_diffusion.media import load_audio, probe_video

    out = tmp_path / "with_music.mp4"
    clip = media("carphone_pristine.mp4")
    assert main(["generate", str(clip), "-o", str(out), "--model", str(saved_pipeline), "--duration", "1.5"]) == 0
    info = probe_video(out)
    assert info.has_audio
    assert abs(info.duration - probe_video(clip).duration) < 0.2  # music padded/trimmed to the video
    assert load_audio(out, 16000).shape[-1] > 0


def test_generate_wav_from_recipe(media, tmp_path):
    import soundfile

    out = tmp_path / "music.wav"
    assert main(["generate", str(media("carphone_pristine.mp4")), "-o", str(out), "--model", TINY_AR, "--duration", "1"]) == 0
    data, sample_rate = soundfile.read(out)
    assert abs(len(data) / sample_rate - 1.0) < 1e-3


def test_generate_sampling_options_reach_the_sampler(media, saved_pipeline, tmp_path):
    """Greedy decoding (--temperature 0) makes the seed irrelevant; sampling (the model's default) does not."""
    import soundfile

    def music(seed, *extra):
        out = tmp_path / f"m{seed}{''.join(extra)}.wav"
        argv = ["generate", str(media("carphone_pristine.mp4")), "-o", str(out), "--model", str(saved_pipeline),
                "--duration", "1", "--seed", str(seed), *extra]
        assert main(argv) == 0
        return soundfile.read(out)[0]

    greedy = ("--temperature", "0", "--top-k", "5")
    assert (music(0, *greedy) == music(1, *greedy)).all()
    assert not (music(0) == music(1)).all()


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["generate", "{missing}", "-o", "{out}", "--model", TINY_AR], "missing.mp4"),
        (["generate", "{corrupt}", "-o", "{out}", "--model", TINY_AR], "corrupt.mp4"),
        (["generate", "{audio_only}", "-o", "{out}", "--model", TINY_AR], "video stream"),
        (["generate", "{video}", "-o", "{out}", "--model", TINY_AR, "--backend", "xyz"], "invalid choice"),
        (["generate", "{video}", "-o", "{out}", "--model", TINY_AR, "--backend", "ldm"], "'ar' pipeline"),
        (["generate", "{video}", "-o", "{out}", "--model", "{empty_dir}"], "model_index.json"),
        (["generate", "{video}", "-o", "{out}", "--model", "{foreign}"], "not a VideoToMusicPipeline"),
        (["generate", "{video}", "-o", "{out}", "--model", "{bad_recipe}"], "genrator"),
        (["generate", "{video}", "-o", "{tmp}/out.avi", "--model", TINY_AR], ".mp4 or .wav"),
        (["generate", "{video}", "-o", "{out}", "--model", TINY_AR, "--temperature", "-1"], "temperature"),
        (["generate", "{video}", "-o", "{out}", "--model", TINY_LDM, "--temperature", "0.8"], "takes no 'temperature'"),
        (["generate", "{video}", "-o", "{out}", "--model", TINY_AR, "--flux-guidance", "0.5"], "takes no 'flux_guidance_scale'"),
        (["generate", "{video}", "-o", "{out}", "--model", TINY_LDM, "--flux-guidance", "0.5"], "flux_map"),
        (["generate", "{video}", "-o", "{out}", "--model", TINY_LDM, "--flux-guidance", "-1"], "flux_guidance_scale"),
        (["generate", "{video}", "-o", "{out}", "--model", TINY_LDM, "--flux-smoothing", "-1"], "flux_guidance_smoothing"),
        (["generate", "{video}", "-o", "{out}", "--model", TINY_LDM, "--flux-reach", "nan"], "flux_guidance_reach"),
        (["generate", "{video}", "-o", "{out}", "--model", TINY_LDM, "--flux-contrast", "-2"], "flux_guidance_contrast"),
        (["frobnicate"], "invalid choice"),
        (["generate", "{video}", "-o", "{out}", "--model", TINY_AR, "--threads", "0"], "positive number of threads"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(argv, needle, media, tmp_path, capsys):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(os.urandom(4096))
    audio_only = tmp_path / "audio_only.wav"
    import numpy as np
    import soundfile

    soundfile.write(audio_only, np.zeros(8000, dtype=np.float32), 8000)
    (tmp_path / "empty").mkdir()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "model_index.json").write_text(json.dumps({"_class_name": "AudioLDM2Pipeline"}))
    bad_recipe = tmp_path / "bad.yaml"
    bad_recipe.write_text(Path(TINY_AR).read_text() + "\ngenrator: {}\n")
    names = dict(
        missing=tmp_path / "missing.mp4", corrupt=corrupt, audio_only=audio_only, out=tmp_path / "out.mp4",
        video=media("carphone_pristine.mp4"), empty_dir=tmp_path / "empty", foreign=foreign, bad_recipe=bad_recipe, tmp=tmp_path,
    )
    assert main([a.format(**names) for a in argv]) == 2
    assert needle in error_line(capsys)


def test_console_script_exit_code(tmp_path):
    """The installed entry point, as a user runs it: no traceback, one line, exit 2."""
    exe = Path(sys.executable).with_name("vmas-diffusion")
    proc = subprocess.run([str(exe), "generate", str(tmp_path / "nope.mp4"), "-o", str(tmp_path / "o.mp4")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "nope.mp4" in proc.stderr


def test_thread_default_follows_the_environment_and_the_cores(monkeypatch):
    import torch

    from vmas_diffusion import threads
    from vmas_diffusion.errors import InputError

    monkeypatch.setenv(threads.ENV, "3")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert threads.default_threads() == 3
    monkeypatch.delenv(threads.ENV)
    assert threads.default_threads() == 2
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert 1 <= threads.default_threads() <= min(threads.physical_cores(), threads.MAX_DEFAULT)
    monkeypatch.setenv(threads.ENV, "many")
    with pytest.raises(InputError, match="VMAS_NUM_THREADS"):
        threads.default_threads()
    before = torch.get_num_threads()
    assert threads.set_threads(1) == before and torch.get_num_threads() == 1
    threads.set_threads(before)
