"""The figures of the pace controls in docs/alignment_results.md (the LDM's flux guidance, its smoothing
step against the gradient step, its reach around the visual beats with a stretched map against neither, the
AR's pace temperature): left, each held-out clip's video pace against its music's onsets per second, without
and with the control (two `vmas-diffusion evaluate` folders of the same clips and seed); right, the log-mel
spectrogram of one clip's music made both ways by a pipeline whose generator has the control, the video's
visual beats marked above it.

    python scripts/plot_pace_control.py --control flux_guidance --free .cache/eval11/new_test_s0 \
        --controlled .cache/eval13/flux05_test_s0 --model .cache/vmas_tiny13/init_ldm \
        --video .cache/music_set_v5/videos/test_XXXX.mp4 --out docs/img/flux_guidance_heldout.png
"""

import argparse
import json
import sys
from pathlib import Path

import torch

#: the flux guidance scale that the gradient step was shipped with, which the smoothing step replaced
GRADIENT_FLUX_SCALE = 0.5


def per_clip(folder: Path) -> tuple[list, list, float]:
    """``(video pace, onsets per second, rank correlation)`` of an evaluation folder's one model."""
    model = json.loads((folder / "evaluation.json").read_text())["models"][0]
    clips = model["per_clip"]
    return [c["visual_pace"] for c in clips], [c["onset_density"] for c in clips], model["metrics"]["pace_onsets_rho"]


def without_control(pipe, control: str) -> tuple[str, str, dict]:
    """``(label with, label without, call options without)`` of a pipeline's ``control``; exits when its
    generator does not have it."""
    config = pipe.generator.config
    if control == "flux_guidance" and config.get("flux_guidance_scale"):
        scale = config["flux_guidance_scale"]
        return f"flux guidance {scale:g}", "no flux guidance", {"flux_guidance_scale": 0.0}
    if control == "flux_smoothing" and config.get("flux_guidance_smoothing"):
        with_label = f"smoothing step {config['flux_guidance_scale']:g}, {config['flux_guidance_smoothing']:g} s"
        return (with_label, f"gradient step {GRADIENT_FLUX_SCALE:g}",
                {"flux_guidance_scale": GRADIENT_FLUX_SCALE, "flux_guidance_smoothing": 0.0})
    if control == "flux_reach" and config.get("flux_guidance_reach"):
        with_label = (f"held off {config['flux_guidance_reach']:g} s around beats, map x{config['flux_guidance_contrast']:g} "
                      f"(log, around {config['flux_guidance_pivot']:g} dB)")
        return with_label, "everywhere, map as fitted", {"flux_guidance_reach": 0.0, "flux_guidance_contrast": 1.0}
    if control == "pace_temperature" and config.get("temperature_map") is not None:
        temperatures = config["temperature_map"][1]
        return (f"temperature {min(temperatures):g}-{max(temperatures):g} by pace", f"temperature {config['temperature']:g}",
                {"temperature": config["temperature"]})
    sys.exit(f"its generator has no {control.replace('_', ' ')}")


def spectrograms(model: str, video: str, seconds: float, seed: int, control: str) -> tuple[dict, float, tuple, list]:
    """``({label: log-mel [D, T] in dB}, frames per second, (label with, label without), visual beat times)``
    of the music ``model`` makes for ``video`` with and without ``control``."""
    from vmas_diffusion import VideoToMusicPipeline
    from vmas_diffusion.defaults import default_guidance

    pipe = VideoToMusicPipeline.from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)
    with_label, without_label, off = without_control(pipe, control)
    out = {}
    for label, options in ((with_label, {}), (without_label, off)):
        result = pipe(video, duration=seconds, guidance_scale=default_guidance(pipe),
                      generator=torch.Generator().manual_seed(seed), **options)
        out[label] = pipe.codec.decibels(pipe.codec.encode(torch.from_numpy(result.audios[0])[None]))[0].numpy()
    return out, float(pipe.codec.frame_rate), (with_label, without_label), [t for t in result.video_beats if t < seconds]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--control", choices=("flux_guidance", "flux_smoothing", "flux_reach", "pace_temperature"), required=True)
    parser.add_argument("--free", type=Path, required=True, help="evaluate folder of the model without the control")
    parser.add_argument("--controlled", type=Path, required=True, help="evaluate folder of the same clips with it")
    parser.add_argument("--model", required=True, help="a pipeline whose generator has the control")
    parser.add_argument("--video", required=True, help="the clip whose spectrograms are shown")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mels, frame_rate, (with_label, without_label), beats = spectrograms(args.model, args.video, args.seconds, args.seed, args.control)
    fig = plt.figure(figsize=(12, 4))
    grid = fig.add_gridspec(2, 2, width_ratios=(1, 1.6))
    ax = fig.add_subplot(grid[:, 0])
    for label, folder in ((without_label, args.free), (with_label, args.controlled)):
        pace, onsets, rho = per_clip(folder)
        ax.scatter(pace, onsets, s=14, alpha=0.7, label=f"{label} (rank corr. {rho:+.2f})")
    ax.set_xlabel("video pace (visual beats per minute)")
    ax.set_ylabel("music onsets per second")
    ax.set_title("held-out clips: does the music's density follow the video's pace?", fontsize=9)
    ax.set_ylim(0, ax.get_ylim()[1] * 1.25)  # room above the clips for the legend
    ax.legend(fontsize=7, loc="upper left")
    top = max(m.max() for m in mels.values())
    for row, (label, mel) in enumerate(mels.items()):
        axis = fig.add_subplot(grid[row, 1])
        axis.imshow(mel, origin="lower", aspect="auto", cmap="magma", vmin=top - 80, vmax=top,
                    extent=(0, mel.shape[1] / frame_rate, 0, mel.shape[0]))
        axis.plot(beats, [mel.shape[0] - 2] * len(beats), "v", color="cyan", markersize=5)  # the visual beats
        axis.set_ylabel("mel band")
        axis.set_title(f"{Path(args.video).stem}: {label}", fontsize=9)
    axis.set_xlabel("seconds")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
