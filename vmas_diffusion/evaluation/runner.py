"""``vmas-diffusion evaluate``: generate music for every clip with every model and tabulate.

Per clip (once, whatever the models; cached, see :mod:`.analysis`): visual beats from the frames,
and, where the clip has real music, its beats, FAD window embeddings and CLAP embedding. Per (model, clip): the
generation (cached, see :mod:`.cache`), its beats, beat scores against the visual beats and
against the real music's beats, FAD embeddings, CLAP and contrastive scores, the beat offsets.
Per model: FAD of the pooled generated windows against the pooled real-music windows, means of
the per-clip scores, video -> generated-music retrieval recall from the pipeline's contrastive
embeddings, real-time factor and peak memory. Plots: one beat-alignment PNG per (clip, model),
one beat-offset histogram per model.

Scores and what they mean:

- FAD: Fréchet distance between Gaussians fitted to the generated and the real music's window
  embeddings (lower is closer to the real music; depends on the embedder named in the table).
- CLAP score: cosine of the CLAP audio embeddings of the generated and the real music of the same
  clip (needs a local laion-clap checkpoint; text-music CLAP needs CLAP's text tower, which cannot
  be built offline, so it is not offered).
- Video-music score: cosine of the pipeline's own contrastive video and music embeddings
  (``pipe.embed_video`` / ``pipe.embed_music``); "n/a" for a pipeline without a contrastive head.
- BCS/BHS/F1, both forms (:mod:`vmas_diffusion.beats.metrics`), of the generated music's beats
  against the visual beats and against the real music's beats.
- R@1/R@5: each clip's video embedding retrieving its own generated music among all generated
  pieces of the set, with the chance level.
- Harmonic share, sustained pitched share, onsets per second (:mod:`.music_content`): is it
  music with tones, or drums only; the real music's values are the reference.
- Pace correlation: Spearman rank correlation, across clips, of the video's pace (visual beats
  per minute) with the generated music's tempo and with its onset density (the real music's
  own correlation is the reference): does busier footage get busier music.
- Real-time factor: generation seconds per second of music; peak memory: CUDA peak allocation,
  or the rise of the process's resident memory on CPU.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from ..defaults import resolve_model
from ..errors import CheckpointError, InputError, VMASError
from .analysis import ClipAnalysis, analysis_key, load_analysis, save_analysis
from .cache import GenerationCache, GenerationRecord, generation_key, model_fingerprint
from .dataset import EvalClip, load_eval_set, safe_name
from .embedders import AudioEmbedder, build_embedder
from .fad import frechet_audio_distance
from .metrics import PeakMemory, beat_offsets, cosine, mean_or_none
from .music_content import onset_density, pace_correlation, tonal_shares
from .plots import plot_offset_histogram, plot_pace
from .report import ALIGNMENT_KEYS, BEAT_KEYS, EvaluationReport, ModelColumn, write_report

logger = logging.getLogger(__name__)

PipelineLoader = Callable[[str], Any]


@dataclass
class EvaluationConfig:
    """Settings of an evaluation run; all of them except the analysis ones enter the cache key."""

    seed: int = 0
    num_inference_steps: Optional[int] = None
    guidance_scale: Optional[float] = None  # None: each model's own (defaults.default_guidance)
    duration: Optional[float] = None
    num_candidates: int = 1  # best-of-N in the pipeline call
    pace_weight: float = 0.0  # best-of-N's pace term
    sync_beats: bool = False  # warp each generation onto the pipeline's visual beats (beats.sync)
    max_stretch: Optional[float] = None  # beat sync's limit; None: its default
    sampling: dict[str, Any] = field(default_factory=dict)  # the generator's own options (AR: top_k, temperature)
    # analysis (not part of the generation, so not in the cache key)
    beat_tolerance: float = 0.1  # seconds, the hit window of the windowed beat scores
    visual_fps: float = 25.0  # frames per second decoded for the visual beats
    visual_size: int = 128  # frames are resized to this square for the visual beats
    reference_sample_rate: int = 32000  # real music is decoded at this rate
    plots: bool = True

    def for_model(self, model: str) -> "EvaluationConfig":
        """These settings with the guidance resolved for one model (its recommended one when unset)."""
        if self.guidance_scale is not None:
            return self
        from ..defaults import default_guidance

        return replace(self, guidance_scale=default_guidance(model))

    def generation_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of the pipeline call (besides video and generator)."""
        kwargs = {
            "duration": self.duration,
            "num_inference_steps": self.num_inference_steps,
            "guidance_scale": float(self.guidance_scale),
        }
        if self.num_candidates != 1:  # only when used, so the keys of plain generations stay as they were
            kwargs["num_candidates"] = int(self.num_candidates)
        if self.pace_weight:
            kwargs["pace_weight"] = float(self.pace_weight)
        return {**kwargs, **self.sampling}

    def sync_kwargs(self) -> dict[str, Any]:
        """Beat-sync settings (applied after the call); empty without sync."""
        if not self.sync_beats:
            return {}
        return {"max_stretch": self.max_stretch} if self.max_stretch is not None else {}

    def cache_kwargs(self) -> dict[str, Any]:
        """What decides a cached generation besides model, clip and seed."""
        extra = {"sync_beats": self.sync_kwargs()} if self.sync_beats else {}
        return {**self.generation_kwargs(), **extra}


