#!/usr/bin/env python
"""Does the model's music follow the video? The held-out table of docs/alignment_results.md.

For every held-out video of the alignment set (``scripts/build_alignment_set.py``, split
``test``) and every seed, music is generated three ways and its beats
(:func:`vmas_diffusion.beats.music_beats`) are scored against the video's visual beats
(:func:`vmas_diffusion.beats.visual_beats`, as the pipeline finds them) with
:func:`vmas_diffusion.beats.beat_scores` (0.1 s tolerance):

* ``model``: conditioned on the video (classifier-free guidance ``--guidance``);
* ``unconditional``: the same model with every condition dropped (what CFG's null branch sees);
* ``shuffled video``: the same model given ANOTHER held-out video (a derangement), scored against
  this video's beats.

With ``--candidates N`` the model (and so the shuffled row, which reuses its music) keeps the best of N
candidates for the video it was given (the pipeline's best-of-N, ``--pace-weight`` its pace term); the
unconditional row has no video to choose for and stays one draw.

``real music`` (the drum render the video was cut to) is the ceiling; ``real music, shuffled``
(another clip's render against this video) is what a model that follows ITS video perfectly scores
in the shuffled condition: the floor that condition can reach. Retrieval: every held-out
clip is cut into ``--window``-second windows; each window's video embedding ranks all windows'
music embeddings (``pipe.embed_video`` / ``pipe.embed_music`` of the REAL music), R@1 / R@5
against chance.

Usage: ``python scripts/evaluate_alignment.py --model ar=vmas-tiny-ar --model ldm=vmas-tiny-ldm``
(prints a markdown table, writes ``--out``/results.json and one alignment PNG per backend).
"""

import argparse
import inspect
import json
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def generate_unconditional(pipe, seconds: float, seed: int, steps: Optional[int], sampling: dict) -> np.ndarray:
    """Music from the pipeline's generator with no condition at all (CFG off), sampled as the model's."""
    import math

    import torch

    num_frames = max(1, int(math.ceil(seconds * pipe.codec.frame_rate)))
    gen = torch.Generator().manual_seed(seed)
    audio = pipe.generator.generate_audio(pipe.codec, {}, num_frames, scheduler=pipe.scheduler, num_inference_steps=steps,
                                          guidance_scale=1.0, generator=gen, **sampling)
    return audio[0, :, : int(round(seconds * pipe.sample_rate))].float().clamp(-1, 1).numpy()


def real_music_retrieval(pipe, clips, args) -> dict:
    """``{"retrieval": R@1, R@5, chance, pairs}`` of windows of the clips' REAL music from their videos'
    windows (``{}`` when ``--retrieval-seconds`` is shorter than a window)."""
    import torch

    from vmas_diffusion.evaluation.windows import clip_windows
    from vmas_diffusion.losses import retrieval_recall

    fps, size = float(pipe.video_encoder.config.fps), int(pipe.video_encoder.config.frame_size)
    video_emb, music_emb = [], []
    with torch.no_grad():
        for clip in clips:
            for frames, wav in clip_windows(str(clip["video"]), str(clip["audio"]), fps=fps, size=size,
                                            sample_rate=pipe.sample_rate, window=args.window, seconds=args.retrieval_seconds):
                video_emb.append(pipe.embed_video(frames, fps=fps))
                music_emb.append(pipe.embed_music(wav, pipe.sample_rate))
    if not video_emb:
        return {}
    recall = retrieval_recall(torch.stack(video_emb), torch.stack(music_emb), ks=(1, 5))
    return {"retrieval": {**recall, "pairs": len(video_emb)}}


