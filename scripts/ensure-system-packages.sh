#!/usr/bin/env bash
# Installs the system tools Hark's run and tests need when they are missing:
# redis-server (broker), espeak-ng and sox (test audio), ffmpeg (extra codecs for tests; `hark stream --mic`),
# nginx (the reverse-proxy config in deploy/nginx is tested against a real nginx),
# chromium (the web console's browser test; Playwright drives this system browser, never a downloaded one).
set -euo pipefail
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v espeak-ng >/dev/null || missing+=(espeak-ng)
command -v sox >/dev/null || missing+=(sox libsox-fmt-all)
command -v ffmpeg >/dev/null || missing+=(ffmpeg)
command -v nginx >/dev/null || missing+=(nginx-light)
command -v chromium >/dev/null || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing system packages: ${missing[*]}"
if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else
  echo "missing ${missing[*]} and not root: install them with your package manager" >&2; exit 1
fi
if command -v apt-get >/dev/null; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "no apt-get here: install ${missing[*]} with your package manager" >&2; exit 1
fi
