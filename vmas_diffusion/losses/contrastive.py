"""Global video-music contrastive objective (symmetric InfoNCE) and retrieval recall.

The loss
--------
For a local batch of ``B`` pairs on rank ``r`` of ``W`` processes, with projected, L2-normalised
embeddings ``v_i = embed_video(video_i)`` and ``m_i = embed_music(music_i)`` (``[B, E]``, from the
:class:`~vmas_diffusion.models.contrastive_head.ContrastiveHead`) and the
global batch ``V = gather(v)``, ``M = gather(m)`` (``[N, E]``, ``N = sum of the local batch sizes``)::

    s           = exp(min(log_scale, log 100))          # learnable inverse temperature, 1/0.07 at start
    logits_v2m  = s * v @ M.T                            # [B, N]
    logits_m2v  = s * m @ V.T                            # [B, N]
    y_i         = offset_r + i                           # the matching pair's global index
    contrastive = (CE(logits_v2m, y) + CE(logits_m2v, y)) / 2        # CE = mean over the B rows

Every rank scores its own rows against the whole global batch ("local loss", open_clip's
``local_loss=True``), so the negatives grow with the global batch while the logits stay ``[B, N]``.

Gathering keeps gradients on every slot (``torch.distributed.nn.functional.all_gather``, the
differentiable all-gather; open_clip's ``gather_with_grad=True``): a rank's features receive the
gradient of every rank's loss terms in which they appear as negatives (its backward is a
reduce-scatter that sums them). With the usual DDP / Accelerate gradient averaging over ranks, the
parameter gradients are then *exactly* those of one process computing the same loss on the full
batch, and the mean over ranks of ``contrastive`` is the full-batch loss. (Detaching the gathered
copies instead, open_clip's default, drops the cross-rank terms and changes the gradient.)
"""

from typing import Dict, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.models.modeling_utils import ModelMixin  # noqa: F401 - diffusers' pipeline loader looks it up here

from ..errors import InputError
from ..models.contrastive_head import MAX_LOGIT_SCALE, ContrastiveHead  # noqa: F401 - the old names live here too


