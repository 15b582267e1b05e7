"""vmas-diffusion Gradio app: upload a video, get background music that follows its beats.

Runs locally with ``python app.py`` (binds to 127.0.0.1:7860; ``--host``/``--port`` or the
``GRADIO_SERVER_NAME``/``GRADIO_SERVER_PORT`` variables change that, as Hugging Face Spaces
does) and as a Space (this file is the Space's ``app_file``).

The page logic lives in small functions (:func:`check_upload`, :func:`check_settings`,
:func:`generate`, :func:`handle_request`) that the tests call without a browser; the Gradio
layout in :func:`build_demo` only wires them to components.

Limits (environment variables, read at start):
    VMAS_APP_MAX_MB       largest upload in megabytes (default 50)
    VMAS_APP_MAX_SECONDS  longest video in seconds (default 30)
    VMAS_APP_MAX_STEPS    most diffusion steps a user may ask for (default 100)
"""

from __future__ import annotations

import os

# no analytics or telemetry calls: the app must run without network
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import argparse
import logging
import math
import re
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

ROOT = Path(__file__).resolve().parent

# a Space runs `python app.py` from the checkout: the package imports from here, as installed
# (vmas_diffusion/pipelines links to the top-level pipelines/ folder)
from vmas_diffusion import defaults  # noqa: E402
from vmas_diffusion.errors import InputError, VMASError, VideoDecodeError  # noqa: E402
from vmas_diffusion.media import VideoInfo, probe_video  # noqa: E402

logger = logging.getLogger("vmas_app")

DEMO_CLIP = ROOT / "vmas_diffusion" / "assets" / "demo_bikes.mp4"
# random-weight recipes: they show the whole pipeline working, not good music
RECIPE_MODELS = ("recipes/tiny_ldm.yaml", "recipes/tiny_ar.yaml")
BACKENDS = ("auto",) + defaults.BACKENDS
DEFAULT_STEPS = 25  # the pipeline's own LDM default
OUTPUT_NAMES = ("video_with_music.mp4", "music.wav", "beat_alignment.png")
BROWSER_CODECS = ("h264", "vp8", "vp9", "av1")  # video codecs browsers play from an .mp4


@dataclass(frozen=True)
class AppLimits:
    """What one request may ask for; a Space on a CPU box needs them small."""

    max_megabytes: float = 50.0
    max_seconds: float = 30.0
    max_steps: int = 100
    keep_outputs_seconds: float = 3600.0  # result folders older than this are deleted

    @classmethod
    def from_env(cls, environ=os.environ) -> "AppLimits":
        def number(name, default, kind):
            raw = environ.get(name)
            if raw is None or raw == "":
                return default
            try:
                value = kind(raw)
            except ValueError:
                raise InputError(f"environment variable {name}={raw!r} is not a {kind.__name__}") from None
            if not value > 0:
                raise InputError(f"environment variable {name}={raw!r} must be positive")
            return value

        base = cls()
        return cls(
            max_megabytes=number("VMAS_APP_MAX_MB", base.max_megabytes, float),
            max_seconds=number("VMAS_APP_MAX_SECONDS", base.max_seconds, float),
            max_steps=number("VMAS_APP_MAX_STEPS", base.max_steps, int),
        )


# ---------------------------------------------------------------------------- checks


def check_upload(path: Optional[str], limits: AppLimits) -> VideoInfo:
    """The uploaded file's :class:`VideoInfo`, or a :class:`VMASError` that says what is wrong.

    Size is checked before the file is opened, so a huge upload is refused without decoding it.
    """
    if path is None or str(path) == "":
        raise InputError("no video uploaded: drop a video file (mp4, webm, mov, mkv) in the Video box")
    p = Path(path)
    if not p.is_file():
        raise VideoDecodeError(f"the uploaded video {p.name} is missing on the server; upload it again")
    megabytes = p.stat().st_size / 1e6
    if megabytes > limits.max_megabytes:
        raise InputError(
            f"{p.name} is {megabytes:.1f} MB; this app takes videos up to {limits.max_megabytes:g} MB"
        )
    try:
        info = probe_video(p)
    except VideoDecodeError as exc:
        reason = str(exc).replace(str(p), p.name)  # no server paths in the page
        raise VideoDecodeError(f"{p.name} is not a video this app can read ({reason})") from exc
    if info.duration > limits.max_seconds:
        raise InputError(
            f"{p.name} lasts {info.duration:.1f} s; this app takes videos up to {limits.max_seconds:g} s"
            " (trim it first, or run the `vmas-diffusion generate` command line for long videos)"
        )
    return info


