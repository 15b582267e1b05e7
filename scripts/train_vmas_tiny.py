#!/usr/bin/env python
"""Train the bundled ``vmas-tiny`` pipelines (AR and LDM) from the real-music video set, on a CPU.

Steps (each skipped when its output exists, so a rerun continues):

1. ``fit``: fit the signal-processing codec (latent stats + residual k-means codebooks) on the
   training music of ``scripts/build_music_set.py`` (``--data``) and save a random-init pipeline per
   backend with that codec to ``<work>/init_<backend>`` (what ``prepare`` and ``train`` start from);
2. ``prepare``: shards of the train, val and test splits (``vmas-diffusion prepare``);
3. ``train``: ``vmas-diffusion train recipes/vmas_tiny_<backend>.yaml`` (``--backend``);
4. ``ship``: copy the trained pipeline into ``vmas_diffusion/assets/vmas-tiny/<backend>``.

``restage`` starts a new stage from a trained pipeline (the shipped one by default) with some of its
generator's settings changed (``--set cond_dropout=0.1``), saved as ``<work>/init_<backend>``.

``widen`` (AR) turns a trained run's latest pipeline into one whose generator also sees the beat
condition ``--lookahead`` frames ahead (:meth:`ARTokenLM.with_beat_lookahead`, same outputs until
fine-tuned), saved to ``<work>/widened_ar``: the start of the shipped AR's last stage.

Usage::

    python scripts/build_music_set.py
    python scripts/train_vmas_tiny.py fit
    python scripts/train_vmas_tiny.py prepare
    python scripts/train_vmas_tiny.py train --backend ar --threads 1     # in stages: see docs/alignment_results.md
    python scripts/train_vmas_tiny.py train --backend ldm --threads 1
    python scripts/train_vmas_tiny.py ship --backend ar
    python scripts/evaluate_alignment.py --data .cache/music_set      # the table of docs/alignment_results.md
"""

import argparse
import json
import shutil
import sys
from itertools import islice
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def recipe(backend: str) -> str:
    return str(ROOT / "recipes" / f"vmas_tiny_{backend}.yaml")


def training_music(data: Path):
    import torch

    from vmas_diffusion.media import load_audio

    for line in (data / "train.jsonl").read_text().splitlines():
        item = json.loads(line)
        yield torch.from_numpy(load_audio(str(data / item["audio"]), 16000))[None]


def fit(args) -> None:
    import torch

    from vmas_diffusion.pipelines import VideoToMusicPipeline

    torch.manual_seed(args.seed)
    base = VideoToMusicPipeline.from_recipe(recipe("ar"))
    codec = base.codec
    mean, std = codec.fit_latent_stats(training_music(args.data))
    report = codec.fit_codebooks(training_music(args.data), iters=30, seed=args.seed, progress=True)
    print(f"codec fitted: residual RMSE per codebook {['%.3f' % e for e in report['rmse']]}", file=sys.stderr)
    if args.post_filter:
        fitted = codec.fit_sharpening(islice(training_music(args.data), args.post_filter))
        print(f"codec token post-filter: {fitted}", file=sys.stderr)
    for backend in ("ar", "ldm"):
        torch.manual_seed(args.seed)
        pipe = VideoToMusicPipeline.from_recipe(recipe(backend))
        pipe.codec.load_state_dict(codec.state_dict())
        pipe.codec.set_latent_stats(mean, std)
        pipe.codec.register_to_config(token_sharpening=codec.config.token_sharpening)
        pipe.save_pretrained(str(args.work / f"init_{backend}"))


def train_shards(args) -> Path:
    return args.shards or args.work / "shards_train"


def prepare(args) -> None:
    from vmas_diffusion.data import prepare_from_recipe

    for split in ("train", "val", "test"):
        if not (args.data / f"{split}.jsonl").is_file():
            continue
        out = train_shards(args) if split == "train" else args.work / f"shards_{split}"
        report = prepare_from_recipe(args.data / f"{split}.jsonl", out, recipe("ar"),
                                     [f"train.init_from={args.work / 'init_ar'}"])
        print(split, report.summary(), file=sys.stderr)


def train(args) -> None:
    import torch

    from vmas_diffusion.training import train as run

    torch.set_num_threads(args.threads)
    overrides = [
        f"train.init_from={args.work / f'init_{args.backend}'}",
        f"data.train_dir={train_shards(args)}",
        f"train.output_dir={args.work / f'run_{args.backend}'}",
    ] + list(args.overrides)
    result = run(recipe(args.backend), overrides, resume="auto", progress=True)
    print(f"trained to step {result.step}; last checkpoint {result.last_checkpoint}", file=sys.stderr)


