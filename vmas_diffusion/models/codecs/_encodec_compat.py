"""Import the ``encodec`` package (24/48 kHz EnCodec) without torchaudio.

``encodec==0.1.1`` declares torchaudio as a dependency, and ``encodec/utils.py`` imports it at
module level (only ``convert_audio`` and ``save_audio`` use it). Installing torchaudio would
pin an old torch and pull ~7 GB, so the package is installed with ``pip install --no-deps``
and imported here behind a placeholder: while ``import encodec`` runs, ``sys.modules`` holds a
stand-in ``torchaudio`` module whose attributes raise :class:`ImportError` with an explanation.
The stand-in is removed again right after, so ``import torchaudio`` anywhere else behaves as
before (the real package when installed, ImportError otherwise). Everything the codec uses
(SEANet encoder/decoder, residual VQ, model presets) never touches torchaudio.

Nothing else in the project imports ``encodec`` directly: go through :func:`import_encodec`.
"""

import importlib
import importlib.util
import sys
import types

from ...errors import ConfigError

_PLACEHOLDER_DOC = "Stand-in for torchaudio while vmas-diffusion imports the encodec package."


class _MissingTorchaudio(types.ModuleType):
    """A module whose every attribute access raises ImportError naming the cause."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise ImportError(
            f"torchaudio.{name} is unavailable: vmas-diffusion imports the encodec package without torchaudio "
            "(it would replace torch). Use vmas_diffusion.media for audio I/O and resampling."
        )


def import_encodec():
    """The ``encodec`` package, imported with or without torchaudio installed.

    Raises ConfigError naming the install command when the package is missing.
    """
    if "encodec" in sys.modules:
        return sys.modules["encodec"]
    if importlib.util.find_spec("encodec") is None:
        raise ConfigError(
            "the 'encodec' codec needs the encodec package: pip install --no-deps encodec==0.1.1 einops"
        )
    if "torchaudio" in sys.modules or importlib.util.find_spec("torchaudio") is not None:
        return importlib.import_module("encodec")
    placeholder = _MissingTorchaudio("torchaudio", _PLACEHOLDER_DOC)
    sys.modules["torchaudio"] = placeholder
    try:
        return importlib.import_module("encodec")
    except ImportError as err:  # e.g. einops missing
        raise ConfigError(f"the encodec package cannot be imported ({err}); pip install --no-deps einops") from err
    finally:
        # leave no trace: later imports of torchaudio must fail (or succeed) honestly
        if sys.modules.get("torchaudio") is placeholder:
            del sys.modules["torchaudio"]