@dataclass(frozen=True)
class Settings:
    """Validated generation settings."""

    model: str
    backend: Optional[str]  # None: whatever the model holds
    steps: int
    guidance_scale: Optional[float]  # None: the model's own (default_guidance: 6 for both vmas-tiny models)
    seed: int
    sync_beats: bool = False  # warp the music onto the visual beats after generation


def check_settings(model, backend, steps, guidance, seed, models: Sequence[str], limits: AppLimits,
                   sync_beats=False) -> Settings:
    """Turn the raw widget values into :class:`Settings` or raise :class:`InputError`."""
    if model not in models:
        raise InputError(f"unknown model {model!r}; choose one of: {', '.join(models)}")
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    steps = DEFAULT_STEPS if steps is None else steps
    if not (float(steps).is_integer() and 1 <= steps <= limits.max_steps):
        raise InputError(f"steps must be a whole number from 1 to {limits.max_steps}, got {steps!r}")
    guidance = None if guidance in (None, 0) else guidance  # 0 on the slider: the model's own
    if guidance is not None and not (math.isfinite(guidance) and 1.0 <= guidance <= 20.0):
        raise InputError(f"guidance must be 0 (the model's own) or between 1 and 20, got {guidance!r}")
    seed = 0 if seed is None else seed
    if not (float(seed).is_integer() and 0 <= seed < 2**63):
        raise InputError(f"seed must be a whole number from 0 to 2**63 - 1, got {seed!r}")
    if sync_beats not in (True, False, None):
        raise InputError(f"sync beats must be on or off, got {sync_beats!r}")
    return Settings(str(model), None if backend == "auto" else backend, int(steps),
                    None if guidance is None else float(guidance), int(seed), bool(sync_beats))


# ---------------------------------------------------------------------------- models


def bundled_models() -> list[str]:
    """``["vmas-tiny"]`` when the trained default shipped inside the package has weights for a backend.

    One name covers both of its versions: the Backend choice picks AR or LDM (auto: the LDM, the default).
    """
    for backend in defaults.BACKENDS:
        try:
            defaults.bundled_model_path(defaults.DEFAULT_MODEL, backend)
        except VMASError:  # installed without these weights
            continue
        return [defaults.DEFAULT_MODEL]
    return []


def _is_bundled(model: str) -> bool:
    return model in defaults.bundled_names() and not Path(model).exists()


def model_choices(extra: Sequence[str] = ()) -> list[str]:
    """Models offered in the page: the bundled trained model first, then ``extra``, then the recipes."""
    choices = bundled_models() + [str(m) for m in extra]
    for recipe in RECIPE_MODELS:
        if (ROOT / recipe).is_file():
            choices.append(recipe)
    return list(dict.fromkeys(choices))


def _resolve(model: str) -> str:
    """Recipe paths are relative to the repository, whatever the working directory."""
    return str(ROOT / model) if model in RECIPE_MODELS else model


class PipelineCache:
    """Loaded pipelines by model (least recently used dropped past ``size``).

    ``loader(model, backend)`` loads one; by default the CLI's resolver (folder, Hub id, recipe
    .yaml or bundled name). A bundled name loads the version of the asked backend; any other
    model holds one backend, which must match the asked one.
    """

    def __init__(self, size: int = 2, loader: Optional[Callable[[str, Optional[str]], object]] = None):
        self.size = size
        self._loader = loader or _load_pipeline
        self._pipes: "OrderedDict[tuple, object]" = OrderedDict()
        self._lock = threading.Lock()

    def get(self, model: str, backend: Optional[str] = None):
        bundled = _is_bundled(model)
        key = (model, backend if bundled else None)
        with self._lock:
            pipe = self._pipes.pop(key, None)
            if pipe is None:
                pipe = self._loader(model, backend if bundled else None)
            self._pipes[key] = pipe
            while len(self._pipes) > self.size:
                self._pipes.popitem(last=False)
        if backend is not None and pipe.backend != backend:
            raise InputError(f"model {model} has the {pipe.backend!r} backend, not {backend!r}: pick another model or 'auto'")
        return pipe


