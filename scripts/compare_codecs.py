#!/usr/bin/env python
"""Why vmas-tiny uses the signal-processing codec: reconstruction of held-out drum renders.

For the first seconds of held-out songs of the alignment set, each candidate codec encodes and
decodes the music; printed per codec (mean over songs):

* spectral convergence ``||S - S'|| / ||S||`` of STFT magnitudes (0 = perfect),
* log-spectral distance in dB,
* beat F1 (0.1 s) of the decoded music's beats against the song's KNOWN beats (the original
  render's own F1 is the ceiling),

and a spectrogram PNG (original and each codec, one song) to look at.

Usage: ``python scripts/compare_codecs.py [--model .cache/vmas_tiny/init_ar] [--out .cache/codec_compare.png]``
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def spectral_errors(a, b):
    import torch

    window = torch.hann_window(1024)
    A = torch.stft(a, 1024, 256, window=window, return_complex=True).abs()
    B = torch.stft(b, 1024, 256, window=window, return_complex=True).abs()
    sc = float((A - B).norm() / A.norm())
    lsd = float((20 * torch.log10(A + 1e-4) - 20 * torch.log10(B + 1e-4)).pow(2).mean().sqrt())
    return sc, lsd


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vmas-tiny", help="pipeline whose (fitted) mel codec is compared")
    parser.add_argument("--data", type=Path, default=ROOT / ".cache" / "alignment")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--songs", type=int, default=4)
    parser.add_argument("--out", default=str(ROOT / ".cache" / "codec_compare.png"))
    args = parser.parse_args(argv)

    import soundfile as sf
    import torch
    from omegaconf import OmegaConf

    from vmas_diffusion.beats import beat_scores, music_beats
    from vmas_diffusion.models.codecs import build_codec
    from vmas_diffusion.pipelines import VideoToMusicPipeline
    from vmas_diffusion.recipes import load_recipe

    torch.set_num_threads(2)
    meta = json.loads((args.data / "beats.json").read_text())
    mel = VideoToMusicPipeline.from_pretrained(args.model).codec
    torch.manual_seed(0)
    encodec = build_codec(OmegaConf.to_container(load_recipe(str(ROOT / "recipes" / "tiny_ar.yaml")).codec))
    codecs = {
        "mel + Griffin-Lim, latents": lambda x: mel.decode(mel.encode(x)),
        f"mel + Griffin-Lim, tokens ({mel.num_codebooks}x{mel.cardinality})": lambda x: mel.decode_tokens(mel.tokenize(x)),
        "tiny EnCodec (tiny_ar.yaml, untrained), tokens": lambda x: encodec.decode_tokens(encodec.tokenize(x)),
    }
    ids = [k for k, v in meta.items() if v["split"] == "test"][: args.songs]
    rows, shown = {}, {}
    for song in ids:
        audio = sf.read(str(args.data / "music" / f"{song}.wav"), dtype="float32")[0][: int(args.seconds * 16000)]
        x = torch.from_numpy(audio)
        beats = np.asarray(meta[song]["beats"])
        beats = beats[beats < args.seconds]
        rows.setdefault("original", []).append((0.0, 0.0, beat_scores(music_beats(audio, 16000).times, beats, args.seconds)["f1_window"]))
        for name, roundtrip in codecs.items():
            with torch.no_grad():
                y = roundtrip(x[None, None])[0, 0, : len(x)].float()
            f1 = beat_scores(music_beats(y.numpy(), 16000).times, beats, args.seconds)["f1_window"]
            rows.setdefault(name, []).append(spectral_errors(x, y) + (f1,))
            if song == ids[0]:
                shown[name] = y.numpy()
    print("| codec | spectral convergence | log-spectral distance (dB) | beat F1 vs known beats |")
    print("|---|---|---|---|")
    for name, values in rows.items():
        v = np.asarray(values).mean(0)
        print(f"| {name} | {v[0]:.3f} | {v[1]:.1f} | {v[2]:.3f} |")

    import librosa
    from matplotlib.figure import Figure

    first = sf.read(str(args.data / "music" / f"{ids[0]}.wav"), dtype="float32")[0][: 4 * 16000]
    panels = [("original", first)] + [(n, y[: 4 * 16000]) for n, y in shown.items()]
    fig = Figure(figsize=(10, 2.4 * len(panels)))
    for i, (name, y) in enumerate(panels):
        ax = fig.add_subplot(len(panels), 1, i + 1)
        spec = librosa.amplitude_to_db(np.abs(librosa.stft(y, n_fft=1024, hop_length=256)), ref=np.max)
        ax.imshow(spec, origin="lower", aspect="auto", vmin=-80, cmap="magma", extent=(0, len(y) / 16000, 0, 8000))
        ax.set_title(name)
        ax.set_ylabel("Hz")
    fig.tight_layout()
    fig.savefig(args.out, dpi=60)
    print(f"spectrograms: {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
