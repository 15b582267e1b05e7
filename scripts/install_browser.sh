#!/usr/bin/env bash
# Install the headless browser that tests/test_app.py drives: Debian's chromium (Playwright is
# pointed at /usr/bin/chromium, so `playwright install` and its browser download are never
# needed) plus the fonts and libraries it renders the Gradio page with.
# Safe to run again: it does nothing when everything is already there. Needs root and apt-get.
set -euo pipefail

# chromium pulls its own shared libraries; the fonts make text in screenshots readable
packages=(chromium fonts-liberation fonts-dejavu-core)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" = 0 ] && [ -x /usr/bin/chromium ]; then
  echo "install_browser: chromium already installed ($(/usr/bin/chromium --version 2>/dev/null || echo unknown version))"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "install_browser: needs root to apt-get install ${missing[*]}" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null; then
  echo "install_browser: apt-get not found; install chromium by other means and set VMAS_CHROMIUM" >&2
  exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "install_browser: $(/usr/bin/chromium --version)"
