"""Best-of-N and beat sync: the pipeline's two ways to put the music's beats on the video's.

**Best-of-N** (``num_candidates=N``): every output waveform is drawn N times (one generator call
per candidate, the same ``generator`` consumed in turn, so candidate 0 is what ``N = 1`` gives
and a seed fixes all N) and the candidate with the highest

    score = BHS + SIMILARITY_WEIGHT * cosine

is kept, where BHS is the window-form Beat Hit Score (0.1 s) of the candidate's beats
(:func:`~vmas_diffusion.beats.music_beats`) against the video's visual beats, and cosine the
pipeline's contrastive video-music similarity (``embed_video`` / ``embed_music``; left out for a
pipeline without a contrastive head or a video given as ``video_embeds`` only). BHS is in [0, 1]
and moves by 1 / (visual beats) per hit; the weight makes a cosine gap of 0.2 worth one hit in
ten. Ties go to the lower index.

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
        score: float64 ``(N,)`` ``bhs + SIMILARITY_WEIGHT * similarity`` (``bhs`` alone without similarity).
    """

    selected: int
    bhs: np.ndarray
    similarity: Optional[np.ndarray]
    score: np.ndarray

    def summary(self) -> dict:
        return {
            "selected": int(self.selected),
            "bhs": [float(x) for x in self.bhs],
            "similarity": None if self.similarity is None else [float(x) for x in self.similarity],
            "score": [float(x) for x in self.score],
        }


def check_alignment_inputs(num_candidates, sync_beats, max_stretch) -> None:
    if isinstance(num_candidates, bool) or not isinstance(num_candidates, int) or num_candidates < 1:
        raise InputError(f"`num_candidates` must be an integer >= 1, got {num_candidates!r}")
    if not isinstance(sync_beats, bool):
        raise InputError(f"`sync_beats` must be True or False, got {sync_beats!r}")
    check_max_stretch(max_stretch)


def _video_embeddings(pipe, prepared) -> Optional[List[torch.Tensor]]:
    """Each video's contrastive embedding ``[E]``, or None (no contrastive head, or no frames)."""
    if pipe.contrastive_head is None or not prepared:
        return None
    return [pipe._embed_prepared_video(p, pipe.contrastive_head) for p in prepared]


def select_candidates(pipe, candidates: List[torch.Tensor], analyses, prepared, num_waveforms_per_video: int):
    """``(kept audio (B, C, S), [CandidateScores per waveform], [MusicBeats of each kept waveform])`` from
    ``candidates`` (N of ``(B, C, S)``); the beats spare :func:`sync_waveforms` tracking them again."""
    from vmas_diffusion.beats.music import music_beats  # librosa: only when candidates are scored

    sample_rate = pipe.sample_rate
    videos = _video_embeddings(pipe, prepared)
    kept, reports, kept_beats = [], [], []
    for b in range(candidates[0].shape[0]):
        v = b // num_waveforms_per_video
        visual = np.zeros(0) if analyses[v] is None else np.asarray(analyses[v].times, np.float64)
        bhs, sim, beats = [], [], []
        for audio in candidates:
            wav = audio[b].numpy()
            duration = wav.shape[-1] / sample_rate
            beats.append(music_beats(wav, sample_rate))
            bhs.append(beat_scores(beats[-1].times, visual, duration, BEAT_TOLERANCE)["bhs_window"])
            if videos is not None:
                sim.append(float(torch.dot(videos[v], pipe.embed_music(wav, sample_rate).to(videos[v].device))))
        bhs_a = np.asarray(bhs, np.float64)
        sim_a = np.asarray(sim, np.float64) if videos is not None else None
        score = bhs_a + SIMILARITY_WEIGHT * sim_a if sim_a is not None else bhs_a
        best = int(np.argmax(score))  # the first of equal scores
        kept.append(candidates[best][b])
        reports.append(CandidateScores(best, bhs_a, sim_a, score))
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
