"""VideoToMusicPipeline: a video in, music that fits it out.

The flow (docs/architecture.md): frames at the encoder's rate -> visual beats and the temporal
video encoder -> named conditions ``{"video", "beat"}`` -> the generator's ``generate_audio``
(its own sampling, then decoding through the codec) -> waveform trimmed to the asked duration.
"""

import importlib
import inspect
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput

from vmas_diffusion.beats import VisualBeats, visual_beats
from vmas_diffusion.beats.sync import DEFAULT_MAX_STRETCH, BeatSync
from vmas_diffusion.conditions import BEAT, VIDEO, Condition
from vmas_diffusion.errors import CheckpointError, ConfigError, InputError, VMASError
from vmas_diffusion.limits import MAX_MUSIC_SECONDS, MAX_VIDEO_SECONDS, check_lengths
from vmas_diffusion.media import load_video, resample
from vmas_diffusion.media._common import audio_to_numpy
from vmas_diffusion.media.audio import _check_sample_rate
from vmas_diffusion.models.codecs import MusicCodec
from vmas_diffusion.models.generators import MusicGenerator
from vmas_diffusion.models.generators.base import onload
from vmas_diffusion.models.video_encoder import TemporalVideoEncoder

from .alignment import CandidateScores, check_alignment_inputs, pace_table, select_candidates, sync_waveforms

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

    ``model_card``: the facts (training data, measured alignment, licence...) ``save_pretrained``
    writes into the folder's README.md (:mod:`vmas_diffusion.model_card`); ``from_pretrained``
    reads them back. None for a pipeline built here.
    """

    model_cpu_offload_seq = "video_encoder->generator->codec"
    _optional_components = ["scheduler", "contrastive_head"]
    model_card: Optional[dict] = None

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
        ``torch_dtype`` (or ``dtype``): a ``torch.dtype`` for every component, or a dict by component
        name with a ``"default"``, e.g. ``{"codec": torch.float32, "default": torch.bfloat16}``
        (docs/architecture.md: what lower precision changes).
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
        if "torch_dtype" in kwargs:  # diffusers >= 0.36 names it `dtype`; both load each component in it
            if "dtype" in kwargs:
                raise InputError("give `torch_dtype` or `dtype`, not both")
            kwargs["dtype"] = kwargs.pop("torch_dtype")
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
        from vmas_diffusion.model_card import read_model_card

        pipe.model_card = read_model_card(path) if path.exists() else None
        return pipe

    def save_pretrained(self, save_directory, *args, model_card: Optional[dict] = None, push_to_hub: bool = False, **kwargs):
        """diffusers' ``save_pretrained``, plus the model card ``README.md`` (:mod:`vmas_diffusion.model_card`)
        written from ``model_card`` (default: the pipeline's own :attr:`model_card`), pushed with the
        folder when ``push_to_hub``."""
        from vmas_diffusion.model_card import check_model_card, write_model_card

        card = check_model_card(self.model_card if model_card is None else model_card)
        hub = {key: kwargs.pop(key) for key in ("commit_message", "private", "create_pr", "token", "repo_id") if key in kwargs}
        super().save_pretrained(save_directory, *args, **kwargs)
        write_model_card(save_directory, self, card)
        if push_to_hub:  # as diffusers pushes, with this card instead of its empty one
            from huggingface_hub import create_repo

            repo_id = hub.get("repo_id", Path(str(save_directory)).name)
            repo_id = create_repo(repo_id, exist_ok=True, private=hub.get("private"), token=hub.get("token")).repo_id
            self._upload_folder(save_directory, repo_id, token=hub.get("token"), commit_message=hub.get("commit_message"),
                                create_pr=hub.get("create_pr", False))

    def enable_model_cpu_offload(self, gpu_id: Optional[int] = None, device=None):
        """diffusers' model CPU offload: each component sits on the CPU and moves to the execution device
        only while it is used (the generator's sampling and the codec's decoding included, see
        :func:`~vmas_diffusion.models.generators.base.onload`). With no accelerator the execution device
        is the CPU, where it changes nothing (diffusers would refuse)."""
        if device is None:
            from diffusers.utils.torch_utils import get_device

            device = get_device()  # "cuda", "xpu", "mps"... or "cpu"
        super().enable_model_cpu_offload(gpu_id=gpu_id, device=device)

    # ------------------------------------------------------------------ diffusers-style step control

    @property
    def _callback_tensor_inputs(self) -> List[str]:
        """The tensors ``callback_on_step_end_tensor_inputs`` may name: the generator's
        (``["latents"]`` for the LDM, ``["tokens"]`` for the AR)."""
        return list(self.generator.callback_tensor_inputs)

    @property
    def num_timesteps(self) -> int:
        """Sampling steps of the last (or running) call, over all windows: what a step callback counts to."""
        return getattr(self, "_num_timesteps", 0)

    def _sized_progress_bar(self, total: int):
        """``self.progress_bar`` (set_progress_bar_config applies), noting the call's step count first."""
        self._num_timesteps = int(total)
        return self.progress_bar(total=total)

    def _step_callback(self, callback_on_step_end, tensor_inputs) -> Optional[Callable]:
        """The generator's per-step callback for diffusers' ``callback_on_step_end(pipe, step, timestep,
        callback_kwargs)``: ``callback_kwargs`` holds the tensors named in ``tensor_inputs`` (default: all the
        backend has), and a returned dict replaces any of them. None when there is no callback."""
        if callback_on_step_end is None and tensor_inputs is None:
            return None
        from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback

        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            tensor_inputs = callback_on_step_end.tensor_inputs
        allowed = self._callback_tensor_inputs
        names = list(allowed if tensor_inputs is None else tensor_inputs)
        unknown = [name for name in names if name not in allowed]
        if unknown:
            raise InputError(f"`callback_on_step_end_tensor_inputs` {unknown} are not tensors of the {self.backend} "
                             f"backend's steps; it has {allowed}")
        if callback_on_step_end is None:
            return None
        if not callable(callback_on_step_end):
            raise InputError(f"`callback_on_step_end` must be callable, got {type(callback_on_step_end).__name__}")
        if not allowed:
            raise ConfigError(f"the {self.backend} backend has no sampling steps to call back from")

        def callback(step: int, timestep, tensors: Dict[str, torch.Tensor]):
            returned = callback_on_step_end(self, step, timestep, {name: tensors[name] for name in names})
            if returned is not None and not isinstance(returned, dict):
                raise InputError(f"`callback_on_step_end` must return a dict (or None), got {type(returned).__name__}")
            return returned

        return callback

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
        if duration is not None:
            _check_seconds(duration, "duration")
        if not (_is_number(guidance_scale) and math.isfinite(guidance_scale) and guidance_scale >= 0):
            raise InputError(f"`guidance_scale` must be a number >= 0, got {guidance_scale!r}")
        if not (_is_int(num_waveforms_per_video) and num_waveforms_per_video >= 1):
            raise InputError(f"`num_waveforms_per_video` must be an integer >= 1, got {num_waveforms_per_video!r}")
        if output_type not in ("np", "pt"):
            raise InputError(f"`output_type` must be 'np' or 'pt', got {output_type!r}")
        if num_inference_steps is not None and not (_is_int(num_inference_steps) and num_inference_steps >= 1):
            raise InputError(f"`num_inference_steps` must be an integer >= 1, got {num_inference_steps!r}")
        if self.generator.needs_scheduler and self.scheduler is None:
            raise ConfigError(f"the {self.backend} backend needs a `scheduler` component")
        most = getattr(getattr(self.scheduler, "config", None), "num_train_timesteps", None)
        if num_inference_steps is not None and most is not None and num_inference_steps > most:
            raise InputError(f"`num_inference_steps` must be at most the scheduler's {most} training steps, "
                             f"got {num_inference_steps}")
        videos = video if isinstance(video, (list, tuple)) else [video]
        if video is not None and not videos:
            raise InputError("`video` is an empty list: give at least one video")
        _check_videos(videos if video is not None else [], fps)

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
        if not (_is_number(fps) and math.isfinite(fps) and fps > 0):
            raise InputError(f"`fps` must be a positive number of frames per second, got {fps!r}")
        duration = frames.shape[0] / float(fps)
        # resample by time, as load_video does for files: frame k at k / target_fps
        times = np.arange(int(math.ceil(duration * target_fps - 1e-6))) / target_fps
        index = np.minimum(np.floor(times * fps + 1e-6).astype(int), frames.shape[0] - 1)
        if index.size == 0:  # frames shorter than one encoder frame: the first one stands for them
            index = np.zeros(1, int)
        return _PreparedVideo(_resize_frames(frames, index, size), duration)

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
            video_condition = _as_condition(video_embeds, device, fps, int(self.video_encoder.config.hidden_dim))
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
    def embed_video(self, video: VideoInput, fps: Optional[float] = None,
                    max_video_seconds: Optional[float] = MAX_VIDEO_SECONDS, seconds: Optional[float] = None) -> torch.Tensor:
        """The video's contrastive embedding ``[E]`` (L2-normalised), as used for retrieval.

        ``max_video_seconds`` bounds the video read, as in ``__call__``. ``seconds`` embeds only the
        video's first seconds: music written for that stretch is compared with it (a head with a rhythm
        part compares clips of the same length).
        """
        head = self._contrastive_head()
        _check_videos([video], fps)
        if seconds is not None:
            _check_seconds(seconds, "seconds")
        check_lengths([video], fps, None, None, max_video_seconds)
        return self._embed_prepared_video(self.prepare_video(video, fps), head, seconds)

    def _embed_prepared_video(self, prepared: _PreparedVideo, head, seconds: Optional[float] = None) -> torch.Tensor:
        """The contrastive embedding ``[E]`` of frames already at the encoder's fps and size (their first
        ``seconds`` when given: a rhythm part compares clips of the same length)."""
        fps = float(self.video_encoder.config.fps)
        frames = prepared.frames if seconds is None else prepared.frames[: max(1, math.ceil(seconds * fps - 1e-9))]
        envelope = self.visual_beat_envelope(frames) if head.config.rhythm_frames else None
        pooled = self.pooled_video(frames)
        onload(head)
        return head.embed_video(pooled, envelope)[0]

    # What the contrastive head reads: pooled embeddings, and for a rhythm part the envelopes that say when
    # things happen. Frames are uint8 (T, H, W, 3) at the encoder's fps and size; audio (C, S) at the
    # pipeline's rate with the codec's channels.

    def pooled_video(self, frames: np.ndarray) -> torch.Tensor:
        """``[1, Dv]``: the video encoder's pooled embedding of ``frames``."""
        return self.video_encoder(torch.from_numpy(frames)[None].to(self._execution_device)).pooled

    def pooled_music(self, audio: np.ndarray) -> torch.Tensor:
        """``[1, Dm]``: the generator's embedding of ``audio`` read with every condition dropped."""
        onload(self.codec)
        target = self.generator.encode_music(self.codec, torch.from_numpy(np.ascontiguousarray(audio))[None].to(self._execution_device))
        onload(self.generator)
        return self.generator.embed_music(target)

    def visual_beat_envelope(self, frames: np.ndarray) -> torch.Tensor:
        """``[1, T]``: the visual beat envelope of ``frames`` (:func:`~vmas_diffusion.beats.visual_beats`)."""
        beats = visual_beats(frames, float(self.video_encoder.config.fps))
        return torch.as_tensor(np.asarray(beats.envelope, np.float32))[None]

    def music_onset_envelope(self, audio: np.ndarray) -> torch.Tensor:
        """``[1, T]``: the onset envelope of ``audio`` at the codec's frame rate."""
        from vmas_diffusion.beats import onset_envelope  # librosa: only for a head with a rhythm part

        return torch.as_tensor(onset_envelope(audio.mean(0), self.sample_rate, float(self.codec.frame_rate)))[None]

    def prepare_music(self, wav, sample_rate: int) -> np.ndarray:
        """``wav`` ``(C, S)`` or ``(S,)`` at ``sample_rate`` -> float32 ``(C, S)`` at the pipeline's rate with
        the codec's channels (what ``pooled_music`` and ``music_onset_envelope`` read)."""
        rate = _check_sample_rate(sample_rate)
        audio = audio_to_numpy(wav, "music")  # float32 (C, S), finite, with samples
        if audio.shape[0] != self.codec.channels:  # mono codec from stereo music, or the reverse
            audio = np.repeat(audio.mean(0, keepdims=True), self.codec.channels, axis=0)
        return resample(audio, rate, self.sample_rate)

    @torch.no_grad()
    def embed_music(self, wav, sample_rate: int) -> torch.Tensor:
        """The music's contrastive embedding ``[E]`` from ``wav`` ``(C, S)`` or ``(S,)``.

        The generator reads the music with every condition dropped, so the embedding
        depends on the music alone.
        """
        head = self._contrastive_head()
        audio = self.prepare_music(wav, sample_rate)
        envelope = self.music_onset_envelope(audio) if head.config.rhythm_frames else None
        music = self.pooled_music(audio)
        onload(head)
        return head.embed_music(music, envelope)[0]

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
        max_music_seconds: Optional[float] = MAX_MUSIC_SECONDS,
        max_video_seconds: Optional[float] = MAX_VIDEO_SECONDS,
        latents: Optional[torch.Tensor] = None,
        callback_on_step_end: Optional[Callable] = None,
        callback_on_step_end_tensor_inputs: Optional[List[str]] = None,
        num_candidates: int = 1,
        sync_beats: bool = False,
        max_stretch: float = DEFAULT_MAX_STRETCH,
        pace_weight: float = 0.0,
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
                frame rate (``video_encoder.config.fps``, ``D = video_encoder.config.hidden_dim``), to skip
                the video encoder.
            max_music_seconds: the most music this call may write, all waveforms together (default 1800 s);
                None lifts the limit.
            max_video_seconds: the longest video this call may read, as its header or frame count claims
                (default 1800 s); None lifts the limit. Both are checked before anything is decoded
                (:mod:`vmas_diffusion.limits`).
            latents: the initial noise of a latent backend (LDM), ``[B, latent_dim, frames]`` with
                ``frames = ceil(duration * codec.frame_rate)``, instead of drawing it from ``generator``:
                the output then depends on it alone (deterministic samplers). A token backend raises InputError.
            callback_on_step_end: ``fn(pipe, step, timestep, callback_kwargs) -> dict`` called after every
                sampling step (LDM: each denoising step; AR: each token step), as in diffusers;
                ``step`` counts over all windows up to ``pipe.num_timesteps``. A returned dict replaces
                the tensors it names (same shape and dtype).
            callback_on_step_end_tensor_inputs: the tensors put in ``callback_kwargs``, among
                ``pipe._callback_tensor_inputs`` (``["latents"]`` LDM, ``["tokens"]`` AR); default all.
            num_candidates: draw every waveform this many times and keep the one that scores best on beat
                hits and contrastive video-music similarity (:mod:`.alignment`); scores in ``candidates``.
            sync_beats: warp the music's time so its beats land on the visual beats
                (:func:`~vmas_diffusion.beats.sync.sync_to_beats`, length kept); report in ``beat_sync``.
            max_stretch: the most a stretch of the music may differ from 1 under ``sync_beats`` (0.15 = ±15 %).
            pace_weight: with ``num_candidates > 1``, also prefer the candidate whose onset rate is the video's pace
                on the music's scale (the generator's ``pace_map``; :mod:`.alignment`); 0 = beats and similarity only.
            generation_kwargs: passed to the generator (AR: ``top_k``, ``top_p``, ``temperature``).
        """
        # 1. check inputs
        self.check_inputs(video, fps, duration, video_embeds, guidance_scale, num_waveforms_per_video, output_type, num_inference_steps)
        _check_generator_arg(generator)
        _check_generation_kwargs(self.generator, generation_kwargs)
        videos = [] if video is None else (list(video) if isinstance(video, (list, tuple)) else [video])
        check_alignment_inputs(num_candidates, sync_beats, max_stretch, pace_weight)
        pace_table(self.generator, pace_weight)  # a pace term without a pace map fails before any work
        # every candidate is music written: the limit counts them all
        batch = num_candidates * num_waveforms_per_video * (len(videos) or _embeds_batch(video_embeds))
        check_lengths(videos, fps, duration, max_music_seconds, max_video_seconds, batch)
        step_callback = self._step_callback(callback_on_step_end, callback_on_step_end_tensor_inputs)
        if step_callback is not None:
            generation_kwargs["callback"] = step_callback
        if latents is not None:
            if "latents" not in inspect.signature(self.generator.generate).parameters:
                raise InputError(f"`latents` are the initial noise of a latent backend; the {self.backend} backend samples without them")
            generation_kwargs["latents"] = latents

        # 2. load the video(s), find visual beats, encode
        prepared = [self.prepare_video(v, fps) for v in videos]
        video_condition, beat_condition, analyses = self.encode_video(prepared, video_embeds)
        if duration is None:
            duration = max(p.duration for p in prepared)
        num_samples = int(round(duration * self.sample_rate))
        if num_samples < 1:
            raise InputError(f"{duration:.3g} s of music is less than one sample at {self.sample_rate} Hz: "
                             "ask for a longer `duration`")
        conditions = {
            VIDEO: video_condition.repeat_interleave(num_waveforms_per_video),
            BEAT: beat_condition.repeat_interleave(num_waveforms_per_video),
        }
        batch = conditions[VIDEO].tensor.shape[0]
        if isinstance(generator, list) and len(generator) != batch:
            raise InputError(f"got {len(generator)} generators for {batch} waveforms")

        # 3-5. prepare tokens or latents, generate them and decode (the generator knows which)
        num_frames = max(1, int(math.ceil(duration * self.codec.frame_rate)))
        candidates = []
        for _ in range(num_candidates):  # the same generator(s) consumed in turn: candidate 0 is the N = 1 output
            audio = self.generator.generate_audio(
                self.codec, conditions, num_frames, scheduler=self.scheduler, num_inference_steps=num_inference_steps,
                guidance_scale=guidance_scale, generator=generator, progress_bar=self._sized_progress_bar, **generation_kwargs,
            )
            # 6. trim to the asked duration
            if audio.shape[-1] < num_samples:
                audio = F.pad(audio, (0, num_samples - audio.shape[-1]))
            audio = audio[..., :num_samples].float().clamp(-1.0, 1.0).cpu()
            if not torch.isfinite(audio).all():  # e.g. a guidance scale so large that the sampling overflows
                raise InputError(f"the {self.backend} generator produced NaN or infinite samples "
                                 f"(guidance_scale={guidance_scale:g}; a smaller one, or other weights, avoid it)")
            candidates.append(audio)

        # 7. keep the best candidate, put its beats on the video's (alignment.py), and return
        scores = syncs = kept_beats = None
        audio = candidates[0]
        if num_candidates > 1:
            audio, scores, kept_beats = select_candidates(self, candidates, analyses, prepared, num_waveforms_per_video,
                                                         pace_weight)
        if sync_beats:
            audio, syncs = sync_waveforms(audio, self.sample_rate, analyses, num_waveforms_per_video, max_stretch,
                                          kept_beats)
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


def _as_condition(video_embeds, device, frame_rate: float, dim: int) -> Condition:
    """``video_embeds`` as the video Condition; a bare ``[B, T, D]`` tensor is at the encoder's ``frame_rate``."""
    if isinstance(video_embeds, Condition):
        condition = video_embeds
    elif hasattr(video_embeds, "condition"):
        condition = video_embeds.condition()
    elif isinstance(video_embeds, torch.Tensor) and video_embeds.dim() == 3 and video_embeds.is_floating_point():
        mask = torch.ones(video_embeds.shape[:2], dtype=torch.bool)
        condition = Condition(video_embeds, mask, frame_rate)
    else:
        raise InputError("`video_embeds` must be a VideoEncoderOutput, a Condition or a float [B, T, D] tensor")
    b, t, d = condition.tensor.shape
    if d != dim or t == 0 or b == 0:
        raise InputError(f"`video_embeds` must be [B, T, D={dim}] with B, T > 0, got {tuple(condition.tensor.shape)}")
    if condition.frame_rate is None:
        raise InputError("`video_embeds` is a Condition without a frame_rate: set the Hz of its time axis")
    return condition.to(device)


