"""scripts/select_held_note_clips.py: a training folder of the clips whose music holds notes."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from test_music_content import RATE, held_chords

ROOT = Path(__file__).resolve().parents[1]


def select(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "scripts" / "select_held_note_clips.py"), "--workers", "1", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def make_set(root: Path) -> Path:
    """A set folder: held chords under a pan, the same chords cut to short notes under cuts and under a drift."""
    data = root / "set"
    (data / "music").mkdir(parents=True)
    (data / "videos").mkdir()
    tones = held_chords(4.0)
    short = tones * ((np.arange(tones.size) / RATE) % 0.25 < 0.1)
    clips = {"train_held": tones, "train_short": short, "train_still": tones}
    for name, audio in clips.items():
        sf.write(data / "music" / f"{name}.wav", audio, RATE)
    items = [{"video": f"videos/{n}.mp4", "audio": f"music/{n}.wav", "id": n} for n in clips]
    (data / "train.jsonl").write_text("".join(json.dumps(item) + "\n" for item in items))
    kinds = {"train_held": "pan", "train_short": "cuts", "train_still": "drift"}
    (root / "meta.json").write_text(json.dumps({n: {"video_kind": k} for n, k in kinds.items()}))
    return data


def kept(out: Path) -> list:
    return [json.loads(line)["id"] for line in (out / "train.jsonl").read_text().splitlines()]


def test_keeps_the_clips_that_hold_notes_and_links_their_media(tmp_path):
    data, out = make_set(tmp_path), tmp_path / "held"
    done = select("--data", str(data), "--out", str(out), "--min-sustained", "0.6")
    assert done.returncode == 0, done.stderr
    assert kept(out) == ["train_held", "train_still"]
    assert (out / "music" / "train_held.wav").is_file() and (out / "videos").resolve() == (data / "videos").resolve()
    shares = json.loads((out / "sustained.json").read_text())
    assert shares["train_held"] > 0.9 and shares["train_short"] < 0.1

    # a rerun reads the kept shares (a changed one shows it was not measured again), and skips a kind
    shares["train_short"] = 0.95
    (out / "sustained.json").write_text(json.dumps(shares))
    done = select("--data", str(data), "--out", str(out), "--min-sustained", "0.6",
                  "--meta", str(tmp_path / "meta.json"), "--skip-kinds", "drift")
    assert done.returncode == 0, done.stderr
    assert kept(out) == ["train_held", "train_short"]


def test_bad_arguments_fail_with_one_line(tmp_path):
    data = make_set(tmp_path)
    for args in (["--data", str(tmp_path), "--out", str(tmp_path / "o")],  # no train.jsonl
                 ["--data", str(data), "--out", str(tmp_path / "o"), "--min-sustained", "1.5"],
                 ["--data", str(data), "--out", str(tmp_path / "o"), "--skip-kinds", "drift"]):
        done = select(*args)
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
