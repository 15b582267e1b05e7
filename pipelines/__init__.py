"""Pipelines of vmas-diffusion (installed as ``vmas_diffusion.pipelines``)."""

from .video_to_music import VideoToMusicPipeline, VideoToMusicPipelineOutput

__all__ = ["VideoToMusicPipeline", "VideoToMusicPipelineOutput"]
