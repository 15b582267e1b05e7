"""``vmas-diffusion prepare``: decode a manifest's videos into training shards.

For every clip of the manifest, every training window (``window_seconds`` long, every
``hop_seconds``; a last shorter window is kept when at least ``min_seconds`` long) becomes one
sample holding:

=====================  ======================  ==================================================
name                   shape / dtype           what
=====================  ======================  ==================================================
``frames``             ``[T, H, W, 3]`` uint8   video frames at the video encoder's fps and size
                                                (``video_input: frames``), or
``features``           ``[T, F]`` float32       the encoder's frozen per-frame features
                                                (``video_input: features``)
``visual_envelope``    ``[T]`` float32          visual beat envelope in ``[0, 1]`` at the video fps
``codes``              ``[K, Tm]`` int64        codec tokens (discrete codecs)
``latents``            ``[D, Tm]`` float32      normalised codec latents (continuous codecs)
``onset``              ``[Tm]`` float32         music onset envelope in ``[0, 1]`` (beat-head target)
=====================  ======================  ==================================================

``Tm = round(duration * codec.frame_rate)``. The codec runs here, once, so training never does.

Bad clips (missing, corrupt, no audio, too short) are skipped and logged to ``errors.jsonl``
without stopping. Work is resumable: shards are renamed into place only when complete and
``progress.jsonl`` records an item as done only once its shard is; a rerun skips what is done,
drops any ``*.tar.tmp`` left by an interruption and continues with the next shard number.

Preparation scales out over processes and machines (:func:`prepare_parallel`, ``--num-workers``,
``accelerate launch``): process ``rank`` of ``world_size`` takes the manifest items whose position
``i`` has ``i % world_size == rank`` and writes its own folder ``OUT/part-RRRRR/`` (shards, index,
progress, errors), so no two processes write one file. Sample keys and contents do not depend on
the split: ``W`` processes write the samples one process would, only spread over ``W`` folders,
which training reads as one (:mod:`vmas_diffusion.data.sources`). Each process resumes from its
own folder and skips what any process recorded as done, so a rerun may use another split.
"""

import json
import logging
import os
import re
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Union

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import ConfigError, InputError, MediaError
from .manifest import ManifestItem, read_manifest
from .shards import SampleRef, ShardWriter, read_index, write_index
from .sources import PART_GLOB, PART_PATTERN

logger = logging.getLogger(__name__)

PROGRESS_NAME = "progress.jsonl"
ERRORS_NAME = "errors.jsonl"
VIDEO_INPUTS = ("frames", "features")


@dataclass
class PrepareOptions:
    """How windows are cut and what is stored (the recipe's ``data`` section supplies them)."""

    #: frames per second the video is sampled at (the video encoder's ``fps``)
    fps: float
    #: square frame side in pixels (the video encoder's ``frame_size``)
    frame_size: int
    window_seconds: float = 10.0
    #: distance between window starts; None = ``window_seconds`` (no overlap)
    hop_seconds: Optional[float] = None
    #: a last window shorter than ``window_seconds`` is kept when at least this long
    min_seconds: float = 2.0
    #: "frames" keeps uint8 frames (the frame backbone trains); "features" stores frozen backbone features
    video_input: str = "frames"
    #: samples per shard
    shard_size: int = 256

    def __post_init__(self):
        if self.fps <= 0 or self.frame_size <= 0:
            raise ConfigError(f"prepare: fps and frame_size must be > 0, got {self.fps}, {self.frame_size}")
        if not 0 < self.min_seconds <= self.window_seconds:
            raise ConfigError(
                f"prepare: need 0 < min_seconds <= window_seconds, got {self.min_seconds}, {self.window_seconds}"
            )
        if self.hop_seconds is not None and self.hop_seconds <= 0:
            raise ConfigError(f"prepare: hop_seconds must be > 0, got {self.hop_seconds}")
        if self.video_input not in VIDEO_INPUTS:
            raise ConfigError(f"prepare: video_input must be one of {VIDEO_INPUTS}, got {self.video_input!r}")
        if self.shard_size < 1:
            raise ConfigError(f"prepare: shard_size must be >= 1, got {self.shard_size}")


