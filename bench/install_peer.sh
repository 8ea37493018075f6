#!/usr/bin/env bash
# The peer server of bench/throughput.py in its own venv (not Hark's): faster-whisper-server 0.0.3 with
# the engine pinned to the versions Hark's venv runs, so both sides decode with the same code.
#   bash bench/install_peer.sh [VENV]   (default /work/peer-venv)
set -euo pipefail
venv="${1:-/work/peer-venv}"
hark_python="${HARK_PYTHON:-$(dirname "$0")/../.venv/bin/python}"
[ -x "$hark_python" ] || { echo "no Hark venv at $hark_python (set HARK_PYTHON); its engine versions are the pins" >&2; exit 2; }
pins=()
for package in faster-whisper ctranslate2 onnxruntime av tokenizers numpy; do
  version="$("$hark_python" -c "import importlib.metadata as m; print(m.version('$package'))" 2>/dev/null || true)"
  [ -n "$version" ] && pins+=("$package==$version")
done
python3.11 -m venv "$venv"
"$venv/bin/pip" install --quiet faster-whisper-server==0.0.3 "${pins[@]}"
"$venv/bin/python" -c "import importlib.metadata as m; print(*(f'{p} {m.version(p)}' for p in ('faster-whisper-server', 'faster-whisper', 'ctranslate2')))"
