#!/usr/bin/env bash
# Set up vmas-diffusion on a fresh machine: a virtual environment in .venv with the
# project installed. `--dev` adds the test tools, the optional codec package and the
# real test media. Safe to run again (it only installs what is missing).
#
#   VMAS_TORCH_SPEC  the torch requirement to install first (default torch==2.13.0, the CPU
#                    build available offline here; elsewhere e.g. "torch" for the default build)
set -euo pipefail
cd "$(dirname "$0")/.."
dev=0
[ "${1:-}" = "--dev" ] && dev=1

python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -c "import torch" 2>/dev/null || python -m pip install -q "${VMAS_TORCH_SPEC:-torch==2.13.0}"
if [ "$dev" = 1 ]; then
  python -m pip install -q -e ".[dev,app]"
  # The `encodec` package declares torchaudio, which would replace torch with a multi-GB build;
  # it is only imported through vmas_diffusion.models.codecs.encodec_package, which needs no torchaudio.
  python -m pip install -q --no-deps "encodec==0.1.1" "einops>=0.6"
  # laion-clap pins numpy<2 and imports torchvision; only its HTSAT audio branch is used, through
  # vmas_diffusion.models.clap_audio, so it is installed without its declared dependencies.
  python -m pip install -q --no-deps "laion-clap==1.1.7" "torchlibrosa==0.1.0"
  # Hydrogen renders the drum track with a known tempo that the beat tests use (Debian packages).
  if ! command -v h2cli >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hydrogen hydrogen-data
  fi
  # Debian's chromium drives the app's end-to-end test through Playwright (no browser download).
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then bash scripts/install_browser.sh; fi
  bash scripts/fetch_test_media.sh
else
  python -m pip install -q -e .
fi