@dataclass
class PrepareReport:
    out_dir: Path
    num_items: int = 0
    num_done: int = 0
    num_failed: int = 0
    num_skipped: int = 0  # already done by an earlier run
    num_samples: int = 0  # in the whole folder
    new_shards: List[str] = field(default_factory=list)
    failures: List[dict] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{self.num_done} clip(s) prepared, {self.num_failed} failed, {self.num_skipped} already done; "
            f"{self.num_samples} window(s) in {self.out_dir}"
        )


def window_spans(start: float, end: float, options: PrepareOptions) -> List[tuple]:
    """``[(t0, t1), ...]`` training windows inside ``[start, end)`` seconds."""
    hop = options.hop_seconds or options.window_seconds
    spans = []
    t0 = start
    while t0 + options.min_seconds <= end + 1e-6:
        spans.append((round(t0, 6), round(min(t0 + options.window_seconds, end), 6)))
        if t0 + options.window_seconds >= end:
            break
        t0 += hop
    return spans


def _safe_key(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text)[:80] or "clip"


def _fit_channels(audio: np.ndarray, channels: int) -> np.ndarray:
    """``(C, S)`` -> ``(channels, S)`` (average to mono, repeat mono to stereo)."""
    if audio.shape[0] == channels:
        return audio
    if channels == 1:
        return audio.mean(axis=0, keepdims=True)
    if audio.shape[0] == 1:
        return np.repeat(audio, channels, axis=0)
    raise MediaError(f"cannot map {audio.shape[0]} audio channels onto the codec's {channels}")


class WindowEncoder:
    """Turns one window of one clip into a sample's tensors (frozen codec and, optionally, frozen backbone)."""

    def __init__(self, codec, options: PrepareOptions, video_encoder=None):
        if options.video_input == "features" and video_encoder is None:
            raise ConfigError("prepare: video_input 'features' needs the video encoder to compute them")
        if not (codec.is_discrete or codec.is_continuous):
            raise ConfigError(f"prepare: codec {type(codec).__name__} offers neither codes nor latents")
        self.codec = codec.eval()
        self.video_encoder = video_encoder.eval() if video_encoder is not None else None
        self.options = options
        self._clip_key, self._clip = None, None  # the last clip's (_whole_clip)

    def _whole_clip(self, item: ManifestItem, start: float, end: float):
        """Frames and visual beat envelope of the whole span ``[start, end)`` of a clip, decoded
        once for all its windows.

        The envelope is computed over the whole clip, as the pipeline does over the whole video,
        never per window: its motion signal is scaled by a percentile of the clip it sees, so a
        window alone would get other values than the model is given at generation time.
        """
        from ..beats import visual_beats
        from ..media import load_video

        key = (item.video, start, end)
        if key != self._clip_key:
            opts = self.options
            frames = np.asarray(load_video(item.video, fps=opts.fps, start=start, end=end, size=opts.frame_size).frames)
            if frames.shape[0] < 2:
                raise MediaError(f"{item.video}: {start:.2f}-{end:.2f} s decodes to {frames.shape[0]} frame(s)")
            envelope = np.asarray(visual_beats(frames, opts.fps).envelope, dtype=np.float32)
            self._clip_key, self._clip = key, (frames, envelope)
        return self._clip

    @torch.no_grad()
    def __call__(self, item: ManifestItem, t0: float, t1: float, clip_span: Optional[tuple] = None) -> dict:
        """One window ``[t0, t1)``; ``clip_span`` ``(start, end)`` is the whole span its clip is cut
        from, whose frames and visual envelope the window's are sliced from (default: the window itself)."""
        from ..beats import onset_envelope
        from ..media import load_audio
        from ..media.video import target_times

        opts = self.options
        start, end = clip_span or (t0, t1)
        frames, envelope = self._whole_clip(item, start, end)
        first = int(round((t0 - start) * opts.fps))  # the window's sampling instants are the clip's from here
        count = len(target_times(t0, t1, opts.fps))
        frames, envelope = frames[first : first + count], envelope[first : first + count]
        if frames.shape[0] < 2:
            raise MediaError(f"{item.video}: window {t0:.2f}-{t1:.2f} s decodes to {frames.shape[0]} frame(s)")
        codec = self.codec
        sr = int(codec.sample_rate)
        audio = load_audio(item.audio or item.video, sr, mono=codec.channels == 1, start=t0, end=t1)
        audio = _fit_channels(np.asarray(audio, dtype=np.float32), int(codec.channels))
        num_music = max(1, int(round((t1 - t0) * float(codec.frame_rate))))
        num_samples = int(round(num_music * sr / float(codec.frame_rate)))
        if audio.shape[1] == 0 or not np.any(audio):
            raise MediaError(f"{item.audio or item.video}: window {t0:.2f}-{t1:.2f} s has no audible music")
        audio = np.pad(audio, ((0, 0), (0, max(0, num_samples - audio.shape[1]))))[:, :num_samples]
        wav = torch.from_numpy(audio)[None]  # [1, C, S]
        tensors = {"visual_envelope": torch.from_numpy(envelope)}
        if opts.video_input == "frames":
            tensors["frames"] = torch.from_numpy(np.ascontiguousarray(frames))
        else:
            feats = self.video_encoder.encode_frames(torch.from_numpy(frames)[None])  # [1, T, F]
            tensors["features"] = feats[0].float()
        if codec.is_discrete:
            tensors["codes"] = codec.tokenize(wav)[0, :, :num_music].long()
        if codec.is_continuous:
            tensors["latents"] = codec.encode(wav)[0, :, :num_music].float()
        onset = onset_envelope(audio, sr, float(codec.frame_rate), num_music)
        tensors["onset"] = torch.from_numpy(np.asarray(onset, dtype=np.float32))
        music_frames = {t.shape[-1] for k, t in tensors.items() if k in ("codes", "latents", "onset")}
        if len(music_frames) != 1:
            raise MediaError(f"{item.video}: codec returned fewer frames than the window needs ({music_frames})")
        return tensors