def _load_pipeline(model: str, backend: Optional[str]):
    from vmas_diffusion.cli import load_pipeline

    return load_pipeline(_resolve(model), backend)


# ---------------------------------------------------------------------------- progress


def step_reporter(report: Callable[[int, int], None]):
    """A diffusers ``callback_on_step_end`` that tells ``report(done, total)`` after each sampling step
    (``total``: ``pipe.num_timesteps``, the call's steps over all windows); it changes no tensor."""

    def on_step_end(pipe, step: int, timestep, callback_kwargs: dict) -> dict:
        total = max(int(pipe.num_timesteps), step + 1)
        report(step + 1, total)
        return callback_kwargs

    return on_step_end


# ---------------------------------------------------------------------------- generation


def mux_for_browser(info: VideoInfo, audio, sample_rate: int, out_path, max_side: int = 640, max_fps: float = 30.0) -> str:
    """Write ``out_path`` (.mp4): the video with ``audio`` as its sound, in a codec the page can play.

    A browser-playable stream is copied untouched; any other codec (MPEG-4 part 2, ProRes, ...)
    is re-encoded as H.264 at most ``max_side`` pixels wide/high and ``max_fps``, which bounds the
    decoded frames held in memory by the upload limits.
    """
    from vmas_diffusion.media import export_to_video_with_audio, load_video

    if info.codec in BROWSER_CODECS:
        return export_to_video_with_audio(info.path, audio, sample_rate, out_path)
    scale = min(1.0, max_side / max(info.width, info.height))
    size = (max(2, round(info.height * scale / 2) * 2), max(2, round(info.width * scale / 2) * 2))
    fps = min(info.fps, max_fps)
    clip = load_video(info.path, fps=fps, size=size, backend="pyav")  # decord fails on some resize sizes
    return export_to_video_with_audio(clip.frames, audio, sample_rate, out_path, fps=fps)


@dataclass
class GenerationResult:
    video_path: str  # the upload's picture with the music as its audio track (mp4)
    audio_path: str  # the music alone (wav)
    plot_path: str  # visual beats vs music beats (png)
    seconds: float  # wall time
    message: str  # one line for the status box


def new_output_dir(root: Path, keep_seconds: float) -> Path:
    """A fresh folder under ``root`` for one request; folders older than ``keep_seconds`` are removed."""
    root.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in root.iterdir():
        if old.is_dir() and now - old.stat().st_mtime > keep_seconds:
            shutil.rmtree(old, ignore_errors=True)
    out = root / uuid.uuid4().hex
    out.mkdir()
    return out


