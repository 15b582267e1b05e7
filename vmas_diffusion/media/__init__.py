"""Media I/O: video frames (decord, PyAV), audio (soundfile, PyAV, soxr), muxing music into video."""

from vmas_diffusion.media.audio import load_audio, resample, save_audio
from vmas_diffusion.media.export import export_to_video_with_audio
from vmas_diffusion.media.video import VideoClip, VideoInfo, iter_video_chunks, load_video, probe_video

__all__ = [
    "VideoClip",
    "VideoInfo",
    "probe_video",
    "load_video",
    "iter_video_chunks",
    "load_audio",
    "save_audio",
    "resample",
    "export_to_video_with_audio",
]
