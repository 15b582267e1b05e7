"""The training objective, apart from the models: a sum of named, weighted losses.

``total = w_gen * (the generator's own losses, e.g. AR "ce" / LDM "diffusion")
        + w_contrastive * InfoNCELoss(ContrastiveHead(video pooled [B, Dv], music_embedding [B, Dm]))
        + BeatAlignmentLoss(onset_logits, onset target, visual envelope at the music rate, aligned, mask)``

with ``BeatAlignmentLoss(onset_weight=w_beat_onset, visual_weight=w_beat_visual)``. A zero weight
skips its term (not computed, not returned).

Per-sample randomness. Every sample carries ``uid`` (see :mod:`vmas_diffusion.data.dataset`); the
randomness of a step (condition dropout, diffusion timesteps and noise) is drawn from generators
seeded by ``(seed, uid)``, and the dropout layers' masks
(:class:`~vmas_diffusion.modules.item_randomness.ItemDropout`) from a hash of ``(seed, uid)``, never
from the process's running RNG. So a step is a pure function of the weights and the batch: a resumed
run repeats an unbroken one exactly, and a sample gets the same noise and dropout masks on whatever
process and in whatever batch it lands (padding included).

Several processes. Each loss is a mean over elements (valid music frames for the generator's loss
and ``beat_onset``, aligned items for ``beat_visual``, items for the contrastive loss). A process
holding ``n_r`` of the global ``N`` elements returns its mean times ``n_r / (N / W)``
(``mean_over_processes`` gives ``N / W``: one collective per step), so the processes' average,
which is what DDP's gradient averaging and the logged loss take, is the mean over the global
batch's elements: the one-process objective, whatever the windows' lengths. On one process the
factor is exactly 1.
"""

from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from ..conditions import BEAT, PACE, VIDEO, Condition, local_pace
from ..errors import ConfigError, InputError
from ..losses import BeatAlignmentLoss, InfoNCELoss, resample_envelope
from ..modules.item_randomness import mix_seed, per_item_dropout

__all__ = ["VideoMusicTask", "item_generators", "mix_seed", "batch_to_device", "conditions_for_generation"]

#: salt of the dropout masks' seeds, apart from the generators' draws
_DROPOUT_SALT = 2


def item_generators(seed: int, uids: torch.Tensor, salt: int = 0) -> List[torch.Generator]:
    """One CPU ``torch.Generator`` per sample, seeded by ``(seed, salt, uid)``."""
    return [torch.Generator().manual_seed(mix_seed(seed, salt, int(u))) for u in uids.tolist()]