def generate(
    video_path: str,
    settings: Settings,
    pipes: PipelineCache,
    out_dir: Path,
    limits: AppLimits,
    progress: Optional[Callable[[float, str], None]] = None,
) -> GenerationResult:
    """Check the upload, write music for it, and save the three result files in ``out_dir``.

    ``progress(fraction, description)`` is told about each phase and each generation step.
    Raises :class:`VMASError` on any bad input.
    """
    import torch

    from vmas_diffusion.beats import plot_alignment
    from vmas_diffusion.media import save_audio

    def tell(fraction: float, what: str) -> None:
        if progress is not None:
            progress(fraction, what)

    start = time.perf_counter()
    tell(0.0, "checking the video")
    info = check_upload(video_path, limits)
    tell(0.02, f"loading {settings.model}")
    pipe = pipes.get(settings.model, settings.backend)

    # generation steps fill 5% .. 90% of the bar
    def step(done: int, total: int) -> None:
        tell(0.05 + 0.85 * done / max(total, 1), f"generating music ({pipe.backend}) {done}/{total}")

    guidance = defaults.default_guidance(pipe) if settings.guidance_scale is None else settings.guidance_scale
    result = pipe(
        video=str(video_path),
        num_inference_steps=settings.steps,  # a generator without diffusion steps ignores it
        guidance_scale=guidance,
        generator=torch.Generator().manual_seed(settings.seed),
        # a backend with no sampling steps (none bundled) reports no step
        callback_on_step_end=step_reporter(step) if progress is not None and pipe.generator.callback_tensor_inputs else None,
        callback_on_step_end_tensor_inputs=[],  # progress only: no tensor is handed over
        sync_beats=settings.sync_beats,
    )
    audio, rate = result.audios[0], result.sample_rate

    tell(0.9, "muxing the music into the video")
    video_out = mux_for_browser(info, audio, rate, out_dir / OUTPUT_NAMES[0])
    audio_out = save_audio(out_dir / OUTPUT_NAMES[1], audio, rate)

    tell(0.95, "drawing the beat alignment")
    visual = result.visual_beats  # the analysis the pipeline conditioned on: no second decode
    plot_out = plot_alignment(out_dir / OUTPUT_NAMES[2], visual, audio=audio, sample_rate=rate,
                              title=f"{Path(video_path).name}: video beats vs music beats")
    seconds = time.perf_counter() - start
    tell(1.0, "done")

    steps = f", {settings.steps} steps" if pipe.generator.needs_scheduler else ""
    note = " Random-weight recipe: expect noise, not music." if settings.model in RECIPE_MODELS else ""
    message = (
        f"Wrote {audio.shape[-1] / rate:.1f} s of music for {info.duration:.1f} s of video with {settings.model} "
        f"({pipe.backend} backend{steps}, guidance {guidance:g}, seed {settings.seed}) in {seconds:.1f} s; "
        f"{len(visual.times)} visual beats.{note}"
    )
    if result.beat_sync is not None:
        from vmas_diffusion.cli import alignment_lines

        message += " " + "; ".join(line[0].upper() + line[1:] for line in alignment_lines(result)) + "."
    return GenerationResult(str(video_out), str(audio_out), str(plot_out), seconds, message)


def handle_request(video_path, model, backend, steps, guidance, seed, sync_beats=False, *, models, pipes, limits,
                   out_root, progress=None):
    """What the page shows: ``(video, audio, plot, status markdown)``; errors become a status message."""
    try:
        settings = check_settings(model, backend, steps, guidance, seed, models, limits, sync_beats)
        out_dir = new_output_dir(Path(out_root), limits.keep_outputs_seconds)
        r = generate(video_path, settings, pipes, out_dir, limits, progress)
        return r.video_path, r.audio_path, r.plot_path, f"**Done.** {r.message}"
    except VMASError as exc:
        return None, None, None, f"**Cannot generate:** {public_message(str(exc), video_path, out_root)}"
    except Exception as exc:  # the page must survive anything a user can upload
        logger.exception("generation failed")
        reason = public_message(str(exc), video_path, out_root)
        return None, None, None, f"**Cannot generate: internal error** ({type(exc).__name__}): {reason}"


# a POSIX path of two or more parts, or a Windows one; group 1 is its last part
_SERVER_PATH = re.compile(r"(?:/[^\s/\\:'\"()\[\],;]+)+/([^\s/\\:'\"()\[\],;]+)|[A-Za-z]:\\(?:[^\s\\:'\"]+\\)*([^\s\\:'\"]+)")


def public_message(text: str, *paths) -> str:
    """``text`` without server paths (upload and output folders, library sources): each path
    becomes its last part, so the page names the user's file and never where it is kept."""
    for path in sorted((str(p) for p in paths if p), key=len, reverse=True):
        text = text.replace(path, Path(path).name)
    return _SERVER_PATH.sub(lambda m: m.group(1) or m.group(2), text)


# ---------------------------------------------------------------------------- page