def _load_progress(out_dir: Path) -> dict:
    done = {}
    path = out_dir / PROGRESS_NAME
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:  # a line cut by an interruption: that item is redone
                    continue
                done[entry["id"]] = entry
    return done


def _append_jsonl(path: Path, entries: Sequence[dict]) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        for entry in entries:
            handle.write(json.dumps(entry) + "\n")
        handle.flush()


def prepare_dataset(
    manifest: Union[str, Path, List[ManifestItem]],
    out_dir: Union[str, Path],
    codec,
    options: PrepareOptions,
    video_encoder=None,
    progress: bool = True,
    item_callback: Optional[Callable[[ManifestItem, str], None]] = None,
    retry_failed: bool = False,
    rank: int = 0,
    world_size: int = 1,
) -> PrepareReport:
    """Decode, window, encode and shard every clip of ``manifest`` into ``out_dir``.

    Args:
        manifest: a JSON Lines manifest path or already-read items.
        out_dir: the dataset folder (shards, ``index.json``, ``progress.jsonl``, ``errors.jsonl``).
        codec: the frozen music codec (:class:`~vmas_diffusion.models.codecs.MusicCodec`).
        options: :class:`PrepareOptions`.
        video_encoder: the video encoder, needed for ``video_input: features``.
        progress: show a tqdm bar.
        item_callback: called after each clip with ``(item, "done" | "failed")``.
        retry_failed: on a rerun, try the clips that failed before again (default: they stay skipped).
        rank, world_size: this process's share of the manifest (module docstring); with
            ``world_size > 1`` it writes ``out_dir/part-{rank:05d}``.

    Returns:
        a :class:`PrepareReport`. Raises :class:`InputError` if the folder was prepared with
        other settings (resuming must not mix two kinds of samples).
    """
    if not (isinstance(world_size, int) and isinstance(rank, int) and 0 <= rank < world_size):
        raise ConfigError(f"prepare: need 0 <= rank < world_size, got rank={rank!r}, world_size={world_size!r}")
    root = Path(out_dir)
    out_dir = root / PART_PATTERN.format(rank) if world_size > 1 else root
    items = read_manifest(manifest) if isinstance(manifest, (str, Path)) else list(manifest)
    out_dir.mkdir(parents=True, exist_ok=True)  # after the manifest: a bad one leaves no folder behind
    info = {
        "options": asdict(options),
        "sample_rate": int(codec.sample_rate),
        "channels": int(codec.channels),
        "music_frame_rate": float(codec.frame_rate),
        "codes": bool(codec.is_discrete),
        "latents": bool(codec.is_continuous),
        "num_codebooks": int(codec.num_codebooks) if codec.is_discrete else None,
        "latent_dim": int(codec.latent_dim) if codec.is_continuous else None,
    }
    refs: List[SampleRef] = []
    if (out_dir / "index.json").exists():
        refs, old_info = read_index(out_dir, allow_empty=True)
        if old_info != info:
            raise InputError(
                f"{out_dir} was prepared with other settings ({old_info}); use a new --out folder to prepare with {info}"
            )
    for stale in out_dir.glob("*.tar.tmp"):  # an interrupted shard: its items are not marked done
        stale.unlink()
    numbers = [int(p.name[6:12]) for p in out_dir.glob("shard-*.tar")]
    next_number = max(numbers) + 1 if numbers else 0
    done = {}  # what any process recorded, under this split or an earlier one; done wins over failed
    for folder in [root, *sorted(p for p in root.glob(PART_GLOB) if p.is_dir())]:
        for key, entry in _load_progress(folder).items():
            if key not in done or entry.get("status") == "done":
                done[key] = entry
    if retry_failed:
        done = {key: entry for key, entry in done.items() if entry.get("status") == "done"}
    report = PrepareReport(out_dir=out_dir, num_items=len(range(rank, len(items), world_size)))
    encode = WindowEncoder(codec, options, video_encoder)
    from ..media import probe_video

    writer: Optional[ShardWriter] = None
    pending: List[dict] = []  # done entries of items in the open shard

    def finish_shard():
        nonlocal writer, next_number, pending
        if writer is None:
            return
        new_refs = writer.close()
        refs.extend(new_refs)
        report.new_shards.append(writer.name)
        write_index(out_dir, refs, info)
        _append_jsonl(out_dir / PROGRESS_NAME, [dict(e, shard=writer.name) for e in pending])
        writer, pending = None, []
        next_number += 1

    bar = tqdm(items, desc="prepare", unit="clip", disable=not progress)
    try:
        for ordinal, item in enumerate(bar):
            if ordinal % world_size != rank:
                continue  # another process's share
            if item.id in done:
                report.num_skipped += 1
                continue
            try:
                meta = probe_video(item.video)
                if item.audio is None and not meta.has_audio:
                    raise MediaError(f"{item.video} has no audio track and the manifest gives no 'audio' file")
                start = item.start or 0.0
                end = min(item.end, meta.duration) if item.end is not None else meta.duration
                spans = window_spans(start, end, options)
                if not spans:
                    raise MediaError(
                        f"{item.video}: {end - start:.2f} s between start and end is shorter than min_seconds={options.min_seconds}"
                    )
                samples = [(t0, t1, encode(item, t0, t1, clip_span=(start, end))) for t0, t1 in spans]
            except Exception as err:  # noqa: BLE001 - any decoder failure skips this clip, never the run
                failure = {
                    "id": item.id,
                    "video": item.video,
                    "line": item.line,
                    "error": f"{type(err).__name__}: {err}",
                }
                if not isinstance(err, (MediaError, InputError)):
                    failure["traceback"] = traceback.format_exc(limit=4)
                logger.warning("skipping %s (manifest line %d): %s", item.video, item.line, failure["error"])
                _append_jsonl(out_dir / ERRORS_NAME, [failure])
                _append_jsonl(out_dir / PROGRESS_NAME, [{"id": item.id, "status": "failed"}])
                report.failures.append(failure)
                report.num_failed += 1
                if item_callback:
                    item_callback(item, "failed")
                continue
            if writer is None:
                writer = ShardWriter(out_dir, next_number)
            for index, (t0, t1, tensors) in enumerate(samples):
                key = f"{ordinal:08d}_{_safe_key(item.id)}_w{index:04d}"
                sample_meta = {
                    "id": item.id,
                    "video": item.video,
                    "audio": item.audio,
                    "start": t0,
                    "end": t1,
                    "window": index,
                    "fps": float(options.fps),
                    "music_frame_rate": float(codec.frame_rate),
                }
                writer.write(key, tensors, sample_meta)
            pending.append({"id": item.id, "status": "done", "windows": len(samples)})
            report.num_done += 1
            bar.set_postfix(windows=len(refs) + len(writer), failed=report.num_failed)
            if len(writer) >= options.shard_size:
                finish_shard()
            if item_callback:
                item_callback(item, "done")
        finish_shard()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        bar.close()
    if not refs:
        write_index(out_dir, refs, info)
    report.num_samples = len(refs)
    return report