def fail(message: str) -> None:
    print(message, file=sys.stderr)
    sys.exit(2)


def latest_pipeline(args) -> Path:
    run = (args.run or args.work / f"run_{args.backend}") / "checkpoints"
    steps = sorted(run.glob("step-*"))
    if not steps:
        fail(f"no checkpoint in {run}: train first, or name the run with --run")
    return steps[-1] / "pipeline"


def widen(args) -> None:
    from vmas_diffusion.pipelines import VideoToMusicPipeline

    source = latest_pipeline(args)
    pipe = VideoToMusicPipeline.from_pretrained(str(source))
    if not hasattr(pipe.generator, "with_beat_lookahead"):
        fail(f"widen: {source} is a {pipe.backend!r} pipeline; its generator has no beat look-ahead to widen")
    pipe.register_modules(generator=pipe.generator.with_beat_lookahead(args.lookahead))
    pipe.save_pretrained(str(args.work / "widened_ar"))
    print(f"widened {source} to beat_lookahead={args.lookahead} -> {args.work / 'widened_ar'}", file=sys.stderr)


def restage(args) -> None:
    """The start of a new stage: a trained pipeline (``--source``, default the shipped one) with the
    generator settings of ``--set key=value`` changed (e.g. ``cond_dropout=0.1``), saved as
    ``<work>/init_<backend>``, which ``prepare`` and ``train`` start from."""
    from vmas_diffusion.errors import ConfigError
    from vmas_diffusion.conditions import pace_window_seconds
    from vmas_diffusion.pipelines import VideoToMusicPipeline

    source = args.source or ROOT / "vmas_diffusion" / "assets" / "vmas-tiny" / args.backend
    pipe = VideoToMusicPipeline.from_pretrained(str(source))
    changes = {}
    for pair in args.set:
        key, _, value = pair.partition("=")
        if key not in pipe.generator.config or key.startswith("_"):
            fail(f"restage: the {pipe.backend} generator has no setting {key!r}")
        current = pipe.generator.config[key]
        try:
            parsed = json.loads(value) if not isinstance(current, str) or value[:1] == '"' else value  # a bare word is a string
            changes[key] = parsed if current is None or parsed is None else type(current)(parsed)
        except (ValueError, TypeError):
            fail(f"restage: {key}={value!r} is not a value of the {type(current).__name__} setting {key!r}")
    old = pipe.generator
    config = {**old.config, **changes}
    if config.get("pace_source") == "music" and config.get("pace_seconds", 0) > 0 and "pace_map" not in changes:
        # what puts the video's pace on the music's scale at inference, fitted on the training samples
        from vmas_diffusion.training.pace_map import fit_pace_map_on_shards

        changes["pace_map"] = config["pace_map"] = fit_pace_map_on_shards(train_shards(args), config["pace_seconds"])
        print(f"pace map (video -> music pace, per feature [xs, ys]): {json.dumps(config['pace_map'])}", file=sys.stderr)
    if config.get("flux_guidance_scale") and config.get("flux_map") is None:
        # the flux that flux guidance asks for at each video pace, fitted on the training samples
        # (a model that has a map keeps it; --set flux_map=null fits a new one)
        from vmas_diffusion.training.pace_map import fit_flux_map_on_shards

        if not hasattr(pipe.codec, "spectral_flux"):
            fail(f"restage: flux guidance steers a codec's spectral flux; {type(pipe.codec).__name__} has none")
        changes["flux_map"] = config["flux_map"] = fit_flux_map_on_shards(train_shards(args), pipe.codec.spectral_flux,
                                                                          pace_window_seconds(config))
        print(f"flux map (video beats/s -> music flux dB, [xs, ys]): {json.dumps(config['flux_map'])}", file=sys.stderr)
    # diffusers gives keys the saved config lacked their defaults again, whatever the dict holds
    config["_use_default_values"] = [k for k in config.get("_use_default_values", []) if k not in changes]
    try:
        generator = type(old).from_config(config)  # the generator's own checks of its settings
    except ConfigError as err:
        fail(f"restage: {err}")
    # a setting may change the modules (e.g. beat_fuse=adaln): the new generator keeps every trained
    # weight that still fits; new modules start at their init (zero-output where it matters)
    try:
        missing, unexpected = generator.load_state_dict(old.state_dict(), strict=False)
    except RuntimeError as err:
        fail(f"restage: the trained weights do not fit the changed generator: {str(err).splitlines()[0]}")
    if missing or unexpected:
        print(f"restage: new, at their init: {missing}; dropped: {unexpected}", file=sys.stderr)
    pipe = pipe.with_generator(generator, scheduler=pipe.scheduler)
    if args.post_filter:
        fitted = pipe.codec.fit_sharpening(islice(training_music(args.data), args.post_filter))
        print(f"codec token post-filter: {fitted}", file=sys.stderr)
    target = args.work / f"init_{args.backend}"
    pipe.save_pretrained(str(target))
    print(f"{source} with {changes} -> {target}", file=sys.stderr)


