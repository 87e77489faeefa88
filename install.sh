#!/usr/bin/env bash
# One-command setup on Debian/Ubuntu: system packages for PyAudio, then a virtualenv in .venv.
# Usage: bash install.sh            (VENV=path bash install.sh to put the environment elsewhere)
set -euo pipefail
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
echo "Installed into $VENV. Activate it with: source $VENV/bin/activate"