def default_pipeline_loader(model: str, seed: int = 0):
    """A saved pipeline folder (``from_pretrained``) or a recipe YAML (``from_recipe``, random
    weights drawn under ``torch.manual_seed(seed)`` so the same recipe gives the same model)."""
    from ..pipelines import VideoToMusicPipeline

    path = Path(model)
    if path.is_file() and path.suffix in (".yaml", ".yml"):
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return VideoToMusicPipeline.from_recipe(str(path))
    return VideoToMusicPipeline.from_pretrained(str(path))


class Evaluator:
    """Runs the evaluation of several models on one evaluation set.

    Args:
        data: folder of videos or JSON Lines manifest (:mod:`.dataset`).
        out_dir: where ``evaluation.{md,json}``, ``plots/`` and ``cache/`` go.
        config: generation and analysis settings.
        fad_embedder: embedder spec for FAD (:func:`.embedders.build_embedder`).
        clap_checkpoint: local laion-clap checkpoint for the CLAP score (None: n/a).
        max_videos: evaluate the first N clips only.
        progress: show tqdm bars.
        load_pipeline: ``model path -> pipeline``; default :func:`default_pipeline_loader`.
    """

    def __init__(
        self,
        data: str | Path,
        out_dir: str | Path,
        config: EvaluationConfig | None = None,
        fad_embedder: str = "mel",
        clap_checkpoint: Optional[str] = None,
        max_videos: Optional[int] = None,
        progress: bool = True,
        load_pipeline: Optional[PipelineLoader] = None,
    ):
        self.config = config or EvaluationConfig()
        self.clips = load_eval_set(data, max_videos)
        self.out_dir = Path(out_dir)
        self.cache = GenerationCache(self.out_dir / "cache" / "generations")
        self.embedder: AudioEmbedder = build_embedder(fad_embedder, clap_checkpoint)
        # the CLAP score uses the CLAP embedder: the FAD one when it is CLAP, else one from clap_checkpoint
        self.clap: Optional[AudioEmbedder] = None
        if self.embedder.name == "clap-audio":
            self.clap = self.embedder
        elif clap_checkpoint:
            self.clap = build_embedder("clap", clap_checkpoint)
        self.progress = progress
        self._load = load_pipeline or (lambda model: default_pipeline_loader(model, self.config.seed))
        self.generated = 0  # pipeline calls made by this evaluator (cache misses)
        self.analysed = 0  # clips analysed (not read from the cache) by this evaluator

    # ------------------------------------------------------------------ per clip

    def analyse_clip(self, clip: EvalClip) -> ClipAnalysis:
        """Visual beats, and the real music's beats and embeddings when the clip has music (cached)."""
        c = self.config
        settings = {k: getattr(c, k) for k in ("visual_fps", "visual_size", "reference_sample_rate")}
        embedders = [self.embedder.identity(), self.clap.identity() if self.clap is not None else None]
        path = self.out_dir / "cache" / "clips" / f"{analysis_key(clip, settings, embedders)}.npz"
        analysis = load_analysis(path, clip)
        if analysis is None:
            analysis = self._analyse(clip)
            save_analysis(path, analysis)
            self.analysed += 1
        return analysis

    def _analyse(self, clip: EvalClip) -> ClipAnalysis:
        from ..beats import music_beats, visual_beats
        from ..media import load_audio, load_video

        c = self.config
        video = load_video(str(clip.video), fps=c.visual_fps, start=clip.start, end=clip.end, size=c.visual_size)
        analysis = ClipAnalysis(clip=clip, duration=float(video.duration), visual=visual_beats(video.frames, video.fps))
        if clip.audio is not None:
            audio = load_audio(str(clip.audio), c.reference_sample_rate, mono=True, start=clip.start, end=clip.end)
            audio = np.asarray(audio, dtype=np.float32).reshape(1, -1)
            if audio.shape[-1] > 0:
                analysis.music = music_beats(audio, c.reference_sample_rate)
                analysis.harmonic_share, analysis.sustained_pitch = tonal_shares(audio, c.reference_sample_rate)
                analysis.fad_windows, analysis.clap_embedding = self._embed(audio, c.reference_sample_rate)
        return analysis

    def _embed(self, audio: np.ndarray, sample_rate: int, with_clap: bool = True):
        """``(FAD windows [N, D], CLAP clip embedding [D] or None)``; when the FAD embedder is CLAP its
        windows give the clip embedding too (``embed_clip`` is their mean), so CLAP runs once."""
        windows = self.embedder.embed(audio, sample_rate)
        if not with_clap or self.clap is None:
            return windows, None
        clap = windows.mean(axis=0) if self.clap is self.embedder else self.clap.embed_clip(audio, sample_rate)
        return windows, clap

    # ------------------------------------------------------------------ per (model, clip)

    def generate(self, pipe, clip: EvalClip, config: Optional[EvaluationConfig] = None) -> GenerationRecord:
        """One pipeline call (timed, memory measured) plus the contrastive embeddings when the pipeline has them.
        ``config``: the settings resolved for this model (default: the evaluator's, for ``pipe``'s own path)."""
        c = config or self.config.for_model(str(getattr(pipe, "name_or_path", "") or ""))
        video: Any = str(clip.video)
        fps = None
        if not clip.is_whole_file:
            from ..media import load_video

            # decode straight at the encoder's rate and size when the pipeline says them (what it
            # would resample to anyway); otherwise native frames
            encoder_config = getattr(getattr(pipe, "video_encoder", None), "config", None)
            target_fps = getattr(encoder_config, "fps", None)
            size = getattr(encoder_config, "frame_size", None)
            loaded = load_video(
                str(clip.video), fps=None if target_fps is None else float(target_fps), start=clip.start,
                end=clip.end, size=None if size is None else int(size),
            )
            video, fps = loaded.frames, float(loaded.fps)
        call = dict(c.generation_kwargs(), generator=torch.Generator().manual_seed(c.seed), output_type="np")
        if fps is not None:
            call["fps"] = fps
        device = str(getattr(pipe, "device", "cpu"))
        with PeakMemory(device) as memory:
            start = time.perf_counter()
            out = pipe(video=video, **call)
            seconds = time.perf_counter() - start
        audio = np.asarray(out.audios[0], dtype=np.float32)
        if audio.ndim == 1:
            audio = audio[None]
        extras: dict[str, Any] = {}
        if getattr(out, "candidates", None) is not None:
            extras["candidates"] = out.candidates.summary()
        before = None
        if c.sync_beats:
            # what pipe(sync_beats=True) does, kept apart so the table also scores the music before it
            from ..beats.sync import sync_to_beats

            visual = getattr(out, "visual_beats", None)
            before = audio
            audio, report = sync_to_beats(before, int(out.sample_rate), np.zeros(0) if visual is None else visual.times,
                                          tolerance=c.beat_tolerance, **c.sync_kwargs())
            extras["beat_sync"] = report.summary()
        video_emb = music_emb = None
        embed_video, embed_music = getattr(pipe, "embed_video", None), getattr(pipe, "embed_music", None)
        if embed_video is not None and embed_music is not None:
            try:
                # the stretch of video the music was written for (as long as the music)
                video_emb = _to_numpy(embed_video(video, fps=fps, seconds=audio.shape[-1] / int(out.sample_rate)))
                music_emb = _to_numpy(embed_music(audio, int(out.sample_rate)))
            except VMASError as exc:  # no contrastive head: retrieval is n/a
                logger.info("no contrastive embeddings: %s", exc)
                video_emb = music_emb = None
        return GenerationRecord(
            audio=audio,
            sample_rate=int(out.sample_rate),
            backend=str(getattr(pipe, "backend", "?")),
            seconds=seconds,
            peak_memory_mb=memory.peak_mb,
            memory_kind=memory.kind,
            video_embedding=video_emb,
            music_embedding=music_emb,
            audio_before_sync=before,
            extras=extras or None,
        )

    def score_clip(self, record: GenerationRecord, ref: ClipAnalysis) -> tuple[dict[str, Any], Any, np.ndarray, np.ndarray]:
        """Per-clip metrics of one generation: ``(values, generated MusicBeats, offsets [G], FAD windows [N, D])``."""
        from ..beats import beat_scores, music_beats

        tol = self.config.beat_tolerance
        gen_beats = music_beats(record.audio, record.sample_rate)
        duration = min(record.duration, ref.duration)
        gen_times = np.asarray(gen_beats.times, dtype=np.float64)
        values: dict[str, Any] = {"clip": ref.clip.id, "generated_beats": int(gen_times.size)}
        values["harmonic_share"], values["sustained_pitch"] = tonal_shares(record.audio, record.sample_rate)
        values["onset_density"] = onset_density(gen_beats.onsets, record.duration)
        values["tempo"] = float(gen_beats.tempo) if gen_beats.tempo > 0 else None
        values["visual_pace"] = ref.visual_pace
        visual = beat_scores(gen_times, np.asarray(ref.visual.times), duration, tolerance=tol)
        values.update({f"visual.{k}": _float(visual[k]) for k in BEAT_KEYS})
        if ref.music is not None:
            music = beat_scores(gen_times, np.asarray(ref.music.times), duration, tolerance=tol)
            values.update({f"music.{k}": _float(music[k]) for k in BEAT_KEYS})
        windows, clap = self._embed(record.audio, record.sample_rate, with_clap=ref.clap_embedding is not None)
        if clap is not None:
            values["clap_music"] = cosine(clap, ref.clap_embedding)
        if record.video_embedding is not None and record.music_embedding is not None:
            values["video_music"] = cosine(record.video_embedding, record.music_embedding)
        values["rtf"] = record.real_time_factor
        values["seconds"] = record.seconds
        values["peak_memory_mb"] = record.peak_memory_mb
        values.update(_alignment_values(record, ref, tol))
        offsets = beat_offsets(gen_times, np.asarray(ref.visual.times))
        return values, gen_beats, offsets, windows

    # ------------------------------------------------------------------ the run

    def run(self, models: list[str]) -> EvaluationReport:
        if not models:
            raise InputError("evaluate: give at least one --model")
        fingerprints = [model_fingerprint(m) for m in models]  # a missing model fails before any work
        analyses = [self.analyse_clip(clip) for clip in tqdm(self.clips, desc="clips", disable=not self.progress)]
        reference_windows = [a.fad_windows for a in analyses if a.fad_windows is not None]
        plots: list[str] = []
        columns: list[ModelColumn] = []
        names = _column_names(models)
        total = tqdm(total=len(models) * len(analyses), desc="generate", disable=not self.progress)
        for model, name, fp in zip(models, names, fingerprints):
            pipe = None
            records: list[GenerationRecord] = []
            new = 0
            config = self.config.for_model(model)
            kwargs = config.cache_kwargs()
            for a in analyses:
                key = generation_key(fp, a.clip, self.config.seed, kwargs)
                record = self.cache.get(key)
                if record is None:
                    if pipe is None:
                        pipe = self._load_model(model)
                    record = self.generate(pipe, a.clip, config)
                    self.cache.put(key, record)
                    self.generated += 1
                    new += 1
                records.append(record)
                total.update(1)
            del pipe  # one model in memory at a time
            column = self._model_column(model, name, records, analyses, reference_windows, new, plots)
            column.guidance_scale = config.guidance_scale
            columns.append(column)
        total.close()
        reference = self._reference_scores(analyses)
        if self.config.plots:
            plots.append(str(self._plot_pace(columns, analyses, reference)))
        clips = [
            {
                "id": a.clip.id,
                "video": str(a.clip.video),
                "reference_audio": str(a.clip.audio) if a.has_reference else None,
                "start": a.clip.start,
                "end": a.clip.end,
                "duration": a.duration,
                "visual_beats": int(len(a.visual.times)),
                "music_beats": int(len(a.music.times)) if a.music is not None else None,
            }
            for a in analyses
        ]
        settings = asdict(self.config)
        computed = {"generations": self.generated, "clip_analyses": self.analysed}
        return write_report(self.out_dir, columns, self.embedder.name, reference, clips, settings, plots, computed)

    def _load_model(self, model: str):
        try:
            pipe = self._load(model)
        except VMASError:
            raise
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"cannot load model {model}: {exc}") from exc
        if hasattr(pipe, "set_progress_bar_config"):  # the denoising/decoding bar, under ours
            pipe.set_progress_bar_config(disable=not self.progress, leave=False)
        return pipe

    def _model_column(self, model, name, records, analyses, reference_windows, new, plots) -> ModelColumn:
        per_clip, all_offsets, gen_windows = [], [], []
        for record, a in zip(records, analyses):
            values, gen_beats, offsets, windows = self.score_clip(record, a)
            per_clip.append(values)
            all_offsets.append(offsets)
            gen_windows.append(windows)
            if self.config.plots:
                plots.append(self._plot_alignment(a, record, gen_beats, name))
        metrics: dict[str, Optional[float]] = {}
        metrics["fad"] = _fad(gen_windows, reference_windows)
        for key in ("clap_music", "video_music", "harmonic_share", "sustained_pitch", "onset_density"):
            metrics[key] = mean_or_none(v.get(key) for v in per_clip)
        pace = [v["visual_pace"] for v in per_clip]
        metrics["pace_tempo_rho"] = pace_correlation(pace, [v["tempo"] for v in per_clip])
        metrics["pace_onsets_rho"] = pace_correlation(pace, [v["onset_density"] for v in per_clip])
        for ref in ("visual", "music"):
            for key in BEAT_KEYS:
                metrics[f"{ref}.{key}"] = mean_or_none(v.get(f"{ref}.{key}") for v in per_clip)
        for key in ALIGNMENT_KEYS:
            metrics[key] = mean_or_none(v.get(key) for v in per_clip)
        stretches = [v["sync.max_abs_stretch"] for v in per_clip if v.get("sync.max_abs_stretch") is not None]
        metrics["sync.max_abs_stretch"] = max(stretches) if stretches else None  # the largest over the clips
        metrics.update(_retrieval(records))
        offsets = np.concatenate(all_offsets) if all_offsets else np.zeros(0)
        metrics["mean_abs_beat_offset"] = float(np.mean(np.abs(offsets))) if offsets.size else None
        metrics["rtf"] = mean_or_none(r.real_time_factor for r in records)
        metrics["seconds_per_clip"] = mean_or_none(r.seconds for r in records)
        metrics["peak_memory_mb"] = max((r.peak_memory_mb for r in records), default=None)
        metrics["clips"] = len(records)
        metrics["generated_this_run"] = new
        if self.config.plots:
            path = self.out_dir / "plots" / f"beat_offsets__{safe_name(name)}.png"
            plots.append(str(plot_offset_histogram(path, offsets, name, tolerance=self.config.beat_tolerance)))
        backends = sorted({r.backend for r in records})
        kinds = sorted({r.memory_kind for r in records})
        return ModelColumn(
            name=name,
            path=str(model),
            backend="/".join(backends) or "?",
            metrics=metrics,
            memory_kind="/".join(kinds),
            per_clip=per_clip,
        )

    def _plot_pace(self, columns: list[ModelColumn], analyses: list[ClipAnalysis], reference: dict) -> Path:
        series = {c.name: ([v["visual_pace"] for v in c.per_clip], [v["onset_density"] for v in c.per_clip])
                  for c in columns}
        rho = {c.name: c.metrics["pace_onsets_rho"] for c in columns}
        pace, density = _real_music_pace(analyses)
        if pace:
            series["real music"] = (pace, density)
            rho["real music"] = reference["pace_onsets_rho"]
        return plot_pace(self.out_dir / "plots" / "pace.png", series, rho)

    def _plot_alignment(self, a: ClipAnalysis, record: GenerationRecord, gen_beats, name: str) -> str:
        from ..beats import plot_alignment

        path = self.out_dir / "plots" / "alignment" / f"{safe_name(a.clip.id)}__{safe_name(name)}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        plot_alignment(
            str(path), a.visual, audio=record.audio, sample_rate=record.sample_rate, music=gen_beats,
            title=f"{a.clip.id}: {name} ({record.backend})", tolerance=self.config.beat_tolerance,
        )
        return str(path)

    def _reference_scores(self, analyses: list[ClipAnalysis]) -> dict[str, Optional[float]]:
        """The real music's beat scores against the visual beats (how well real music fits these
        videos), its tonal content and its pace correlation: the reference column."""
        from ..beats import beat_scores

        per_clip = [
            beat_scores(np.asarray(a.music.times), np.asarray(a.visual.times), a.duration, tolerance=self.config.beat_tolerance)
            for a in analyses
            if a.music is not None
        ]
        scores = {f"visual.{k}": mean_or_none(_float(s[k]) for s in per_clip) for k in BEAT_KEYS}
        real = [a for a in analyses if a.music is not None]
        scores["harmonic_share"] = mean_or_none(a.harmonic_share for a in real)
        scores["sustained_pitch"] = mean_or_none(a.sustained_pitch for a in real)
        pace, density = _real_music_pace(analyses)
        scores["onset_density"] = mean_or_none(density)
        scores["pace_tempo_rho"] = pace_correlation(pace, [a.music.tempo or None for a in real])
        scores["pace_onsets_rho"] = pace_correlation(pace, density)
        return scores