def evaluate_model(name: str, model: str, clips, args) -> dict:
    import torch

    from vmas_diffusion.beats import beat_scores, music_beats, plot_alignment, visual_beats
    from vmas_diffusion.cli import sampling_kwargs
    from vmas_diffusion.defaults import RECOMMENDED_GUIDANCE
    from vmas_diffusion.media import load_audio, load_video
    from vmas_diffusion.pipelines import VideoToMusicPipeline

    pipe = VideoToMusicPipeline.from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)
    if args.retrieval_only:
        return real_music_retrieval(pipe, clips, args)
    guidance = args.guidance if args.guidance is not None else RECOMMENDED_GUIDANCE.get(pipe.backend, 3.0)
    # token sampling options, for a generator that takes them; the same for the model, shuffled and unconditional rows
    takes = inspect.signature(pipe.generator.generate).parameters
    sampling = {k: v for k, v in sampling_kwargs(args).items() if k in takes}
    fps = float(pipe.video_encoder.config.fps)
    size = int(pipe.video_encoder.config.frame_size)
    n = len(clips)
    shuffle = [(i + 1) % n for i in range(n)]  # a derangement: every video gets another one's condition
    rows = {"model": [], "unconditional": [], "shuffled video": [], "real music": [], "real music, shuffled": []}
    visual = {}
    for clip in clips:
        frames = load_video(str(clip["video"]), fps=fps, size=size, end=args.seconds).frames
        visual[clip["id"]] = visual_beats(frames, fps)
    # Every piece of music is generated and beat-tracked once: the shuffled row of clip i is the music
    # made for clip shuffle[i]'s video (same seed), scored against clip i's beats; the unconditional
    # music depends on the seed only.
    # best-of-N: the model and shuffled rows choose among N candidates for the video they were given; the
    # unconditional row has no video to choose for (one draw)
    kwargs = dict(duration=args.seconds, guidance_scale=guidance, num_inference_steps=args.steps,
                  num_candidates=args.candidates, pace_weight=args.pace_weight, **sampling)
    real_times, model_times = [], {}  # clip -> real music's beats; (clip, seed) -> generated music's beats
    start = time.time()
    for i, clip in enumerate(clips):
        real = load_audio(str(clip["audio"]), pipe.sample_rate, end=args.seconds)
        real_times.append(music_beats(real[0], pipe.sample_rate).times)
        for seed in range(args.seeds):
            out = pipe(video=str(clip["video"]), generator=torch.Generator().manual_seed(seed), **kwargs)
            audio = out.audios[0]
            model_times[i, seed] = music_beats(audio[0], out.sample_rate).times
            if i == 0 and seed == 0:
                plot_alignment(Path(args.out) / f"alignment_{name}.png", visual[clip["id"]], audio[0], out.sample_rate,
                               title=f"vmas-tiny {name} on held-out {clip['id']}")
                import soundfile as sf

                sf.write(str(Path(args.out) / f"sample_{name}_{clip['id']}.wav"), audio[0], out.sample_rate)
        print(f"[{name}] {i + 1}/{n} clips, {time.time() - start:.0f} s", file=sys.stderr)
    uncond_times = [music_beats(generate_unconditional(pipe, args.seconds, seed, args.steps, sampling)[0],
                                pipe.sample_rate).times for seed in range(args.seeds)]
    for i, clip in enumerate(clips):
        reference = visual[clip["id"]].times

        def score(times):
            return beat_scores(times, reference, args.seconds)

        rows["real music"].append(score(real_times[i]))
        # what a model that follows its video perfectly scores in the shuffled condition
        rows["real music, shuffled"].append(score(real_times[shuffle[i]]))
        for seed in range(args.seeds):
            rows["model"].append(score(model_times[i, seed]))
            rows["shuffled video"].append(score(model_times[shuffle[i], seed]))
            rows["unconditional"].append(score(uncond_times[seed]))
    def per_clip(rs, i):  # the rows of clip i (one per seed, or one for the real music)
        return rs[i * (len(rs) // n) : (i + 1) * (len(rs) // n)]

    def summary(indices):
        out = {}
        for cond, rs in rows.items():
            chosen = [r for i in indices for r in per_clip(rs, i)]
            out[cond] = {k: float(np.mean([r[k] for r in chosen])) for k in chosen[0]}
            out[cond]["bhs_window_std"] = float(np.std([r["bhs_window"] for r in chosen]))
            out[cond]["count"] = len(chosen)
        return out

    table = summary(range(n))
    # per kind of video (beat cuts, motion and sparse cuts, no beat events), when the set says
    groups = sorted({clip["group"] for clip in clips if clip.get("group")})
    table["groups"] = {g: summary([i for i, clip in enumerate(clips) if clip.get("group") == g]) for g in groups}
    # per clip (mean over seeds): which videos a model follows, which it misses
    table["per_clip_bhs"] = {
        clip["id"]: {cond: float(np.mean([r["bhs_window"] for r in per_clip(rs, i)])) for cond, rs in rows.items()}
        for i, clip in enumerate(clips)
    }

    table.update(real_music_retrieval(pipe, clips, args))
    table["guidance"], table["sampling"] = guidance, sampling
    table["candidates"], table["pace_weight"] = args.candidates, args.pace_weight
    return table


def video_group(item: dict) -> str:
    """The kind of a music-set video: a cut on every beat, motion accents or cuts every 2-4 beats,
    events on the music's strongest onsets (its beats were not trusted), or no event at all."""
    if item["video_kind"] == "drift":
        return "no beat events"
    if item.get("events_on") == "onsets":
        return "onset accents"
    every = item.get("event_every", item.get("cut_every"))  # sets built before zooms and pans thinned out say cut_every
    if item["video_kind"] == "cuts" and every == 1:
        return "beat cuts"
    return "motion, sparse cuts"


def markdown(results: dict) -> str:
    lines = ["| backend | videos | music | BHS (window) | BCS (window) | F1 (window) | BHS (1 s bins) | BCS (1 s bins) | n |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, table in results.items():
        if "model" not in table:  # --retrieval-only
            continue
        for group, part in [("all", table)] + sorted(table.get("groups", {}).items()):
            model_bhs = part["model"]["bhs_window"]
            for cond in ("model", "unconditional", "shuffled video", "real music", "real music, shuffled"):
                r = part[cond]
                plain = cond in ("model", "real music", "real music, shuffled") or not r["bhs_window"]
                ratio = "" if plain else f" (model x{model_bhs / r['bhs_window']:.2f})"
                lines.append(f"| {name} | {group} | {cond} | {r['bhs_window']:.3f} ± {r['bhs_window_std']:.3f}{ratio} | "
                             f"{r['bcs_window']:.3f} | {r['f1_window']:.3f} | {r['bhs_bins']:.3f} | {r['bcs_bins']:.3f} | "
                             f"{r['count']} |")
    lines += ["", "| backend | pairs | R@1 | chance@1 | R@5 | chance@5 |", "|---|---|---|---|---|---|"]
    for name, table in results.items():
        if "retrieval" not in table:
            continue
        r = table["retrieval"]
        lines.append(f"| {name} | {r['pairs']} | {r['R@1']:.3f} | {r['chance@1']:.3f} | {r['R@5']:.3f} | {r['chance@5']:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    from vmas_diffusion.cli import add_sampling_options

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", default=None,
                        help="NAME=PIPELINE (folder or bundled name); default ar=vmas-tiny-ar, ldm=vmas-tiny-ldm")
    parser.add_argument("--data", type=Path, default=ROOT / ".cache" / "alignment")
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", default=str(ROOT / ".cache" / "alignment_eval"))
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds of music per clip")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--guidance", type=float, default=None,
                        help="classifier-free guidance (default: the backend's RECOMMENDED_GUIDANCE, as the demo)")
    add_sampling_options(parser)
    parser.add_argument("--steps", type=int, default=25, help="diffusion steps (LDM)")
    parser.add_argument("--window", type=float, default=4.0, help="retrieval window seconds")
    parser.add_argument("--retrieval-seconds", type=float, default=16.0, help="seconds of each clip cut into windows")
    parser.add_argument("--candidates", type=int, default=1, help="best-of-N for the model and shuffled rows")
    parser.add_argument("--pace-weight", type=float, default=0.0, help="with --candidates: best-of-N's pace term")
    parser.add_argument("--retrieval-only", action="store_true", help="only the real-music retrieval rows (no generation)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-clips", type=int, default=None, help="N clips spread evenly over the split")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    clips = []
    meta_path = args.data / "meta.json"  # scripts/build_music_set.py: the kind of each video
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    for line in (args.data / f"{args.split}.jsonl").read_text().splitlines():
        item = json.loads(line)
        clips.append({"id": item["id"], "video": args.data / item["video"], "audio": args.data / item["audio"],
                      "group": video_group(meta[item["id"]]) if item["id"] in meta else None})
    if args.max_clips and len(clips) > args.max_clips:  # evenly spread over the split (it is ordered by source)
        clips = [clips[i] for i in np.linspace(0, len(clips) - 1, args.max_clips).round().astype(int)]
    models = dict(spec.split("=", 1) for spec in (args.model or ["ar=vmas-tiny-ar", "ldm=vmas-tiny-ldm"]))
    results = {name: evaluate_model(name, path, clips, args) for name, path in models.items()}
    (Path(args.out) / "results.json").write_text(json.dumps(results, indent=1))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
