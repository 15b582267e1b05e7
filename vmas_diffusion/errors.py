"""The project's own exceptions.

Every failure a user can cause (bad media, bad recipe, foreign checkpoint, bad
argument) raises a subclass of :class:`VMASError`; the CLI prints its message as
one line on stderr and exits with code 2.
"""


class VMASError(Exception):
    """Base class of every error vmas-diffusion raises on bad input."""


class MediaError(VMASError):
    """A media file cannot be used."""


class VideoDecodeError(MediaError):
    """A video is missing, corrupt, truncated, empty or has no video stream."""


class AudioDecodeError(MediaError):
    """An audio file or a video's audio track cannot be read."""


class MediaExportError(MediaError):
    """Writing a video or audio file failed."""


class ConfigError(VMASError):
    """A recipe or component config is invalid (unknown key, wrong type, bad value)."""


class CheckpointError(VMASError):
    """A checkpoint or model folder is missing, foreign, or does not match the model."""


class InputError(VMASError):
    """An argument to a public function or the pipeline is invalid."""