def _check_videos(videos: list, fps) -> None:
    """Each video is a path or frames; frames need a positive number ``fps``."""
    for item in videos:
        if not isinstance(item, (str, Path, np.ndarray, torch.Tensor)):
            raise InputError(f"each video must be a path or a (T, H, W, 3) uint8 array, got {type(item).__name__}")
        if isinstance(item, (np.ndarray, torch.Tensor)) and fps is None:
            raise InputError("`fps` is required when `video` is an array of frames")
    if fps is not None and not (_is_number(fps) and math.isfinite(fps) and fps > 0):
        raise InputError(f"`fps` must be a positive number of frames per second, got {fps!r}")


#: what the pipeline itself passes to ``generate``: not for ``generation_kwargs``
#: generate() arguments the pipeline fills itself (``callback`` and ``latents`` come from
#: ``callback_on_step_end`` and ``latents=``, ``spectral_flux`` from the codec), so not user generation options
_PIPELINE_ARGS = {"self", "conditions", "num_frames", "guidance_scale", "generator", "progress_bar", "scheduler",
                  "num_inference_steps", "callback", "latents", "spectral_flux"}


def _check_generation_kwargs(model, kwargs: dict) -> None:
    """Names ``model.generate`` does not take raise InputError listing those it does (a typo is no traceback)."""
    params = inspect.signature(model.generate).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    known = sorted(set(params) - _PIPELINE_ARGS)
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        raise InputError(f"the {model.backend} generator takes no {', '.join(map(repr, unknown))}; "
                         f"its options are: {', '.join(known) or 'none'}")