def _real_music_pace(analyses: list[ClipAnalysis]) -> tuple[list[float], list[float]]:
    """Per clip with real music: the video's pace and the real music's onsets per second."""
    real = [a for a in analyses if a.music is not None]
    return [a.visual_pace for a in real], [onset_density(a.music.onsets, a.duration) for a in real]


def _alignment_values(record: GenerationRecord, ref: ClipAnalysis, tolerance: float) -> dict[str, Optional[float]]:
    """Per-clip beat-sync and best-of-N values: BHS before sync against the evaluation's visual beats,
    the stretch used, the share of visual beats matched; the kept and the mean candidate's BHS (the
    pipeline's, against its own visual beats). Empty for a plain generation."""
    from ..beats import beat_scores, music_beats

    values: dict[str, Optional[float]] = {}
    extras = record.extras or {}
    sync = extras.get("beat_sync")
    if sync is not None:
        values["sync.mean_abs_stretch"] = sync["mean_abs_stretch"]
        values["sync.max_abs_stretch"] = sync["max_abs_stretch"]
        values["sync.matched_share"] = sync["matched_share"]
        values["sync.applied"] = float(sync["applied"])
    if record.audio_before_sync is not None:
        times = music_beats(record.audio_before_sync, record.sample_rate).times
        duration = min(record.duration, ref.duration)
        values["visual.bhs_window_before_sync"] = _float(
            beat_scores(times, np.asarray(ref.visual.times), duration, tolerance=tolerance)["bhs_window"])
    candidates = extras.get("candidates")
    if candidates is not None:
        values["candidates.bhs_selected"] = candidates["bhs"][candidates["selected"]]
        values["candidates.bhs_mean"] = float(np.mean(candidates["bhs"]))
    return values


