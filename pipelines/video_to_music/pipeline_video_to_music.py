"""VideoToMusicPipeline: a video in, music that fits it out.

The flow (docs/architecture.md): frames at the encoder's rate -> visual beats and the temporal
video encoder -> named conditions ``{"video", "beat"}`` -> the generator's ``generate_audio``
(its own sampling, then decoding through the codec) -> waveform trimmed to the asked duration.
"""

import importlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput

from vmas_diffusion.beats import VisualBeats, visual_beats
from vmas_diffusion.beats.sync import DEFAULT_MAX_STRETCH, BeatSync
from vmas_diffusion.conditions import BEAT, VIDEO, Condition
from vmas_diffusion.errors import CheckpointError, ConfigError, InputError, VMASError
from vmas_diffusion.media import load_video, resample
from vmas_diffusion.models.codecs import MusicCodec
from vmas_diffusion.models.generators import MusicGenerator
from vmas_diffusion.models.video_encoder import TemporalVideoEncoder

from .alignment import CandidateScores, check_alignment_inputs, select_candidates, sync_waveforms

VideoInput = Union[str, Path, np.ndarray, torch.Tensor]
GeneratorArg = Optional[Union[torch.Generator, List[torch.Generator]]]


@dataclass
class VideoToMusicPipelineOutput(BaseOutput):
    """
    Args:
        audios: ``(batch, channels, samples)`` float32 in [-1, 1], numpy or torch per ``output_type``;
            ``batch = number of videos * num_waveforms_per_video``.
        sample_rate: Hz of ``audios``.
        video_beats: seconds of the visual beats used as the beat condition: a 1-D array for one
            video, a list of them for several.
        visual_beats: the whole visual analysis the beat condition came from
            (:class:`~vmas_diffusion.beats.VisualBeats`: ``times``, the per-frame ``envelope`` at the
            encoder's ``fps``, ``cuts``), one for one video, a list for several; None for a video
            given as ``video_embeds`` only. It lets a caller plot the beats without decoding the video again.
        beat_sync: with ``sync_beats=True``, what the warp did to each waveform
            (:class:`~vmas_diffusion.beats.sync.BeatSync`: matched pairs, per-segment stretch, max/mean
            ``|stretch - 1|``, BHS before and after, or why it was not applied): one for one waveform,
            else a list; None without sync.
        candidates: with ``num_candidates > 1``, every candidate's scores and the kept one
            (:class:`~vmas_diffusion.pipelines.video_to_music.alignment.CandidateScores`): one for one
            waveform, else a list; None otherwise.
    """

    audios: Union[np.ndarray, torch.Tensor]
    sample_rate: int
    video_beats: Union[np.ndarray, List[np.ndarray]]
    visual_beats: Optional[Union[VisualBeats, List[Optional[VisualBeats]]]] = None
    beat_sync: Optional[Union[BeatSync, List[BeatSync]]] = None
    candidates: Optional[Union[CandidateScores, List[CandidateScores]]] = None


@dataclass
class _PreparedVideo:
    frames: np.ndarray  # (T, H, W, 3) uint8 at the encoder's fps and size
    duration: float  # seconds