def prepare_from_recipe(
    manifest: Union[str, Path],
    out_dir: Union[str, Path],
    recipe,
    overrides: Optional[Sequence[str]] = None,
    progress: bool = True,
    retry_failed: bool = False,
    rank: int = 0,
    world_size: int = 1,
) -> PrepareReport:
    """Build the recipe's codec and video encoder and prepare ``manifest`` with its ``data`` section.

    The codec is the one training uses (``train.codec_checkpoint`` / ``musicgen_checkpoint`` /
    ``init_from``); with ``data.video_input: features`` the video encoder's backbone must be frozen.
    """
    from ..building import build_training_components
    from ..pipelines import VideoToMusicPipeline
    from ..recipes import load_recipe

    cfg = load_recipe(recipe, list(overrides or []))
    # the codec training will use; seeded, so that a recipe's randomly initialised codec (tests) is the
    # same in every process of a parallel prepare
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(cfg.train.seed))
        components = build_training_components(cfg, with_generator=False, load_pipeline=VideoToMusicPipeline.from_pretrained)
    enc = components["video_encoder"]
    options = prepare_options(cfg, enc)
    if options.video_input == "features" and not getattr(enc, "backbone_frozen", False):
        raise ConfigError(
            "data.video_input 'features' stores frozen backbone features, but this video encoder trains its backbone "
            "(use a clip/hiera backbone or freeze_backbone: true, or video_input: frames)"
        )
    return prepare_dataset(
        manifest, out_dir, components["codec"], options, video_encoder=enc, progress=progress, retry_failed=retry_failed,
        rank=rank, world_size=world_size,
    )


