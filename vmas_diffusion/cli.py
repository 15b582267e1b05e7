"""The ``vmas-diffusion`` command line.

Every user error (bad video, bad model folder, bad recipe, bad argument) ends with one
line on stderr and exit code 2; progress bars go to stderr too.
"""

import argparse
import math
import sys
from pathlib import Path
from typing import List, Optional

from . import defaults, threads
from .errors import InputError, VMASError
from .limits import MAX_MUSIC_SECONDS, MAX_VIDEO_SECONDS, parse_limit
from .threads import set_threads

EXIT_USAGE = 2
BACKENDS = defaults.BACKENDS  # the bundled models' backends, what --backend picks among


def seed(text: str) -> int:
    """argparse type of --seed: what torch.Generator.manual_seed takes, 0 .. 2**64 - 1."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value < 2**64:
        raise argparse.ArgumentTypeError(f"the seed must be a whole number from 0 to 2**64 - 1, got {text!r}")
    return value


def seconds(text: str) -> float:
    """argparse type of --duration: a positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"a duration must be a positive number of seconds, got {text!r}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line (exit 2), as every other user error."""

    def error(self, message):
        raise InputError(f"{message} (see `{self.prog} --help`)")


def load_pipeline(model: Optional[str], backend: Optional[str] = None):
    """A pipeline from a saved folder, a Hub id, a recipe YAML (random weights), or a bundled name.

    ``backend`` picks ``ar``/``ldm`` and must match what the model holds. No ``model`` (or
    ``vmas-tiny``) is the offline default bundled in the package, of ``backend`` (default ``ldm``).
    """
    from .defaults import resolve_model
    from .pipelines import VideoToMusicPipeline

    if str(model).endswith((".yaml", ".yml")):
        pipe = VideoToMusicPipeline.from_recipe(model)
    else:  # a bundled name (or None) becomes its folder, of `backend`
        pipe = VideoToMusicPipeline.from_pretrained(resolve_model(model, backend))
    if backend is not None and pipe.backend != backend:
        raise InputError(f"model {model} is a {pipe.backend!r} pipeline, but --backend {backend} was asked")
    return pipe


def cmd_generate(args) -> int:
    import torch

    from .defaults import default_guidance
    from .limits import check_lengths
    from .media import export_to_video_with_audio, save_audio

    out = Path(args.output)
    if out.suffix.lower() not in (".mp4", ".wav"):
        raise InputError(f"output {out} must end in .mp4 or .wav")
    limits = dict(max_music_seconds=args.max_music_seconds, max_video_seconds=args.max_video_seconds)
    check_lengths([args.video], None, args.duration, **limits)  # a bad or too long video fails before a model loads
    pipe = load_pipeline(args.model, args.backend)
    result = pipe(
        video=args.video,
        duration=args.duration,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance if args.guidance is not None else default_guidance(pipe),
        generator=torch.Generator().manual_seed(args.seed),
        **limits,
        **alignment_kwargs(args),
        **sampling_kwargs(args),
    )
    if out.suffix.lower() == ".mp4":
        export_to_video_with_audio(args.video, result.audios[0], result.sample_rate, str(out))
    else:
        save_audio(str(out), result.audios[0], result.sample_rate)
    print(f"wrote {out} ({result.audios.shape[-1] / result.sample_rate:.2f} s of music, {pipe.backend} backend, "
          f"{len(result.video_beats)} visual beats)", file=sys.stderr)
    for line in alignment_lines(result):
        print(line, file=sys.stderr)
    return 0


def alignment_kwargs(args) -> dict:
    """The pipeline's best-of-N and beat-sync arguments from the command line (its defaults where not given)."""
    kwargs = {"num_candidates": args.candidates, "sync_beats": args.sync_beats}
    for name in ("max_stretch", "pace_weight"):
        if getattr(args, name) is not None:
            kwargs[name] = getattr(args, name)
    return kwargs


def sampling_kwargs(args) -> dict:
    """The generator's own sampling options given on the command line (top_k, temperature, beat and flux guidance)."""
    options = (("top_k", args.top_k), ("temperature", args.temperature), ("beat_guidance_scale", args.beat_guidance),
               ("flux_guidance_scale", args.flux_guidance), ("flux_guidance_smoothing", args.flux_smoothing),
               ("flux_guidance_reach", args.flux_reach), ("flux_guidance_contrast", args.flux_contrast))
    return {k: v for k, v in options if v is not None}