def _to_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32).reshape(-1)


def _float(value) -> Optional[float]:
    if value is None:
        return None
    value = float(value)
    return value if np.isfinite(value) else None


def _fad(gen_windows: list[np.ndarray], ref_windows: list[np.ndarray]) -> Optional[float]:
    """FAD of pooled windows; None without real music or with fewer than 2 windows on a side."""
    if not ref_windows or sum(len(w) for w in ref_windows) < 2 or sum(len(w) for w in gen_windows) < 2:
        return None
    return frechet_audio_distance(gen_windows, ref_windows)


def _retrieval(records: list[GenerationRecord]) -> dict[str, Optional[float]]:
    """R@1/R@5 of each clip's video embedding retrieving its generated music among the set's."""
    keys = ("R@1", "R@5", "chance@1", "chance@5")
    if not records or any(r.video_embedding is None or r.music_embedding is None for r in records):
        return {k: None for k in keys}
    from ..losses import retrieval_recall

    video = torch.from_numpy(np.stack([r.video_embedding for r in records]))
    music = torch.from_numpy(np.stack([r.music_embedding for r in records]))
    return {k: float(v) for k, v in retrieval_recall(video, music, ks=(1, 5)).items()}


def _column_names(models: list[str]) -> list[str]:
    """Column names from the model folders' names, made unique with their parent folder or an index."""
    names = [Path(m).stem if Path(m).suffix in (".yaml", ".yml") else Path(m).name for m in models]
    out = []
    for i, (model, name) in enumerate(zip(models, names)):
        if names.count(name) > 1:
            parent = Path(model).resolve().parent.name
            name = f"{parent}/{name}" if parent else name
            if name in out:
                name = f"{name}#{i + 1}"
        out.append(name)
    return out


