"""Maps from a video's pace onto its music's, fitted on prepared training shards.

A generator trained with ``pace_source="music"`` learns the target music's own local pace as a
control. At inference only the video is there: its pace (read off the beat condition) goes through
a quantile map onto the scale of the music's pace (:func:`vmas_diffusion.conditions.fit_pace_map`),
fitted here on the same training samples: at every valid video frame, the video's pace and the
music's pace at that instant. The LDM's flux guidance takes its target the same way, from a map of a
window's video pace onto its music's spectral flux (:func:`fit_flux_map_on_shards`).
"""

from typing import Optional

import torch

from ..conditions import Condition, fit_pace_map, fit_quantile_map, local_pace
from ..data.dataset import ShardDataset
from ..errors import InputError


def _samples(data_dir, max_samples: Optional[int], keys: tuple):
    """``(video fps, music frame rate, the first max_samples prepared samples of data_dir, one at a time)``."""
    data = ShardDataset(data_dir, batch_size=1, shuffle=False, num_batches=None)
    count = data.num_samples if max_samples is None else min(max_samples, data.num_samples)

    def batches():
        for _, batch in zip(range(count), data):
            if any(key not in batch for key in keys):
                raise InputError(f"{data_dir}: the samples lack one of {keys}; prepare them with this toolkit")
            yield batch

    return data.video_fps, data.music_frame_rate, batches()


def _video_pace(batch, fps: float, window_seconds: float) -> Condition:
    return local_pace(Condition(batch["visual_envelope"][..., None].float(), batch["video_mask"], fps), window_seconds)


def pace_pairs(data_dir, window_seconds: float, max_samples: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(video pace [N, 2], music pace [N, 2])`` at every valid video frame of the prepared samples
    in ``data_dir`` (the first ``max_samples``), each over ``window_seconds`` centred windows."""
    fps, music_rate, batches = _samples(data_dir, max_samples, ("visual_envelope", "onset"))
    videos, musics = [], []
    for batch in batches:
        video = _video_pace(batch, fps, window_seconds)
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


def flux_pairs(data_dir, spectral_flux, window_seconds: float, max_samples: Optional[int] = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(video pace [N], music flux [N])`` of the prepared samples in ``data_dir`` that have a video:
    the mean over the sample of the video's beats per second (:func:`local_pace` over
    ``window_seconds``) and the mean of ``spectral_flux`` (a codec's, dB per frame) of its latents."""
    fps, _, batches = _samples(data_dir, max_samples, ("visual_envelope", "latents"))
    paces, fluxes = [], []
    for batch in batches:
        video = _video_pace(batch, fps, window_seconds)
        music = batch["music_mask"][0]
        if not video.mask[0].any() or int(music.sum()) < 2:
            continue
        paces.append(video.tensor[0, video.mask[0], 0].mean())
        with torch.no_grad():
            flux = spectral_flux(batch["latents"].float())[0]
        fluxes.append(flux[music[1:] & music[:-1]].mean())
    if len(paces) < 2:
        raise InputError(f"{data_dir} holds fewer than 2 samples with a video to fit a flux map on")
    return torch.stack(paces), torch.stack(fluxes)


def fit_flux_map_on_shards(data_dir, spectral_flux, window_seconds: float, num_quantiles: int = 21,
                           max_samples: Optional[int] = None) -> list:
    """An LDM's ``flux_map``: :func:`~vmas_diffusion.conditions.fit_quantile_map` of the training windows'
    video pace onto their music's spectral flux (:func:`flux_pairs`), so flux guidance asks of music
    for a calm video the flux that music under calm training videos has."""
    return fit_quantile_map(*flux_pairs(data_dir, spectral_flux, window_seconds, max_samples), num_quantiles=num_quantiles)
