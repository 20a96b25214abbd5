#!/usr/bin/env bash
# The GPU path of issue 18 in one short run: the main job, the training-step and attack benches
# on `--device cuda` (and wgpu on the same card), next to PyTorch CUDA when it is installed there.
#
# A lent GPU machine reaches no registry, so everything is built here first:
#   scripts/gpu_check.sh build     # here: release binaries with cuda + wgpu into gpu-bin/
#   scripts/gpu_check.sh run       # there (the device tool carries gpu-bin/): writes $OUT or out/gpu
# `cuda` compiles offline only with DOCS_RS=1 (burn's LLVM bundler would download otherwise);
# the CUDA runtime (NVRTC, the driver) is loaded at run time from the machine's libraries.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-run}
bin=gpu-bin

if [ "$mode" = build ]; then
    export DOCS_RS=1
    cargo build --release --features wgpu,cuda --example robust_finetune
    cargo bench --features wgpu,cuda --no-run --bench training_step --bench attacks \
        --message-format=json 2>/dev/null \
        | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["bench"]:
        print(m["target"]["name"], m["executable"])' > /tmp/gpu_benches
    mkdir -p "$bin"
    cp target/release/examples/robust_finetune "$bin/"
    while read -r name path; do cp "$path" "$bin/$name"; done < /tmp/gpu_benches
    strip "$bin"/* 2>/dev/null || true
    du -sh "$bin"/*
    exit 0
fi

out=${OUT:-out/gpu}
mkdir -p "$out"
log() { echo "=== $* ($(date +%T))" | tee -a "$out/log.txt"; }
{ nvidia-smi || true; } > "$out/nvidia-smi.txt" 2>&1
for device in cuda wgpu; do
    log "main job on $device"
    /usr/bin/time -v "$bin/robust_finetune" --device "$device" --quiet --out "$out/main-$device" \
        > "$out/main-$device.log" 2>&1 || log "main job on $device failed (rc $?)"
    tail -25 "$out/main-$device.log" >> "$out/log.txt"
done
for bench in training_step attacks; do
    log "bench $bench on cuda"
    SIGNSYM_BENCH_DEVICE=cuda SIGNSYM_PAIRED_ROUNDS=5 "$bin/$bench" --bench \
        --warm-up-time 1 --measurement-time 5 resnet18 > "$out/bench-$bench.log" 2>&1 \
        || log "bench $bench failed (rc $?)"
    grep -E 'time:|ratio' "$out/bench-$bench.log" >> "$out/log.txt" || true
done
if python3 -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
    log "PyTorch CUDA reference"
    python3 scripts/replica_robust_finetune.py --device cuda \
        > "$out/replica.log" 2>&1 || log "replica failed (rc $?)"
    tail -15 "$out/replica.log" >> "$out/log.txt"
else
    log "no PyTorch with CUDA on this machine: no reference timings"
fi