#: components stored in float16 when shipped (loading casts them back to float32); the codec stays
#: float32: its k-means centroids decide which code is nearest
HALF_COMPONENTS = ("generator", "video_encoder", "contrastive_head")


def store_half(folder: Path) -> None:
    """Rewrite the weights of ``HALF_COMPONENTS`` in ``folder`` as float16 safetensors."""
    from safetensors.torch import load_file, save_file

    for part in HALF_COMPONENTS:
        for path in (folder / part).glob("*.safetensors"):
            weights = load_file(str(path))
            save_file({k: v.half() if v.is_floating_point() else v for k, v in weights.items()}, str(path),
                      metadata={"format": "pt"})


def half_check(source: Path, shipped: Path) -> str:
    """How far the float16 copy's music is from the float32 one's: the bundled clip, 4 s, seed 0."""
    import numpy as np
    import torch

    from vmas_diffusion.defaults import DEMO_VIDEO
    from vmas_diffusion.pipelines import VideoToMusicPipeline

    audios = []
    for folder in (source, shipped):
        pipe = VideoToMusicPipeline.from_pretrained(str(folder))
        pipe.set_progress_bar_config(disable=True)
        out = pipe(video=str(DEMO_VIDEO), duration=4.0, generator=torch.Generator().manual_seed(0))
        audios.append(np.asarray(out.audios[0, 0], np.float64))
    a, b = audios
    return f"float16 vs float32 music: relative L2 {np.linalg.norm(a - b) / np.linalg.norm(a):.2e}, max abs {np.abs(a - b).max():.2e}"


def ship(args) -> None:
    latest = latest_pipeline(args)
    target = ROOT / "vmas_diffusion" / "assets" / "vmas-tiny" / args.backend
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(latest, target)
    if args.half:
        store_half(target)
        print(half_check(latest, target), file=sys.stderr)
    size = sum(f.stat().st_size for f in target.rglob("*") if f.is_file())
    print(f"shipped {latest} -> {target} ({size / 1e6:.2f} MB)", file=sys.stderr)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Train the bundled vmas-tiny pipelines")
    parser.add_argument("step", choices=("fit", "restage", "prepare", "train", "widen", "ship"))
    parser.add_argument("overrides", nargs="*", help="key=value recipe overrides (train step)")
    parser.add_argument("--backend", choices=("ar", "ldm"), default="ar")
    parser.add_argument("--data", type=Path, default=ROOT / ".cache" / "music_set",
                        help="a set of scripts/build_music_set.py (or build_alignment_set.py)")
    parser.add_argument("--work", type=Path, default=ROOT / ".cache" / "vmas_tiny")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shards", type=Path, default=None,
                        help="shards of the training split, written by prepare, read by train (default <work>/shards_train)")
    parser.add_argument("--run", type=Path, default=None, help="training run to ship (default <work>/run_<backend>)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--half", action=argparse.BooleanOptionalAction, default=False,
                        help="ship: store the generator, video encoder and contrastive head in float16 and print how far "
                             "the music moves (off by default: the AR's sampled music diverges, the LDM's moves by a third)")
    parser.add_argument("--lookahead", type=int, default=10, help="widen: beat frames each AR step sees ahead")
    parser.add_argument("--source", type=Path, default=None, help="restage: the pipeline to start from (default the shipped one)")
    parser.add_argument("--post-filter", type=int, default=0, metavar="CLIPS",
                        help="fit, restage: fit the codec's token post-filter on this many training clips (0: leave it; off "
                             "in the shipped codec: it keeps more held tones on a round trip, but not in generated music, "
                             "whose FAD it raises; docs/alignment_results.md)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="restage: generator settings to change")
    args = parser.parse_intermixed_args(argv)  # key=value overrides may follow the options
    args.work.mkdir(parents=True, exist_ok=True)
    {"fit": fit, "restage": restage, "prepare": prepare, "train": train, "widen": widen, "ship": ship}[args.step](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
