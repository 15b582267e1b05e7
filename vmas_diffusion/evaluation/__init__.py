"""Evaluation: FAD, CLAP score, beat coverage/hit scores, retrieval, speed and memory.

``run_evaluation`` is what ``vmas-diffusion evaluate`` calls: it generates music for every
clip of an evaluation set with every model (cached per model, clip, seed and settings), and
writes one table (Markdown and JSON) with a column per model.
"""

from .analysis import ClipAnalysis, analysis_key, load_analysis, save_analysis
from .cache import GenerationCache, GenerationRecord, generation_key, model_fingerprint
from .dataset import EvalClip, load_eval_set
from .embedders import AudioEmbedder, MelStatsConfig, MelStatsEmbedder, build_embedder
from .fad import GaussianStats, fit_gaussian, frechet_audio_distance, frechet_distance
from .metrics import PeakMemory, beat_offsets, cosine
from .plots import plot_offset_histogram
from .report import EvaluationReport, ModelColumn
from .runner import EvaluationConfig, Evaluator, default_pipeline_loader, run_evaluation

__all__ = [
    "AudioEmbedder",
    "ClipAnalysis",
    "EvalClip",
    "EvaluationConfig",
    "EvaluationReport",
    "Evaluator",
    "GaussianStats",
    "GenerationCache",
    "GenerationRecord",
    "MelStatsConfig",
    "MelStatsEmbedder",
    "ModelColumn",
    "PeakMemory",
    "analysis_key",
    "beat_offsets",
    "build_embedder",
    "cosine",
    "default_pipeline_loader",
    "fit_gaussian",
    "frechet_audio_distance",
    "frechet_distance",
    "generation_key",
    "load_analysis",
    "load_eval_set",
    "model_fingerprint",
    "plot_offset_histogram",
    "run_evaluation",
    "save_analysis",
]