class VideoToMusicPipeline(DiffusionPipeline):
    """Writes music for a video.

    Components: ``video_encoder`` (:class:`~vmas_diffusion.models.video_encoder.TemporalVideoEncoder`),
    ``generator`` (a :class:`~vmas_diffusion.models.generators.MusicGenerator`: ``ARTokenLM``,
    ``LatentDiT`` or any registered one), ``codec`` (a :class:`MusicCodec`), ``scheduler`` (for a
    generator that samples with one, e.g. the LDM's diffusers scheduler; None for AR) and the optional
    ``contrastive_head`` (:class:`~vmas_diffusion.models.contrastive_head.ContrastiveHead`, used for
    retrieval embeddings).
    """

    model_cpu_offload_seq = "video_encoder->generator->codec"
    _optional_components = ["scheduler", "contrastive_head"]

    def __init__(self, video_encoder, generator, codec, scheduler=None, contrastive_head=None):
        super().__init__()
        self.register_modules(
            video_encoder=video_encoder,
            generator=generator,
            codec=codec,
            scheduler=scheduler,
            contrastive_head=contrastive_head,
        )

    @property
    def backend(self) -> str:
        """The generator's label (``"ar"``, ``"ldm"``, ...), read-only: nothing branches on it."""
        return self.generator.backend

    @property
    def sample_rate(self) -> int:
        return int(self.codec.sample_rate)

    # ------------------------------------------------------------------ building and loading

    @classmethod
    def from_recipe(cls, recipe, overrides: Optional[Sequence[str]] = None) -> "VideoToMusicPipeline":
        """A randomly initialised pipeline from a recipe (YAML path, dict or DictConfig)."""
        from vmas_diffusion.building import build_components

        components = build_components(recipe, overrides)
        for component in components.values():
            if isinstance(component, torch.nn.Module):
                component.eval()  # as from_pretrained leaves them: no dropout at inference
        return cls(**components)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs) -> "VideoToMusicPipeline":
        """Load a saved pipeline folder (offline) or a Hub id; safetensors only.

        A folder that is not a saved VideoToMusicPipeline raises CheckpointError naming what is wrong.
        The bundled names ``"vmas-tiny"``, ``"vmas-tiny-ar"``, ``"vmas-tiny-ldm"`` load the offline
        default model shipped in the package (:mod:`vmas_diffusion.defaults`).
        """
        from vmas_diffusion.defaults import resolve_model

        if pretrained_model_name_or_path is not None:
            pretrained_model_name_or_path = resolve_model(pretrained_model_name_or_path)
        path = Path(str(pretrained_model_name_or_path))
        if path.exists():
            index = _read_pipeline_index(path)
        else:  # a Hub id: read its model_index.json first (needs network or the local HF cache)
            try:
                from huggingface_hub import hf_hub_download

                index_file = hf_hub_download(str(pretrained_model_name_or_path), "model_index.json", revision=kwargs.get("revision"))
            except Exception as err:  # noqa: BLE001 - every hub failure means the same to the user
                raise CheckpointError(
                    f"{pretrained_model_name_or_path} is neither a local folder nor a reachable Hub model: {err}"
                ) from err
            index = _read_pipeline_index(Path(index_file).parent)
        # diffusers finds a component class only once its module is imported
        for name, entry in index.items():
            if isinstance(entry, list) and entry and isinstance(entry[0], str) and entry[0].startswith("vmas_diffusion."):
                importlib.import_module(entry[0])
        if kwargs.get("use_safetensors") is False:
            raise CheckpointError("VideoToMusicPipeline loads safetensors weights only")
        kwargs["use_safetensors"] = True
        try:
            pipe = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        except VMASError:
            raise
        except (OSError, ValueError, KeyError, RuntimeError, EnvironmentError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise CheckpointError(f"cannot load a VideoToMusicPipeline from {pretrained_model_name_or_path}: {first}") from err
        if not isinstance(pipe, VideoToMusicPipeline):
            raise CheckpointError(f"{pretrained_model_name_or_path} holds a {type(pipe).__name__}, not a VideoToMusicPipeline")
        return pipe

    def with_generator(self, generator, scheduler=None) -> "VideoToMusicPipeline":
        """The same pipeline with another generator backend, sharing encoder, codec and contrastive head.

        A generator that samples with a scheduler gets ``scheduler`` or, when None, its default one;
        the others get none.
        """
        if generator.needs_scheduler and scheduler is None:
            scheduler = generator.make_scheduler()
        return type(self)(
            video_encoder=self.video_encoder,
            generator=generator,
            codec=self.codec,
            scheduler=scheduler if generator.needs_scheduler else None,
            contrastive_head=self.contrastive_head,
        )

    # ------------------------------------------------------------------ steps of __call__

    def check_inputs(self, video, fps, duration, video_embeds, guidance_scale, num_waveforms_per_video, output_type, num_inference_steps):
        if video is None and video_embeds is None:
            raise InputError("give `video` (a path or frames) or `video_embeds`")
        if video_embeds is not None and video is None and duration is None:
            raise InputError("`duration` is required when only `video_embeds` are given")
        if duration is not None and not (isinstance(duration, (int, float)) and math.isfinite(duration) and duration > 0):
            raise InputError(f"`duration` must be a positive number of seconds, got {duration!r}")
        if not (isinstance(guidance_scale, (int, float)) and math.isfinite(guidance_scale) and guidance_scale >= 0):
            raise InputError(f"`guidance_scale` must be a number >= 0, got {guidance_scale!r}")
        if not (isinstance(num_waveforms_per_video, int) and num_waveforms_per_video >= 1):
            raise InputError(f"`num_waveforms_per_video` must be an integer >= 1, got {num_waveforms_per_video!r}")
        if output_type not in ("np", "pt"):
            raise InputError(f"`output_type` must be 'np' or 'pt', got {output_type!r}")
        if num_inference_steps is not None and not (isinstance(num_inference_steps, int) and num_inference_steps >= 1):
            raise InputError(f"`num_inference_steps` must be an integer >= 1, got {num_inference_steps!r}")
        if self.generator.needs_scheduler and self.scheduler is None:
            raise ConfigError(f"the {self.backend} backend needs a `scheduler` component")
        videos = video if isinstance(video, (list, tuple)) else [video]
        for item in videos if video is not None else []:
            if isinstance(item, (np.ndarray, torch.Tensor)) and fps is None:
                raise InputError("`fps` is required when `video` is an array of frames")

    def prepare_video(self, video: VideoInput, fps: Optional[float]) -> _PreparedVideo:
        """A path or a ``(T, H, W, 3)`` uint8 array -> frames at the encoder's fps and size."""
        target_fps = float(self.video_encoder.config.fps)
        size = int(self.video_encoder.config.frame_size)
        if isinstance(video, (str, Path)):
            clip = load_video(video, fps=target_fps, size=size)
            return _PreparedVideo(clip.frames, float(clip.duration))
        frames = video.detach().cpu().numpy() if isinstance(video, torch.Tensor) else np.asarray(video)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
            raise InputError(f"video frames must be a non-empty (T, H, W, 3) array, got shape {frames.shape}")
        if frames.dtype != np.uint8:
            raise InputError(f"video frames must be uint8, got {frames.dtype}")
        if not (math.isfinite(fps) and fps > 0):
            raise InputError(f"`fps` must be positive, got {fps!r}")
        duration = frames.shape[0] / float(fps)
        # resample by time, as load_video does for files: frame k at k / target_fps
        times = np.arange(int(math.ceil(duration * target_fps - 1e-6))) / target_fps
        index = np.minimum(np.floor(times * fps + 1e-6).astype(int), frames.shape[0] - 1)
        picked = torch.from_numpy(np.ascontiguousarray(frames[index])).permute(0, 3, 1, 2).float()
        resized = F.interpolate(picked, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return _PreparedVideo(resized.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy(), duration)

    def encode_video(self, prepared: List[_PreparedVideo], video_embeds=None):
        """Frames -> ``(video Condition, beat Condition, VisualBeats per video)``; ``video_embeds`` skips the
        encoder (with no frames there are no visual beats: None per video)."""
        device = self._execution_device
        fps = float(self.video_encoder.config.fps)
        if prepared:
            lengths = [p.frames.shape[0] for p in prepared]
            t_max = max(lengths)
            frames = torch.zeros((len(prepared), t_max) + prepared[0].frames.shape[1:], dtype=torch.uint8)
            mask = torch.zeros(len(prepared), t_max, dtype=torch.bool)
            envelope = torch.zeros(len(prepared), t_max, 1)
            analyses = []
            for i, p in enumerate(prepared):
                frames[i, : lengths[i]] = torch.from_numpy(p.frames)
                mask[i, : lengths[i]] = True
                beats = visual_beats(p.frames, fps)
                envelope[i, : lengths[i], 0] = torch.from_numpy(np.asarray(beats.envelope, dtype=np.float32))
                analyses.append(beats)
            beat = Condition(envelope.to(device), mask.to(device), fps)
        if video_embeds is None:
            output = self.video_encoder(frames.to(device), mask=mask.to(device))
            video_condition = output.condition()
        else:
            video_condition = _as_condition(video_embeds, device)
        if not prepared:  # embeddings only: no frames, so no visual beats
            b, t = video_condition.mask.shape
            empty = torch.zeros(b, t, dtype=torch.bool, device=device)
            beat = Condition(torch.zeros(b, t, 1, device=device), empty, video_condition.frame_rate)
            analyses = [None] * b
        if beat.tensor.shape[0] != video_condition.tensor.shape[0]:
            raise InputError(f"{beat.tensor.shape[0]} videos but video_embeds for {video_condition.tensor.shape[0]}")
        return video_condition, beat, analyses

    # ------------------------------------------------------------------ contrastive embeddings

    def _contrastive_head(self):
        if self.contrastive_head is None:
            raise ConfigError("this pipeline has no contrastive_head, so it has no video-music embeddings")
        return self.contrastive_head

    @torch.no_grad()
    def embed_video(self, video: VideoInput, fps: Optional[float] = None) -> torch.Tensor:
        """The video's contrastive embedding ``[E]`` (L2-normalised), as used for retrieval."""
        head = self._contrastive_head()
        if isinstance(video, (np.ndarray, torch.Tensor)) and fps is None:
            raise InputError("`fps` is required when `video` is an array of frames")
        prepared = self.prepare_video(video, fps)
        frames = torch.from_numpy(prepared.frames)[None].to(self._execution_device)
        return head.embed_video(self.video_encoder(frames).pooled)[0]

    @torch.no_grad()
    def embed_music(self, wav, sample_rate: int) -> torch.Tensor:
        """The music's contrastive embedding ``[E]`` from ``wav`` ``(C, S)`` or ``(S,)``.

        The generator reads the music with every condition dropped, so the embedding
        depends on the music alone.
        """
        head = self._contrastive_head()
        audio = wav.detach().cpu().numpy() if isinstance(wav, torch.Tensor) else np.asarray(wav, dtype=np.float32)
        audio = audio[None] if audio.ndim == 1 else audio
        if audio.ndim != 2 or audio.shape[-1] == 0:
            raise InputError(f"music must be (C, S) or (S,) with samples, got shape {audio.shape}")
        if audio.shape[0] != self.codec.channels:  # mono codec from stereo music, or the reverse
            audio = np.repeat(audio.mean(0, keepdims=True), self.codec.channels, axis=0)
        audio = resample(audio.astype(np.float32), int(sample_rate), self.sample_rate)
        wav_t = torch.from_numpy(np.ascontiguousarray(audio))[None].to(self._execution_device)
        target = self.generator.encode_music(self.codec, wav_t)
        return head.embed_music(self.generator.embed_music(target))[0]

    # ------------------------------------------------------------------ __call__

    @torch.no_grad()
    def __call__(
        self,
        video: Optional[Union[VideoInput, List[VideoInput]]] = None,
        fps: Optional[float] = None,
        duration: Optional[float] = None,
        num_inference_steps: Optional[int] = None,
        guidance_scale: float = 3.0,
        num_waveforms_per_video: int = 1,
        generator: GeneratorArg = None,
        output_type: str = "np",
        return_dict: bool = True,
        video_embeds=None,
        num_candidates: int = 1,
        sync_beats: bool = False,
        max_stretch: float = DEFAULT_MAX_STRETCH,
        **generation_kwargs,
    ):
        """Write music for ``video``.

        Args:
            video: a path, a uint8 ``(T, H, W, 3)`` array or tensor (with ``fps``), or a list of them.
            fps: frame rate of array input.
            duration: seconds of music; default the (longest) video's duration.
            num_inference_steps: diffusion steps (LDM); ignored by AR.
            guidance_scale: classifier-free guidance on the video condition (1 = no guidance).
            num_waveforms_per_video: samples per video.
            generator: a torch.Generator, or a list with one per output waveform (then a batch equals
                the same items run one by one).
            output_type: ``"np"`` or ``"pt"``.
            video_embeds: a ``VideoEncoderOutput``, a Condition or a ``[B, T, D]`` tensor at the encoder's
                frame rate, to skip the video encoder.
            num_candidates: draw every waveform this many times and keep the one that scores best on beat
                hits and contrastive video-music similarity (:mod:`.alignment`); scores in ``candidates``.
            sync_beats: warp the music's time so its beats land on the visual beats
                (:func:`~vmas_diffusion.beats.sync.sync_to_beats`, length kept); report in ``beat_sync``.
            max_stretch: the most a stretch of the music may differ from 1 under ``sync_beats`` (0.15 = ±15 %).
            generation_kwargs: passed to the generator (AR: ``top_k``, ``top_p``, ``temperature``).
        """
        # 1. check inputs
        self.check_inputs(video, fps, duration, video_embeds, guidance_scale, num_waveforms_per_video, output_type, num_inference_steps)
        check_alignment_inputs(num_candidates, sync_beats, max_stretch)

        # 2. load the video(s), find visual beats, encode
        videos = [] if video is None else (list(video) if isinstance(video, (list, tuple)) else [video])
        prepared = [self.prepare_video(v, fps) for v in videos]
        video_condition, beat_condition, analyses = self.encode_video(prepared, video_embeds)
        if duration is None:
            duration = max(p.duration for p in prepared)
        conditions = {
            VIDEO: video_condition.repeat_interleave(num_waveforms_per_video),
            BEAT: beat_condition.repeat_interleave(num_waveforms_per_video),
        }
        batch = conditions[VIDEO].tensor.shape[0]
        if isinstance(generator, list) and len(generator) != batch:
            raise InputError(f"got {len(generator)} generators for {batch} waveforms")

        # 3-5. prepare tokens or latents, generate them and decode (the generator knows which)
        num_frames = max(1, int(math.ceil(duration * self.codec.frame_rate)))
        num_samples = int(round(duration * self.sample_rate))
        candidates = []
        for _ in range(num_candidates):  # the same generator(s) consumed in turn: candidate 0 is the N = 1 output
            audio = self.generator.generate_audio(
                self.codec, conditions, num_frames, scheduler=self.scheduler, num_inference_steps=num_inference_steps,
                guidance_scale=guidance_scale, generator=generator, progress_bar=self.progress_bar, **generation_kwargs,
            )
            # 6. trim to the asked duration
            if audio.shape[-1] < num_samples:
                audio = F.pad(audio, (0, num_samples - audio.shape[-1]))
            candidates.append(audio[..., :num_samples].float().clamp(-1.0, 1.0).cpu())

        # 7. keep the best candidate, put its beats on the video's (alignment.py), and return
        scores = syncs = None
        audio = candidates[0]
        if num_candidates > 1:
            audio, scores = select_candidates(self, candidates, analyses, prepared, num_waveforms_per_video)
        if sync_beats:
            audio, syncs = sync_waveforms(audio, self.sample_rate, analyses, num_waveforms_per_video, max_stretch)
        audios = audio.numpy() if output_type == "np" else audio
        beat_times = [np.zeros(0) if a is None else np.asarray(a.times, dtype=np.float64) for a in analyses]
        one = len(analyses) == 1
        self.maybe_free_model_hooks()
        if not return_dict:
            return (audios, self.sample_rate, beat_times[0] if one else beat_times)
        return VideoToMusicPipelineOutput(
            audios=audios, sample_rate=self.sample_rate, video_beats=beat_times[0] if one else beat_times,
            visual_beats=analyses[0] if one else analyses,
            beat_sync=syncs[0] if syncs is not None and batch == 1 else syncs,
            candidates=scores[0] if scores is not None and batch == 1 else scores,
        )


def _as_condition(video_embeds, device) -> Condition:
    if isinstance(video_embeds, Condition):
        return video_embeds.to(device)
    if hasattr(video_embeds, "condition"):
        return video_embeds.condition().to(device)
    if isinstance(video_embeds, torch.Tensor) and video_embeds.dim() == 3:
        mask = torch.ones(video_embeds.shape[:2], dtype=torch.bool)
        return Condition(video_embeds, mask, None).to(device)
    raise InputError("`video_embeds` must be a VideoEncoderOutput, a Condition or a [B, T, D] tensor")


#: the components every saved pipeline has, and what each must be
_REQUIRED_COMPONENTS = {"video_encoder": TemporalVideoEncoder, "generator": MusicGenerator, "codec": MusicCodec}


def _read_pipeline_index(path: Path) -> dict:
    """The model_index.json of a saved VideoToMusicPipeline; anything else raises CheckpointError."""
    index = path / "model_index.json"
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a folder")
    if not index.is_file():
        raise CheckpointError(f"{path} has no model_index.json: not a saved pipeline")
    try:
        config = json.loads(index.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{index} is unreadable: {err}") from err
    if not isinstance(config, dict) or config.get("_class_name") != VideoToMusicPipeline.__name__:
        found = config.get("_class_name") if isinstance(config, dict) else None
        raise CheckpointError(f"{path} holds a {found!r}, not a VideoToMusicPipeline")
    for name, base in _REQUIRED_COMPONENTS.items():
        entry = config.get(name)
        if not (isinstance(entry, list) and len(entry) == 2 and all(isinstance(part, str) for part in entry)):
            raise CheckpointError(f"{path}: component {name!r} is {entry!r}, not a [module, class] pair")
        # a registered backend may live in another package: any importable class of the right kind loads
        try:
            cls = getattr(importlib.import_module(entry[0]), entry[1])
        except (ImportError, AttributeError) as err:
            raise CheckpointError(f"{path}: component {name!r} is {'.'.join(entry)}, which is not importable: {err}") from err
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise CheckpointError(f"{path}: component {name!r} is {'.'.join(entry)}, not a {base.__name__}")
    return config
