"""Best-of-N and beat sync: the pipeline's two ways to put the music's beats on the video's.

**Best-of-N** (``num_candidates=N``): every output waveform is drawn N times (one generator call
per candidate, the same ``generator`` consumed in turn, so candidate 0 is what ``N = 1`` gives
and a seed fixes all N) and the candidate with the highest

    score = BHS + SIMILARITY_WEIGHT * cosine - pace_weight * |log((1 + music pace) / (1 + target pace))|

is kept, where BHS is the window-form Beat Hit Score (0.1 s) of the candidate's beats
(:func:`~vmas_diffusion.beats.music_beats`) against the video's visual beats, and cosine the
pipeline's contrastive video-music similarity (``embed_video`` over the music's duration /
``embed_music`` over the video's; left out for a pipeline without a contrastive head or a video given
as ``video_embeds`` only). With a head that has a rhythm part (the bundled ones) the cosine includes
the correlation of the candidate's onsets with the video's beat envelope: a soft beat hit score. BHS is in [0, 1]
and moves by 1 / (visual beats) per hit; the weight makes a cosine gap of 0.2 worth one hit in
ten. The pace term (``pace_weight > 0``, off by default) needs a generator with a ``pace_map``
(the video's pace put on its training music's scale, :func:`~vmas_diffusion.conditions.fit_pace_map`):
the music pace is the candidate's onsets per second (its tracked ``onsets``), the target the video's
beats per second (clip mean of :func:`~vmas_diffusion.conditions.local_pace` of its beat envelope)
through the map, whose music side (beats per second of the training music's onset envelope) runs
close to the onset rate (0.85x on real validation music, rank correlation 0.77). So of candidates
that hit the beats alike, the one as busy as music for such a video is kept. Ties go to the lower
index.

**Beat sync** (``sync_beats=True``): :func:`~vmas_diffusion.beats.sync.sync_to_beats` on the kept
waveform, with the visual beats its video was conditioned on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import numpy as np
import torch

from vmas_diffusion.beats import beat_scores
from vmas_diffusion.beats.sync import BeatSync, check_max_stretch, sync_to_beats
from vmas_diffusion.conditions import Condition, local_pace, map_pace, pace_window_seconds
from vmas_diffusion.errors import InputError

SIMILARITY_WEIGHT = 0.5
BEAT_TOLERANCE = 0.1  # seconds, the BHS window


@dataclass
class CandidateScores:
    """The candidates of one output waveform and which one was kept.

    Attributes:
        selected: index of the kept candidate.
        bhs: float64 ``(N,)`` BHS (window) of each candidate against the visual beats.
        similarity: float64 ``(N,)`` contrastive video-music cosine, or None without a contrastive head.
        score: float64 ``(N,)`` the module docstring's score, of the terms that apply.
        pace: float64 ``(N,)`` each candidate's onsets per second, or
            None without a pace map.
        target_pace: the video's pace on the music's scale, or None without a pace map.
    """

    selected: int
    bhs: np.ndarray
    similarity: Optional[np.ndarray]
    score: np.ndarray
    pace: Optional[np.ndarray] = None
    target_pace: Optional[float] = None

    def summary(self) -> dict:
        return {
            "selected": int(self.selected),
            "bhs": [float(x) for x in self.bhs],
            "similarity": None if self.similarity is None else [float(x) for x in self.similarity],
            "score": [float(x) for x in self.score],
            "pace": None if self.pace is None else [float(x) for x in self.pace],
            "target_pace": self.target_pace,
        }


def check_alignment_inputs(num_candidates, sync_beats, max_stretch, pace_weight=0.0) -> None:
    if isinstance(num_candidates, bool) or not isinstance(num_candidates, int) or num_candidates < 1:
        raise InputError(f"`num_candidates` must be an integer >= 1, got {num_candidates!r}")
    if isinstance(pace_weight, bool) or not isinstance(pace_weight, (int, float)) or not 0 <= pace_weight < float("inf"):
        raise InputError(f"`pace_weight` must be a finite number >= 0, got {pace_weight!r}")
    if not isinstance(sync_beats, bool):
        raise InputError(f"`sync_beats` must be True or False, got {sync_beats!r}")
    check_max_stretch(max_stretch)


def _video_embeddings(pipe, prepared, seconds: float) -> Optional[List[torch.Tensor]]:
    """Each video's contrastive embedding ``[E]`` over its first ``seconds`` (the music's length), or None
    (no contrastive head, or no frames)."""
    if pipe.contrastive_head is None or not prepared:
        return None
    return [pipe._embed_prepared_video(p, pipe.contrastive_head, seconds) for p in prepared]


def pace_table(generator, pace_weight: float) -> Optional[list]:
    """The generator's ``pace_map`` when the pace term is on, None when it is off; InputError when it is on
    and the generator has no map."""
    if not pace_weight:
        return None
    table = generator.config.get("pace_map")
    if table is None:
        raise InputError("`pace_weight` scores the music's pace against the video's, which needs a generator with a "
                         "pace_map (the bundled models have one; train_vmas_tiny.py restage fits it)")
    return table


def _mean_pace(envelope, frame_rate: float, window_seconds: float, table) -> float:
    """Beats per second of an envelope ``(T,)``, the clip mean of :func:`local_pace` through ``table``."""
    strength = torch.as_tensor(np.asarray(envelope, np.float32))[None, :, None]
    pace = local_pace(Condition(strength, torch.ones(strength.shape[:2], dtype=torch.bool), frame_rate), window_seconds)
    return float(map_pace(pace, table).tensor[0, :, 0].mean())


def select_candidates(pipe, candidates: List[torch.Tensor], analyses, prepared, num_waveforms_per_video: int,
                      pace_weight: float = 0.0):
    """``(kept audio (B, C, S), [CandidateScores per waveform], [MusicBeats of each kept waveform])`` from
    ``candidates`` (N of ``(B, C, S)``); the beats spare :func:`sync_waveforms` tracking them again.
    ``pace_weight > 0`` with a generator without a ``pace_map`` raises InputError."""
    from vmas_diffusion.beats.music import music_beats  # librosa: only when candidates are scored

    sample_rate = pipe.sample_rate
    videos = _video_embeddings(pipe, prepared, candidates[0].shape[-1] / sample_rate)
    table, window = pace_table(pipe.generator, pace_weight), pace_window_seconds(pipe.generator.config)
    kept, reports, kept_beats = [], [], []
    for b in range(candidates[0].shape[0]):
        v = b // num_waveforms_per_video
        visual = np.zeros(0) if analyses[v] is None else np.asarray(analyses[v].times, np.float64)
        target = None
        if table is not None and analyses[v] is not None:
            target = _mean_pace(analyses[v].envelope, analyses[v].fps, window, table)
        bhs, sim, beats, pace = [], [], [], []
        for audio in candidates:
            wav = audio[b].numpy()
            duration = wav.shape[-1] / sample_rate
            beats.append(music_beats(wav, sample_rate))
            bhs.append(beat_scores(beats[-1].times, visual, duration, BEAT_TOLERANCE)["bhs_window"])
            if videos is not None:
                seen = wav[..., : max(1, int(round(prepared[v].duration * sample_rate)))]  # the music the video covers
                sim.append(float(torch.dot(videos[v], pipe.embed_music(seen, sample_rate).to(videos[v].device))))
            if target is not None:
                pace.append(len(beats[-1].onsets) / duration)
        bhs_a = np.asarray(bhs, np.float64)
        sim_a = np.asarray(sim, np.float64) if videos is not None else None
        pace_a = np.asarray(pace, np.float64) if target is not None else None
        score = bhs_a + SIMILARITY_WEIGHT * sim_a if sim_a is not None else bhs_a.copy()
        if pace_a is not None:
            score -= pace_weight * np.abs(np.log((1.0 + pace_a) / (1.0 + target)))
        best = int(np.argmax(score))  # the first of equal scores
        kept.append(candidates[best][b])
        reports.append(CandidateScores(best, bhs_a, sim_a, score, pace_a, target))
        kept_beats.append(beats[best])
    return torch.stack(kept), reports, kept_beats


def sync_waveforms(audio: torch.Tensor, sample_rate: int, analyses, num_waveforms_per_video: int,
                   max_stretch: float, music: Optional[list] = None) -> tuple[torch.Tensor, List[BeatSync]]:
    """Each waveform of ``audio`` ``(B, C, S)`` warped onto its video's visual beats, and the reports.
    ``music``: each waveform's beats when they are tracked already (best-of-N)."""
    out, reports = [], []
    for b in range(audio.shape[0]):
        analysis = analyses[b // num_waveforms_per_video]
        visual = np.zeros(0) if analysis is None else analysis.times
        warped, report = sync_to_beats(audio[b].numpy(), sample_rate, visual, max_stretch, BEAT_TOLERANCE,
                                       music=None if music is None else music[b])
        if analysis is None:
            report.reason = "no visual beats: the video was given as video_embeds only"
        out.append(torch.from_numpy(np.ascontiguousarray(warped)))
        reports.append(report)
    return torch.stack(out), reports