def _embeds_batch(video_embeds) -> int:
    """Videos in ``video_embeds`` (1 when it cannot tell: the conversion checks it later)."""
    tensor = getattr(video_embeds, "tensor", getattr(video_embeds, "hidden", video_embeds))
    return int(tensor.shape[0]) if isinstance(tensor, torch.Tensor) and tensor.dim() == 3 else 1


def _is_number(value) -> bool:
    """A real number, not a bool or a string (``fps="8"`` is a mistake worth naming)."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _check_seconds(value, name: str) -> None:
    if not (_is_number(value) and math.isfinite(value) and value > 0):
        raise InputError(f"`{name}` must be a positive number of seconds, got {value!r}")


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _check_generator_arg(generator) -> None:
    """None, a torch.Generator, or a list with one per waveform (None items draw from the global RNG)."""
    if generator is None or isinstance(generator, torch.Generator):
        return
    if isinstance(generator, (list, tuple)) and generator and all(g is None or isinstance(g, torch.Generator) for g in generator):
        return
    raise InputError(
        f"`generator` must be a torch.Generator or a list of them, got {generator!r} "
        "(for a seed, pass torch.Generator().manual_seed(seed))"
    )


#: frames resized per interpolate call: bounds the float copy of full-size frames
_RESIZE_BYTES = 64 << 20


def _resize_frames(frames: np.ndarray, index: np.ndarray, size: int) -> np.ndarray:
    """``frames[index]`` resized to ``size x size``, uint8 ``(len(index), size, size, 3)``.

    Each source frame used is resized once, a chunk at a time, and only the small frames are
    repeated: memory follows the output's size, not the input's resolution times repeats.
    """
    used, inverse = np.unique(index, return_inverse=True)
    small = np.empty((used.size, size, size, 3), np.uint8)
    step = max(1, _RESIZE_BYTES // (4 * int(np.prod(frames.shape[1:]))))
    for s in range(0, used.size, step):
        chunk = torch.from_numpy(np.ascontiguousarray(frames[used[s : s + step]])).permute(0, 3, 1, 2).float()
        resized = F.interpolate(chunk, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        small[s : s + step] = resized.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return small if used.size == index.size else small[inverse.reshape(-1)]


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