def launcher_share() -> tuple:
    """``(rank, world_size)`` of this process under ``accelerate launch`` / ``torchrun`` (their ``RANK`` and
    ``WORLD_SIZE``), ``(0, 1)`` when run alone."""
    try:
        rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    except ValueError as err:
        raise ConfigError(f"RANK / WORLD_SIZE must be integers: {err}") from err
    return rank, world


def _prepare_worker(threads: int, kwargs: dict) -> PrepareReport:
    torch.set_num_threads(threads)  # the machine's cores split between the workers
    return prepare_from_recipe(**kwargs)


def prepare_parallel(
    manifest: Union[str, Path],
    out_dir: Union[str, Path],
    recipe,
    overrides: Optional[Sequence[str]] = None,
    num_workers: int = 1,
    progress: bool = True,
    retry_failed: bool = False,
    rank: Optional[int] = None,
    world_size: Optional[int] = None,
) -> List[PrepareReport]:
    """:func:`prepare_from_recipe` over ``num_workers`` processes of this machine, each a share of the
    manifest; under a launcher with ``W`` processes (``rank``/``world_size``, default
    :func:`launcher_share`) worker ``r`` of process ``R`` is share ``R * num_workers + r`` of
    ``W * num_workers``. Returns the report of each share this process ran (the first shows the bar)."""
    if rank is None or world_size is None:
        rank, world_size = launcher_share()
    if not (isinstance(num_workers, int) and num_workers >= 1):
        raise ConfigError(f"prepare: num_workers must be an integer >= 1, got {num_workers!r}")
    common = dict(manifest=manifest, out_dir=out_dir, recipe=recipe, overrides=list(overrides or []),
                  retry_failed=retry_failed, world_size=world_size * num_workers)
    if num_workers == 1:
        return [prepare_from_recipe(**common, rank=rank, progress=progress)]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    threads = max(1, torch.get_num_threads() // num_workers)
    context = multiprocessing.get_context("spawn")  # no forked torch or decoder state
    with ProcessPoolExecutor(num_workers, mp_context=context) as pool:
        futures = [
            pool.submit(_prepare_worker, threads, dict(common, rank=rank * num_workers + r, progress=progress and r == 0))
            for r in range(num_workers)
        ]
        return [future.result() for future in futures]


def prepare_options(cfg, video_encoder) -> PrepareOptions:
    """:class:`PrepareOptions` from a validated recipe's ``data`` section and its video encoder."""
    data = cfg.data
    return PrepareOptions(
        fps=float(video_encoder.config.fps),
        frame_size=int(video_encoder.config.frame_size),
        window_seconds=float(data.window_seconds),
        hop_seconds=None if data.hop_seconds is None else float(data.hop_seconds),
        min_seconds=float(data.min_seconds),
        video_input=str(data.video_input),
        shard_size=int(data.shard_size),
    )