def _distributed_world() -> Tuple[int, int]:
    """(rank, world size); (0, 1) when torch.distributed is not initialised."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _gather_with_offset(x: torch.Tensor) -> Tuple[torch.Tensor, int]:
    """Differentiable all-gather along dim 0 that tolerates uneven local batch sizes.

    Returns ``(gathered [N, ...], offset)`` where ``offset`` is the index of this rank's first row.
    """
    rank, world = _distributed_world()
    if world == 1:
        return x, 0
    import torch.distributed.nn.functional as dist_fn

    # Sizes first: all_gather needs equal shapes, so pad to the largest local batch and trim.
    size = torch.tensor([x.shape[0]], device=x.device, dtype=torch.long)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    torch.distributed.all_gather(sizes, size)
    sizes = [int(s.item()) for s in sizes]
    largest = max(sizes)
    padded = x
    if x.shape[0] < largest:
        padded = torch.cat([x, x.new_zeros((largest - x.shape[0],) + tuple(x.shape[1:]))], dim=0)
    parts = dist_fn.all_gather(padded)
    gathered = torch.cat([part[:n] for part, n in zip(parts, sizes)], dim=0)
    return gathered, sum(sizes[:rank])


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """All-gather ``x [B, ...]`` from every process into ``[world * B, ...]`` (rank order), keeping gradients.

    Uses the differentiable ``torch.distributed.nn.functional.all_gather``: every gathered slot,
    not only the local one, carries gradient back to the rank that produced it (its backward
    sums the slot's gradients over ranks). Local batch sizes may differ between ranks (the result
    then has ``sum of B`` rows). Identity when torch.distributed is not initialised or has one process.
    """
    return _gather_with_offset(x)[0]


class InfoNCELoss(nn.Module):
    """Symmetric InfoNCE over the global batch (see module docstring); it holds no parameters: the
    projections and the logit scale live in :class:`~vmas_diffusion.models.contrastive_head.ContrastiveHead`,
    whose ``forward`` gives this loss its inputs."""

    def forward(self, video: torch.Tensor, music: torch.Tensor, logit_scale: torch.Tensor) -> Dict[str, torch.Tensor]:
        """
        Args:
            video: ``[B, E]`` L2-normalised video embeddings (the local batch).
            music: ``[B, E]`` L2-normalised music embeddings; row ``i`` is the music of video ``i``.
            logit_scale: scalar inverse temperature.

        Returns:
            ``{"contrastive": scalar (the loss, with gradient), "logit_scale": detached scalar,
            "contrastive_accuracy": detached scalar}``; the accuracy is the video-to-music top-1 of the
            local rows against the global batch. Only ``"contrastive"`` is a loss term.
        """
        if video.shape != music.shape or video.dim() != 2:
            raise InputError(
                f"InfoNCELoss: video and music must be pairs of [B, E] embeddings, got {tuple(video.shape)} "
                f"and {tuple(music.shape)}"
            )
        # One collective for both sides: gather [B, 2E] and split.
        gathered, offset = _gather_with_offset(torch.cat([video, music], dim=1))
        all_video, all_music = gathered.split(video.shape[1], dim=1)
        logits_v2m = logit_scale * video @ all_music.T  # [B, N]
        logits_m2v = logit_scale * music @ all_video.T  # [B, N]
        labels = torch.arange(video.shape[0], device=video.device) + offset
        loss = 0.5 * (F.cross_entropy(logits_v2m, labels) + F.cross_entropy(logits_m2v, labels))
        accuracy = (logits_v2m.detach().argmax(dim=1) == labels).float().mean()
        return {"contrastive": loss, "logit_scale": logit_scale.detach(), "contrastive_accuracy": accuracy}


#: The head's name before it was split from the loss: pipelines saved then name
#: ``vmas_diffusion.losses.contrastive.ContrastiveLoss`` for their ``contrastive_head`` and load as the head.
ContrastiveLoss = ContrastiveHead


@torch.no_grad()
def retrieval_recall(
    video_emb: torch.Tensor, music_emb: torch.Tensor, ks: Sequence[int] = (1, 5)
) -> Dict[str, float]:
    """Video-to-music retrieval recall: pair ``i`` is the match of video ``i``.

    Embeddings are L2-normalised here, so cosine similarity ranks the candidates. A video scores
    a hit at ``k`` when fewer than ``k`` other pieces of music are at least as similar as its own
    (ties count against it, so a constant embedding cannot score). ``chance@k = min(k, N) / N`` is
    what random embeddings achieve on average.

    Args:
        video_emb: ``[N, E]`` video embeddings (e.g. ``ContrastiveHead.embed_video``).
        music_emb: ``[N, E]`` music embeddings, row ``i`` matching video ``i``.
        ks: the cut-offs.

    Returns:
        ``{"R@k": float, ..., "chance@k": float, ...}`` for every ``k`` in ``ks``.
    """
    if video_emb.dim() != 2 or music_emb.dim() != 2 or video_emb.shape != music_emb.shape:
        raise InputError(
            f"retrieval_recall: video_emb and music_emb must both be [N, E] of the same shape, got "
            f"{tuple(video_emb.shape)} and {tuple(music_emb.shape)}"
        )
    n = video_emb.shape[0]
    if n == 0:
        raise InputError("retrieval_recall: empty embeddings")
    if any(int(k) < 1 for k in ks):
        raise InputError(f"retrieval_recall: every k must be >= 1, got {tuple(ks)}")
    video = F.normalize(video_emb.float(), dim=-1)
    music = F.normalize(music_emb.float(), dim=-1)
    sim = video @ music.T  # [N, N]
    own = sim.diagonal().unsqueeze(1)
    # Rank of the true match = number of other candidates scoring at least as high.
    rank = (sim >= own).sum(dim=1) - 1
    out: Dict[str, float] = {}
    for k in ks:
        out[f"R@{k}"] = float((rank < k).float().mean())
    for k in ks:
        out[f"chance@{k}"] = min(int(k), n) / n
    return out
