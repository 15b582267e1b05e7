#!/usr/bin/env python
"""Beat sync and best-of-N on held-out videos: the table of docs/beat_sync.md.

For held-out videos of the music set (``scripts/build_music_set.py``, split ``test``, grouped by
kind as in ``scripts/evaluate_alignment.py``) and every seed, a pipeline writes ``--seconds`` of
music four ways, each scored with the same BHS as ``evaluate_alignment.py`` (the music's beats,
:func:`vmas_diffusion.beats.music_beats`, against the visual beats of the video's first
``--seconds``, 0.1 s window):

* ``plain``: one generation (what ``num_candidates=1`` gives);
* ``sync``: the same music after ``sync_beats=True`` (its beats tracked again on the warped audio);
* ``best-of-N``: ``num_candidates=N``;
* ``best-of-N + sync``: both.

Two pipeline calls per clip and seed (``sync_beats=True`` with 1 and with N candidates) give all
four: the beat-sync report carries the beats before and after the warp. The stretch each warp used
(max and time-weighted mean ``|factor - 1|``) and the share of visual beats it matched are
reported per group over the clips whose warp was kept ("warped": how many; sync keeps the music
as generated when its beats, tracked again, would hit fewer visual beats). ``--plot`` draws the beats of one clip before and after sync.

Usage: ``python scripts/evaluate_beat_sync.py --data .cache/music_set --max-clips 30 --seeds 1``
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from evaluate_alignment import video_group  # noqa: E402  (the same grouping as the alignment table)

ROWS = ("plain", "sync", "best-of-N", "best-of-N + sync")


def pick_clips(data: Path, split: str, per_group: dict) -> list:
    """Up to ``per_group[group]`` clips of each kind, spread evenly over the split (it is ordered by source)."""
    meta = json.loads((data / "meta.json").read_text())
    items = [json.loads(line) for line in (data / f"{split}.jsonl").read_text().splitlines()]
    clips = []
    for group, count in per_group.items():
        members = [it for it in items if video_group(meta[it["id"]]) == group]
        if count and len(members) > count:
            members = [members[i] for i in np.linspace(0, len(members) - 1, count).round().astype(int)]
        clips += [{"id": it["id"], "video": data / it["video"], "group": group} for it in members]
    return clips


def plot_before_after(path: Path, visual, before, after, title: str) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 3.2), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    ax.vlines(visual, 0.55, 1.45, color="tab:blue", lw=2, label="visual beats (cuts, motion peaks)")
    ax.vlines(before, 1.6, 2.4, color="tab:orange", lw=2, label="music beats, as generated")
    ax.vlines(after, -0.4, 0.4, color="tab:green", lw=2, label="music beats after beat sync")
    ax.set_yticks([2, 1, 0], ["before", "video", "after"])
    ax.set_ylim(-0.7, 2.7)
    ax.set_xlabel("time (s)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.legend(*ax.get_legend_handles_labels(), loc="lower center", ncol=3, fontsize=8, frameon=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vmas-tiny-ar", help="pipeline folder or bundled name")
    parser.add_argument("--data", type=Path, default=ROOT / ".cache" / "music_set")
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", type=Path, default=ROOT / ".cache" / "beat_sync_eval")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--guidance", type=float, default=None, help="default: the backend's RECOMMENDED_GUIDANCE")
    parser.add_argument("--max-stretch", type=float, default=0.15)
    parser.add_argument("--beat-cuts", type=int, default=10, help="clips of beat-cut videos (0: all)")
    parser.add_argument("--motion", type=int, default=12, help="clips of motion / sparse-cut videos (0: all)")
    parser.add_argument("--no-events", type=int, default=6, help="clips of videos with no beat events (0: all)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clips", nargs="*", default=None, help="only these clip ids (of the picked ones)")
    parser.add_argument("--plot", type=Path, default=None, help="PNG of the first clip's beats before and after sync")
    args = parser.parse_args(argv)
    if args.candidates < 2:
        parser.error("--candidates must be at least 2 (best-of-N is one of the rows)")

    import torch

    from vmas_diffusion.beats import beat_scores, visual_beats
    from vmas_diffusion.defaults import RECOMMENDED_GUIDANCE
    from vmas_diffusion.media import load_video
    from vmas_diffusion.pipelines import VideoToMusicPipeline

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    clips = pick_clips(args.data, args.split, {"beat cuts": args.beat_cuts, "motion, sparse cuts": args.motion,
                                               "no beat events": args.no_events})
    if args.clips:
        clips = [clip for clip in clips if clip["id"] in args.clips]
    pipe = VideoToMusicPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    guidance = args.guidance if args.guidance is not None else RECOMMENDED_GUIDANCE.get(pipe.backend, 3.0)
    fps, size = float(pipe.video_encoder.config.fps), int(pipe.video_encoder.config.frame_size)
    records = []
    start = time.time()
    for n, clip in enumerate(clips):
        frames = load_video(str(clip["video"]), fps=fps, size=size, end=args.seconds).frames
        reference = visual_beats(frames, fps).times  # as evaluate_alignment.py scores

        def bhs(times):
            return beat_scores(times, reference, args.seconds)["bhs_window"]

        for seed in range(args.seeds):
            call = dict(video=str(clip["video"]), duration=args.seconds, guidance_scale=guidance, sync_beats=True,
                        max_stretch=args.max_stretch)
            one = pipe(generator=torch.Generator().manual_seed(seed), **call).beat_sync
            best = pipe(generator=torch.Generator().manual_seed(seed), num_candidates=args.candidates, **call)
            rec = {"id": clip["id"], "group": clip["group"], "seed": seed, "visual_beats": int(len(reference)),
                   "plain": bhs(one.music_before), "sync": bhs(one.music_after),
                   "best-of-N": bhs(best.beat_sync.music_before), "best-of-N + sync": bhs(best.beat_sync.music_after),
                   "candidates_bhs": [float(b) for b in best.candidates.bhs],
                   "candidates_similarity": None if best.candidates.similarity is None
                   else [float(s) for s in best.candidates.similarity],
                   "selected": int(best.candidates.selected),
                   "sync_report": one.summary(), "best_sync_report": best.beat_sync.summary()}
            records.append(rec)
            if args.plot is not None and n == 0 and seed == 0:
                plot_before_after(args.plot, one.visual, one.music_before, one.music_after,
                                  f"{clip['id']} ({clip['group']}), seed 0: BHS {rec['plain']:.2f} -> {rec['sync']:.2f}, "
                                  f"stretch max {one.max_abs_stretch:.1%}, mean {one.mean_abs_stretch:.1%}")
        print(f"{n + 1}/{len(clips)} clips, {time.time() - start:.0f} s", file=sys.stderr)
    (args.out / "records.json").write_text(json.dumps(records, indent=1))
    print(markdown(records, args))
    return 0


def markdown(records, args) -> str:
    lines = [f"| videos | n | {' | '.join(r.replace('N', str(args.candidates)) for r in ROWS)} | "
             "warped | stretch max | stretch mean | visual beats matched |",
             "|---|---|" + "---|" * (len(ROWS) + 4)]
    groups = ["beat cuts", "motion, sparse cuts", "no beat events", "all"]
    for group in groups:
        rs = [r for r in records if group == "all" or r["group"] == group]
        if not rs:
            continue
        cells = [f"{np.mean([r[row] for r in rs]):.3f} ± {np.std([r[row] for r in rs]):.3f}" for row in ROWS]
        applied = [r["sync_report"] for r in rs if r["sync_report"]["applied"]]
        stretch_max = max((s["max_abs_stretch"] for s in applied), default=0.0)
        stretch_mean = np.mean([s["mean_abs_stretch"] for s in applied]) if applied else 0.0
        matched = np.mean([s["matched_share"] for s in applied]) if applied else 0.0
        lines.append(f"| {group} | {len(rs)} | {' | '.join(cells)} | {len(applied)} | {stretch_max:.1%} | "
                     f"{stretch_mean:.1%} | {matched:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
