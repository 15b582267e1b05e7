"""User-facing helpers (the names the API contract lists under ``vmas_diffusion.utils``)."""

from vmas_diffusion.media import export_to_video_with_audio, load_audio, load_video, save_audio

__all__ = ["export_to_video_with_audio", "load_video", "load_audio", "save_audio"]