class VideoMusicTask(nn.Module):
    """Video encoder + generator + contrastive heads trained on one objective.

    Args:
        video_encoder: :class:`~vmas_diffusion.models.video_encoder.TemporalVideoEncoder`.
        generator: a :class:`~vmas_diffusion.models.generators.MusicGenerator`.
        contrastive_head: :class:`~vmas_diffusion.models.contrastive_head.ContrastiveHead`, or None (then the
            contrastive weight must be 0).
        weights: the recipe's ``losses`` section (``generation``, ``contrastive``, ``beat_onset``,
            ``beat_visual``, ``beat_tolerance_frames``, ``onset_emphasis``).
        seed: the run's seed, mixed into every per-sample generator.
        mean_over_processes: ``[n] float64 -> [n]``, the mean of a tensor over the training processes
            (the trainer passes Accelerate's ``reduce(..., "mean")``); None: one process.
    """

    def __init__(
        self, video_encoder, generator, contrastive_head, weights, seed: int = 0,
        mean_over_processes: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    ):  # fmt: skip
        super().__init__()
        self.mean_over_processes = mean_over_processes
        self.w_gen = float(weights.generation)
        self.w_contrastive = float(weights.contrastive)
        for name in ("generation", "contrastive", "beat_onset", "beat_visual", "onset_emphasis"):
            if float(getattr(weights, name)) < 0:
                raise ConfigError(f"losses.{name} must be >= 0, got {getattr(weights, name)}")
        if self.w_contrastive > 0 and contrastive_head is None:
            raise ConfigError("losses.contrastive > 0 needs the recipe's contrastive heads (contrastive: is null)")
        self.video_encoder = video_encoder
        self.generator = generator
        # heads with zero weight are left out, so DDP never sees unused parameters from them
        self.contrastive_head = contrastive_head if self.w_contrastive > 0 else None
        self.contrastive_loss = InfoNCELoss()
        self.beat_loss = BeatAlignmentLoss(
            onset_weight=float(weights.beat_onset),
            visual_weight=float(weights.beat_visual),
            tolerance_frames=int(weights.beat_tolerance_frames),
        )
        self.use_beat = float(weights.beat_onset) > 0 or float(weights.beat_visual) > 0
        self.onset_emphasis = float(weights.onset_emphasis)
        self.seed = int(seed)
        if not getattr(generator, "music_key", ""):
            raise ConfigError(f"{type(generator).__name__} is not a MusicGenerator (it names no music_key)")
        self.music_key = generator.music_key
        config = getattr(generator, "config", {})
        self.pace_seconds = float(config.get("pace_seconds", 0)) if config.get("pace_source") == "music" else 0.0

    # ------------------------------------------------------------------ conditions
    def encode_video(self, batch: Dict[str, torch.Tensor]):
        """``frames [B, T, H, W, 3]`` or ``features [B, T, F]`` -> ``(VideoEncoderOutput, beat Condition)``."""
        mask = batch["video_mask"]
        if "frames" in batch:
            out = self.video_encoder(batch["frames"], mask)
        elif "features" in batch:
            out = self.video_encoder.encode_features(batch["features"], mask)
        else:
            raise InputError("training batch has neither 'frames' nor 'features'")
        envelope = batch["visual_envelope"].to(out.hidden.dtype)
        beat = Condition(envelope[..., None] * mask[..., None].to(envelope.dtype), mask, out.frame_rate)
        return out, beat

    def generator_batch(self, batch: Dict[str, torch.Tensor], video_out, beat: Condition, salt: int = 0) -> dict:
        if self.music_key not in batch:
            raise InputError(
                f"the {self.generator.backend} backend trains on '{self.music_key}', which the data lacks: prepare "
                f"the data with a codec that offers them"
            )
        conditions = {VIDEO: video_out.condition(), BEAT: beat}
        if self.pace_seconds > 0:  # the target music's own pace: a control the music learns to follow
            if "onset" not in batch:
                raise InputError("pace_source='music' trains on the music's onset envelope ('onset'), which the data lacks")
            onset = Condition(batch["onset"][..., None], batch["music_mask"], float(self.generator.config.frame_rate))
            conditions[PACE] = local_pace(onset, self.pace_seconds)
        out = {
            self.music_key: batch[self.music_key],
            "conditions": conditions,
            "mask": batch["music_mask"],
            "generator": item_generators(self.seed, batch["uid"], salt),
        }
        if self.onset_emphasis > 0:
            out["frame_weight"] = 1.0 + self.onset_emphasis * batch["onset"]
        return out

    # ------------------------------------------------------------------ objective
    def forward(
        self, batch: Dict[str, torch.Tensor], salt: int = 0
    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
        """One batch (already on the device) -> ``(total loss, weighted terms, detached metrics)``.

        ``salt`` varies the randomness between passes over the same samples (validation uses a fixed one).
        """
        uids = batch["uid"]
        device = uids.device
        devices = [device] if device.type == "cuda" else []
        # dropout masks: per sample (ItemDropout); any draw from the global RNG: seeded by this batch's samples
        dropout_seeds = [mix_seed(self.seed, salt, _DROPOUT_SALT, u) for u in uids.tolist()]
        with torch.random.fork_rng(devices=devices), per_item_dropout(dropout_seeds):
            torch.manual_seed(mix_seed(self.seed, salt, 1, *uids.tolist()))  # any other draw: same on a resume
            video_out, beat = self.encode_video(batch)
            out = self.generator.forward_train(self.generator_batch(batch, video_out, beat, salt))
        losses = dict(out.losses)  # every value a mean over the elements its count names
        counts = dict(out.loss_counts)
        metrics: Dict[str, torch.Tensor] = {}
        if self.contrastive_head is not None:
            rhythm = {}
            if self.contrastive_head.config.rhythm_frames:  # when things happen: visual beats, the music's onsets
                if "onset" not in batch:
                    raise InputError("a contrastive head with a rhythm part trains on the music's onset envelope ('onset'), "
                                     "which the data lacks")
                rhythm = dict(beat_envelope=beat.tensor[..., 0], onset_envelope=batch["onset"] * batch["music_mask"])
            result = self.contrastive_loss(*self.contrastive_head(video_out.pooled, out.music_embedding, **rhythm))
            losses["contrastive"] = result["contrastive"]
            metrics["logit_scale"] = result["logit_scale"]
            metrics["contrastive_accuracy"] = result["contrastive_accuracy"]
        if self.use_beat:
            music_rate = float(self.generator.config.frame_rate)
            onset = batch["onset"]
            # each item's own frames, so the envelope near its end does not depend on the batch's padding
            envelope = torch.stack([
                resample_envelope(env[: int(n)], float(video_out.frame_rate), music_rate, onset.shape[-1])
                for env, n in zip(batch["visual_envelope"], batch["video_mask"].sum(1).tolist())
            ])  # fmt: skip
            losses.update(self.beat_loss(out.onset_logits, onset, envelope.to(onset), batch["aligned"], batch["music_mask"]))
            counts.update(self.beat_loss.counts(batch["aligned"], batch["music_mask"]))
        losses = self._global_means(losses, counts, len(uids))
        terms: Dict[str, torch.Tensor] = {}
        for name, value in losses.items():
            if name in out.losses:
                if self.w_gen > 0:
                    terms[name] = self.w_gen * value
                else:
                    metrics[name] = value.detach()
            elif name == "contrastive":
                terms[name] = self.w_contrastive * value
            else:
                terms[name] = value  # the beat terms come weighted
        if not terms:
            raise ConfigError("every loss weight is 0: nothing to train")
        total = torch.stack([t.float() for t in terms.values()]).sum()
        return total, terms, metrics

    def _global_means(self, losses: Dict[str, torch.Tensor], counts: Dict[str, torch.Tensor], items: int) -> Dict[str, torch.Tensor]:
        """Each process's means scaled so that their average over processes is the global batch's mean
        (module docstring); unchanged on one process. A loss without a count averages the items."""
        if self.mean_over_processes is None or not losses:
            return losses
        device = next(iter(losses.values())).device
        local = torch.stack([torch.as_tensor(counts.get(name, items), dtype=torch.float64).to(device) for name in losses])
        mean = self.mean_over_processes(local.clone())
        factor = torch.where(mean > 0, local / mean.clamp(min=1e-300), torch.zeros_like(local))
        return {name: value * factor[i].to(value.dtype) for i, (name, value) in enumerate(losses.items())}


def batch_to_device(batch: Dict[str, torch.Tensor], device) -> Dict[str, torch.Tensor]:
    """Move a collated batch to ``device`` (uint8 frames stay uint8; the encoder converts per chunk)."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def conditions_for_generation(task: VideoMusicTask, batch: Dict[str, torch.Tensor]) -> Dict[str, Condition]:
    """The ``{"video", "beat"}`` conditions of a batch, as the pipeline builds them at inference."""
    video_out, beat = task.encode_video(batch)
    return {VIDEO: video_out.condition(), BEAT: beat}

