"""The map from a video's pace onto its music's, fitted on prepared training shards.

A generator trained with ``pace_source="music"`` learns the target music's own local pace as a
control. At inference only the video is there: its pace (read off the beat condition) goes through
a quantile map onto the scale of the music's pace (:func:`vmas_diffusion.conditions.fit_pace_map`),
fitted here on the same training samples: at every valid video frame, the video's pace and the
music's pace at that instant.
"""

from typing import Optional

import torch

from ..conditions import Condition, fit_pace_map, local_pace
from ..data.dataset import ShardDataset
from ..errors import InputError


def pace_pairs(data_dir, window_seconds: float, max_samples: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(video pace [N, 2], music pace [N, 2])`` at every valid video frame of the prepared samples
    in ``data_dir`` (the first ``max_samples``), each over ``window_seconds`` centred windows."""
    data = ShardDataset(data_dir, batch_size=1, shuffle=False, num_batches=None)
    count = data.num_samples if max_samples is None else min(max_samples, data.num_samples)
    fps, music_rate = data.video_fps, data.music_frame_rate
    videos, musics = [], []
    for _, batch in zip(range(count), data):
        if "visual_envelope" not in batch or "onset" not in batch:
            raise InputError(f"{data_dir}: the samples lack 'visual_envelope' or 'onset'; prepare them with this toolkit")
        video = local_pace(Condition(batch["visual_envelope"][..., None].float(), batch["video_mask"], fps), window_seconds)
        music = local_pace(Condition(batch["onset"][..., None].float(), batch["music_mask"], music_rate), window_seconds)
        music = music.resample(video.tensor.shape[1], fps)  # the music's pace at each video frame's instant
        valid = video.mask[0] & music.mask[0]
        videos.append(video.tensor[0, valid])
        musics.append(music.tensor[0, valid])
    if not videos:
        raise InputError(f"{data_dir} holds no samples to fit a pace map on")
    return torch.cat(videos), torch.cat(musics)


def fit_pace_map_on_shards(data_dir, window_seconds: float, num_quantiles: int = 21, max_samples: Optional[int] = None) -> list:
    """A generator's ``pace_map``: :func:`~vmas_diffusion.conditions.fit_pace_map` of the video's pace
    onto the music's over the samples of ``data_dir`` (the training shards)."""
    return fit_pace_map(*pace_pairs(data_dir, window_seconds, max_samples), num_quantiles=num_quantiles)