def alignment_lines(result) -> List[str]:
    """What best-of-N and beat sync did to the first waveform, one line each (none when neither ran)."""
    lines = []
    scores = result.candidates[0] if isinstance(result.candidates, list) else result.candidates
    if scores is not None:
        lines.append(f"best of {len(scores.score)} candidates: kept #{scores.selected} "
                     f"(BHS {scores.bhs[scores.selected]:.2f}; all: {', '.join(f'{b:.2f}' for b in scores.bhs)})")
    sync = result.beat_sync[0] if isinstance(result.beat_sync, list) else result.beat_sync
    if sync is not None and sync.applied:
        lines.append(f"beat sync: {len(sync.pairs)} of {len(sync.visual)} visual beats matched, stretch max "
                     f"{sync.max_abs_stretch:.1%} mean {sync.mean_abs_stretch:.1%}, BHS {sync.bhs_before:.2f} -> {sync.bhs_after:.2f}")
    elif sync is not None:
        lines.append(f"beat sync not applied: {sync.reason}")
    return lines


def cmd_evaluate(args) -> int:
    from .evaluation import run_evaluation

    report = run_evaluation(
        models=args.model,
        data=args.data,
        out_dir=args.out,
        seed=args.seed,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance,
        duration=args.duration,
        fad_embedder=args.fad_embedder,
        clap_checkpoint=args.clap_checkpoint,
        max_videos=args.max_videos,
        sampling=sampling_kwargs(args),
        **alignment_kwargs(args),
    )
    print(report.markdown)
    print(f"table written to {report.json_path}", file=sys.stderr)
    return 0


def cmd_train(args) -> int:
    from .training import train

    result = train(args.recipe, args.overrides, resume=args.resume, progress=not args.no_progress)
    last = f", last checkpoint {result.last_checkpoint}" if result.last_checkpoint else ""
    print(f"trained to step {result.step} in {result.output_dir}{last}", file=sys.stderr)
    return 0


def cmd_prepare(args) -> int:
    from .data.prepare import prepare_parallel

    reports = prepare_parallel(
        args.manifest, args.out, args.recipe, args.overrides, num_workers=args.num_workers,
        progress=not args.no_progress, retry_failed=args.retry_failed,
    )
    for report in reports:
        print(report.summary(), file=sys.stderr)
        if report.failures:
            print(f"skipped clips are listed in {report.out_dir / 'errors.jsonl'}", file=sys.stderr)
    return 0


def cmd_demo(args) -> int:
    import torch

    from .beats import music_beats, plot_alignment
    from .defaults import DEMO_VIDEO, default_guidance
    from .media import export_to_video_with_audio

    video = Path(args.video) if args.video else DEMO_VIDEO
    out = Path(args.output)
    if out.suffix.lower() != ".mp4":
        raise InputError(f"output {out} must end in .mp4")
    pipe = load_pipeline(args.model, args.backend)
    guidance = args.guidance if args.guidance is not None else default_guidance(pipe)
    result = pipe(video=str(video), guidance_scale=guidance, generator=torch.Generator().manual_seed(args.seed))
    export_to_video_with_audio(str(video), result.audios[0], result.sample_rate, str(out))
    visual = result.visual_beats  # the analysis the pipeline conditioned on: no second decode
    music = music_beats(result.audios[0], result.sample_rate)
    png = plot_alignment(out.with_name(out.stem + "_alignment.png"), visual, music=music,
                         title=f"{video.name}: generated music ({pipe.backend}) vs visual beats")
    print(f"wrote {out} and {png} ({pipe.backend} backend, {len(visual.times)} visual beats, "
          f"{len(music.times)} music beats)", file=sys.stderr)
    return 0