def run_evaluation(
    models: list[str],
    data: str,
    out_dir: str,
    seed: int = 0,
    num_inference_steps: int | None = None,
    guidance_scale: float | None = None,
    duration: float | None = None,
    fad_embedder: str = "mel",
    clap_checkpoint: str | None = None,
    max_videos: int | None = None,
    progress: bool = True,
    *,
    num_candidates: int = 1,
    pace_weight: float = 0.0,
    sync_beats: bool = False,
    max_stretch: float | None = None,
    sampling: Optional[dict[str, Any]] = None,
    plots: bool = True,
    load_pipeline: Optional[PipelineLoader] = None,
) -> EvaluationReport:
    """Evaluate one or more models on a set of videos and write the table.

    Args:
        models: saved pipeline folders, bundled names (``"vmas-tiny-ar"``) or recipe YAMLs (random
            weights seeded by ``seed``); one column each, in this order.
        data: folder of videos or JSON Lines manifest (see :mod:`vmas_diffusion.evaluation.dataset`).
        out_dir: receives ``evaluation.md``, ``evaluation.json``, ``plots/`` and ``cache/`` (generations
            per model/clip/seed/settings, and clip analyses); re-running in the same folder reuses it.
        seed: generation seed (the same for every clip), part of the cache key.
        num_inference_steps, guidance_scale, duration: passed to the pipeline, part of the cache key;
            ``guidance_scale`` None: each model's own (the bundled ones' recommended guidance, else 3).
        fad_embedder: ``"mel"`` (weight-free default), ``"vggish=PATH"``, ``"panns=PATH"``, ``"clap"``
            (uses ``clap_checkpoint``) or ``"clap=PATH"``; the table names the one used.
        clap_checkpoint: local laion-clap checkpoint; enables the CLAP score row.
        max_videos: first N clips only.
        progress: tqdm bars on stderr.
        plots: write the alignment and offset PNGs.
        num_candidates: best-of-N in every pipeline call (part of the cache key; N > 1 adds the
            kept and the mean candidate's BHS rows); ``pace_weight``: its pace term (``pipe(pace_weight=...)``).
        sync_beats, max_stretch: warp every generation onto the pipeline's visual beats, as
            ``pipe(sync_beats=True)`` does (part of the cache key); adds the BHS-before-sync and
            stretch rows.
        sampling: the generator's own options, e.g. ``{"temperature": 0.8, "top_k": 50}`` for the AR
            (part of the cache key; a generator that does not take one raises InputError).
        load_pipeline: ``model path -> pipeline`` (tests and custom loading); default loads from disk.

    Raises:
        InputError: missing data, empty folder or manifest, bad manifest line, bad argument.
        CheckpointError: a missing or unloadable model, a bad embedder checkpoint.
        ConfigError: an unknown ``fad_embedder``.
    """
    if guidance_scale is not None and not (np.isfinite(guidance_scale) and guidance_scale >= 0):
        raise InputError(f"guidance_scale must be a number >= 0, got {guidance_scale!r}")
    if duration is not None and not (np.isfinite(duration) and duration > 0):
        raise InputError(f"duration must be a positive number of seconds, got {duration!r}")
    from ..beats.sync import DEFAULT_MAX_STRETCH
    from ..pipelines.video_to_music.alignment import check_alignment_inputs  # the pipeline's own checks of them

    check_alignment_inputs(num_candidates, bool(sync_beats), DEFAULT_MAX_STRETCH if max_stretch is None else max_stretch,
                           pace_weight)
    config = EvaluationConfig(
        seed=int(seed),
        num_inference_steps=num_inference_steps,
        guidance_scale=None if guidance_scale is None else float(guidance_scale),
        duration=None if duration is None else float(duration),
        num_candidates=num_candidates,
        pace_weight=pace_weight,
        sync_beats=bool(sync_beats),
        max_stretch=max_stretch,
        sampling=dict(sampling or {}),
        plots=plots,
    )
    models = [str(resolve_model(model)) for model in models]  # bundled names ("vmas-tiny-ar") -> their folders
    for model in models:
        if not Path(model).exists():
            raise CheckpointError(f"model {model} does not exist (give a saved pipeline folder, a bundled name or a recipe .yaml)")
    evaluator = Evaluator(
        data, out_dir, config, fad_embedder=fad_embedder, clap_checkpoint=clap_checkpoint,
        max_videos=max_videos, progress=progress, load_pipeline=load_pipeline,
    )
    return evaluator.run(list(models))