def build_demo(models: Optional[Sequence[str]] = None, limits: Optional[AppLimits] = None,
               out_root: Optional[Path] = None, pipes: Optional[PipelineCache] = None):
    """The Gradio Blocks page."""
    import gradio as gr

    limits = limits or AppLimits.from_env()
    models = list(models) if models else model_choices()
    pipes = pipes or PipelineCache()
    out_root = Path(out_root or Path(tempfile.gettempdir()) / "vmas_app")

    def run(video, model, backend, steps, guidance, seed, sync_beats, progress=gr.Progress()):
        return handle_request(video, model, backend, steps, guidance, seed, sync_beats, models=models, pipes=pipes,
                              limits=limits, out_root=out_root, progress=lambda f, d: progress(f, desc=d))

    with gr.Blocks(title="vmas-diffusion: music for your video", analytics_enabled=False) as demo:
        gr.Markdown(
            "# vmas-diffusion: background music for your video\n"
            f"Upload a video (up to {limits.max_seconds:g} s and {limits.max_megabytes:g} MB). The model writes music "
            "conditioned on what it sees and on the video's visual beats (cuts and motion peaks); the plot shows how "
            "the music's beats line up with them."
        )
        with gr.Row():
            with gr.Column():
                video_in = gr.Video(label="Video", sources=["upload"], elem_id="video-in")
                model = gr.Dropdown(models, value=models[0], label="Model", elem_id="model")
                backend = gr.Radio(list(BACKENDS), value="auto", label="Backend",
                                   info="auto: whatever the model holds; ar = token LM, ldm = latent diffusion")
                with gr.Row():
                    steps = gr.Slider(1, limits.max_steps, value=DEFAULT_STEPS, step=1, label="Diffusion steps (ldm)",
                                      elem_id="steps")
                    guidance = gr.Slider(0.0, 10.0, value=0.0, step=0.5, label="Guidance",
                                         info="0: the model's own (vmas-tiny: 6 for both backends)")
                    seed = gr.Number(value=0, precision=0, minimum=0, label="Seed")
                sync_beats = gr.Checkbox(value=False, label="Sync beats to the video", elem_id="sync-beats",
                                         info="after generating, warp the music (at most ±15 % locally, length kept) "
                                              "so its beats land on the cuts and motion peaks")
                button = gr.Button("Generate music", variant="primary", elem_id="generate")
            with gr.Column():
                status = gr.Markdown("Upload a video, or pick the example below, then press **Generate music**.",
                                     elem_id="status")
                video_out = gr.Video(label="Video with music", elem_id="video-out", interactive=False)
                audio_out = gr.Audio(label="Music", type="filepath", elem_id="audio-out", interactive=False)
                plot_out = gr.Image(label="Beat alignment", type="filepath", elem_id="plot-out", interactive=False)
        gr.Examples(
            examples=[[str(DEMO_CLIP), models[0], "auto", DEFAULT_STEPS, 0.0, 0, False]],
            inputs=[video_in, model, backend, steps, guidance, seed, sync_beats],
            label="Example (a 6 s bike clip with three scene cuts)",
            cache_examples=False,
        )
        button.click(run, inputs=[video_in, model, backend, steps, guidance, seed, sync_beats],
                     outputs=[video_out, audio_out, plot_out, status], concurrency_limit=1)
    return demo


def page_theme():
    """Gradio's Soft theme with system fonts only: the default fonts are fetched from Google Fonts."""
    import gradio as gr

    return gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])


def parse_args(argv: Optional[Sequence[str]] = None, environ=os.environ) -> argparse.Namespace:
    """Command line of ``python app.py``; the host defaults to this machine only."""
    parser = argparse.ArgumentParser(description="vmas-diffusion Gradio app")
    parser.add_argument("--host", default=environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="interface to bind (default 127.0.0.1, or $GRADIO_SERVER_NAME as a Space sets it)")
    parser.add_argument("--port", type=int, default=int(environ.get("GRADIO_SERVER_PORT", "7860")))
    parser.add_argument("--model", action="append", default=[],
                        help="extra model to offer (pipeline folder, Hub id or recipe .yaml); repeatable")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        limits = AppLimits.from_env()
    except VMASError as exc:
        sys.exit(f"app.py: {exc}")
    demo = build_demo(model_choices(args.model), limits)
    # gradio refuses far larger uploads itself; check_upload gives the clear message near the limit
    demo.queue(max_size=8).launch(server_name=args.host, server_port=args.port,
                                  max_file_size=int(2e6 * limits.max_megabytes), theme=page_theme(),
                                  ssr_mode=False, show_error=True)


if __name__ == "__main__":
    main()