def _add_generation_options(parser) -> None:
    parser.add_argument("--sync-beats", action="store_true",
                        help="warp the music's time so its beats land on the video's visual beats (length kept)")
    parser.add_argument("--max-stretch", type=float,
                        help="with --sync-beats: the most a stretch may differ from 1 (default 0.15 = ±15%%)")
    parser.add_argument("--candidates", type=int, default=1, metavar="N",
                        help="generate N and keep the one with the best beat hits and video-music similarity")
    parser.add_argument("--pace-weight", type=float, metavar="W",
                        help="with --candidates: also prefer music as busy as the video's pace asks (1.0 measured; default 0)")
    add_sampling_options(parser)


def add_sampling_options(parser) -> None:
    """The generator's own sampling options (:func:`sampling_kwargs` reads them back), shared with the scripts."""
    parser.add_argument("--temperature", type=float,
                        help="AR backend: token sampling temperature (default the model's; lower: steadier, more held notes)")
    parser.add_argument("--top-k", type=int, help="AR backend: sample among the k likeliest codes (default the model's)")
    parser.add_argument("--beat-guidance", type=float, metavar="G",
                        help="a guidance scale of its own for the visual beats (default the model's; higher: "
                             "the music follows the video's cuts and motion more closely)")
    parser.add_argument("--flux-guidance", type=float, metavar="S",
                        help="LDM backend: how hard sampling pulls the music's spectral flux towards the flux training "
                             "music has under videos of this pace (default the model's; 0: off)")
    parser.add_argument("--flux-smoothing", type=float, metavar="SECONDS",
                        help="LDM backend: flux guidance steps towards the music smoothed over this many seconds "
                             "(a Gaussian's deviation) instead of along the flux gradient (default the model's; 0: gradient)")
    parser.add_argument("--flux-reach", type=float, metavar="SECONDS",
                        help="LDM backend: flux guidance holds off within this many seconds of the visual beats, "
                             "keeping the hits on them (default the model's; 0: applies everywhere)")
    parser.add_argument("--flux-contrast", type=float, metavar="G",
                        help="LDM backend: stretch the flux map's calm-to-busy range by G (default the model's; "
                             "1: as fitted on training music)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vmas-diffusion", description="Background music for videos.")
    threads_help = (f"CPU threads for torch (default: ${threads.ENV}, else $OMP_NUM_THREADS, else the physical "
                    f"cores, at most {threads.MAX_DEFAULT}; 1 is best on a CPU busy with other work)")
    parser.add_argument("--threads", type=int, help=threads_help)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    gen = sub.add_parser("generate", help="write music for a video (an .mp4 with the music muxed, or a .wav)")
    gen.add_argument("video", help="input video file")
    gen.add_argument("-o", "--output", required=True, help="OUT.mp4 (video with music) or OUT.wav (music only)")
    gen.add_argument("--model", help="pipeline folder, Hub id, recipe .yaml (random weights) or bundled name "
                                     "(default: the bundled vmas-tiny)")
    gen.add_argument("--backend", choices=BACKENDS, help="generator backend the model must have")
    gen.add_argument("--seed", type=seed, default=0, help="random seed, 0 .. 2**64 - 1")
    gen.add_argument("--duration", type=seconds, help="seconds of music (default: the video's duration)")
    gen.add_argument("--steps", type=int, help="diffusion steps (LDM backend)")
    gen.add_argument("--guidance", type=float, help="classifier-free guidance scale (default: what the bundled "
                     "model was chosen with, 6 for both (the LDM adds its own beat guidance); 3 for other models)")
    gen.add_argument("--max-music-seconds", type=parse_limit, default=MAX_MUSIC_SECONDS, metavar="S",
                     help=f"refuse to write more music than this (default {MAX_MUSIC_SECONDS:g} s; 'none' lifts it)")
    gen.add_argument("--max-video-seconds", type=parse_limit, default=MAX_VIDEO_SECONDS, metavar="S",
                     help=f"refuse a video longer than this, by its header or frame count (default "
                          f"{MAX_VIDEO_SECONDS:g} s; 'none' lifts it)")
    gen.add_argument("--threads", type=int, default=argparse.SUPPRESS, help=threads_help)
    _add_generation_options(gen)
    gen.set_defaults(run=cmd_generate)

    ev = sub.add_parser("evaluate", help="print the FAD / BCS / BHS / retrieval table for one or more models")
    ev.add_argument("--model", action="append", required=True,
                    help="pipeline folder, bundled name or recipe .yaml (repeat for an ablation table)")
    ev.add_argument("--data", required=True, help="folder of videos or a JSON Lines manifest")
    ev.add_argument("--out", default="eval_out", help="folder for the JSON table, plots and the cache")
    ev.add_argument("--seed", type=seed, default=0)
    ev.add_argument("--steps", type=int)
    ev.add_argument("--guidance", type=float,
                    help="classifier-free guidance for every model (default: each model's own, what the bundled "
                    "ones were chosen with (6), 3 for other models)")
    ev.add_argument("--duration", type=seconds)
    ev.add_argument("--fad-embedder", default="mel", help="mel (no weights) | vggish=PATH | panns=PATH | clap[=PATH]")
    ev.add_argument("--clap-checkpoint")
    ev.add_argument("--max-videos", type=int)
    _add_generation_options(ev)
    ev.set_defaults(run=cmd_evaluate)

    demo = sub.add_parser("demo", help="offline demo: music for the bundled clip with the bundled vmas-tiny model, "
                                         "an .mp4 and its beat-alignment .png")
    demo.add_argument("-o", "--output", default="vmas_demo.mp4", help="OUT.mp4 (the plot goes to OUT_alignment.png)")
    demo.add_argument("--video", help="another video instead of the bundled clip")
    demo.add_argument("--model", help="pipeline folder or bundled name (default: vmas-tiny)")
    demo.add_argument("--backend", choices=BACKENDS, help="bundled backend (default ldm)")
    demo.add_argument("--seed", type=seed, default=0)
    demo.add_argument("--guidance", type=float, help="classifier-free guidance scale (default: what the bundled "
                                                     "backend aligns best with: 6)")
    demo.add_argument("--threads", type=int, default=argparse.SUPPRESS, help=threads_help)
    demo.set_defaults(run=cmd_demo)

    tr = sub.add_parser("train", help="train from a recipe (also under `accelerate launch -m vmas_diffusion.cli train ...`)")
    tr.add_argument("recipe", help="recipe .yaml")
    tr.add_argument("overrides", nargs="*", help="key=value recipe overrides right after the recipe, e.g. train.max_steps=100")
    tr.add_argument("--resume", action="store_const", const="auto", default=None,
                    help="continue from the latest checkpoint in the run folder (a fresh start when there is none)")
    tr.add_argument("--resume-from", dest="resume", metavar="CHECKPOINT", help="continue from this checkpoint folder")
    tr.add_argument("--no-progress", action="store_true", help="no progress bar")
    tr.set_defaults(run=cmd_train)

    pr = sub.add_parser("prepare", help="decode, window, encode and shard the clips of a JSON Lines manifest "
                                        "(also under `accelerate launch -m vmas_diffusion.cli prepare ...`)")
    pr.add_argument("manifest", help="JSON Lines manifest (video, optional audio/start/end/id per line)")
    pr.add_argument("--out", required=True, help="dataset folder (resumable: rerun to continue)")
    pr.add_argument("--recipe", default=str(Path(__file__).resolve().parents[1] / "recipes" / "small_ar.yaml"),
                    help="recipe whose codec, video encoder and data section are used (default recipes/small_ar.yaml)")
    pr.add_argument("overrides", nargs="*", help="key=value recipe overrides right after the manifest, e.g. data.window_seconds=10")
    pr.add_argument("--retry-failed", action="store_true", help="on a rerun, try the clips that failed before again")
    pr.add_argument("--num-workers", type=int, default=1,
                    help="processes on this machine, each a share of the manifest in OUT/part-NNNNN (under "
                         "`accelerate launch -m vmas_diffusion.cli prepare`, per launched process)")
    pr.add_argument("--no-progress", action="store_true", help="no progress bar")
    pr.set_defaults(run=cmd_prepare)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    previous = None
    try:
        args = parser.parse_args(argv)
        previous = set_threads(args.threads)
        return args.run(args)
    except VMASError as err:
        message = " ".join(str(err).split())  # one line, whatever the cause's message holds
        print(f"vmas-diffusion: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("vmas-diffusion: interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:  # main() also runs in-process (tests, scripts): leave torch as it was
            set_threads(previous)


if __name__ == "__main__":
    sys.exit(main())
