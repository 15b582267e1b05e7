"""The held-notes figure in docs/alignment_results.md: each model's sustained pitched share by the kind of
footage (the set's ``video_kind``), from `vmas-diffusion evaluate` folders of the same clips, beside the
real music of those clips (measured here on the whole clip, as the evaluation measures its reference).

    python scripts/plot_held_notes.py --eval "shipped=.cache/eval13/flux05_test_s0" \
        --eval "held-note mix=.cache/eval15/mix_test_s0" --meta .cache/music_set_v5/meta.json \
        --out docs/img/held_notes_heldout.png
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

KINDS = ("cuts", "pan", "zoom", "drift")


def labelled_folder(text: str) -> tuple[str, Path]:
    label, sep, folder = text.partition("=")
    if not sep or not label or not (Path(folder) / "evaluation.json").is_file():
        raise argparse.ArgumentTypeError(f"expected LABEL=FOLDER with an evaluation.json, got {text!r}")
    return label, Path(folder)


def shares_by_kind(ids: list, shares: list, kinds: dict) -> dict:
    """``{kind: (mean share, clips)}`` for every kind in KINDS and "all"."""
    out = {}
    for kind in KINDS + ("all",):
        values = [s for i, s in zip(ids, shares) if kind == "all" or kinds[i] == kind]
        out[kind] = (float(np.mean(values)) if values else float("nan"), len(values))
    return out


def real_shares(clips: list) -> list:
    """The sustained pitched share of each clip's real music, measured as the evaluation measures it."""
    from tqdm import tqdm

    from vmas_diffusion.evaluation.music_content import sustained_pitch_share
    from vmas_diffusion.media import load_audio

    rate = 16000
    return [sustained_pitch_share(load_audio(c["reference_audio"], rate, mono=True), rate)
            for c in tqdm(clips, desc="real music")]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval", type=labelled_folder, action="append", required=True, help="LABEL=FOLDER, repeatable")
    parser.add_argument("--meta", type=Path, required=True, help="the set's meta.json (each clip's video_kind)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    kinds = {k: v["video_kind"] for k, v in json.loads(args.meta.read_text()).items()}
    series, clips = {}, None
    for label, folder in args.eval:
        report = json.loads((folder / "evaluation.json").read_text())
        ids = [c["id"] for c in report["clips"]]
        if clips is not None and ids != [c["id"] for c in clips]:
            sys.exit(f"{folder} evaluated other clips than {args.eval[0][1]}: the bars must compare the same clips")
        clips = clips or report["clips"]
        series[label] = shares_by_kind(ids, [p["sustained_pitch"] for p in report["models"][0]["per_clip"]], kinds)
    ids = [c["id"] for c in clips]
    series["real music"] = shares_by_kind(ids, real_shares(clips), kinds)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = KINDS + ("all",)
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(11, 3.6))
    for n, (label, values) in enumerate(series.items()):
        x = np.arange(len(groups)) + (n - (len(series) - 1) / 2) * width
        ax.bar(x, [values[g][0] for g in groups], width, label=label, color="0.6" if label == "real music" else None)
    real = series["real music"]
    ax.set_xticks(np.arange(len(groups)), [f"{g} ({real[g][1]})" for g in groups])
    ax.axhline(0.7 * real["all"][0], color="k", lw=0.8, ls="--", label="70% of the real music's (all)")
    ax.set_ylabel("sustained pitched share")
    ax.set_xlabel("footage (clips)")
    ax.set_title("held notes by the kind of footage")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
