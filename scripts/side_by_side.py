#!/usr/bin/env python3
"""Issue 18's targets against PyTorch, ours and PyTorch's alternating on one machine.

For each round, every target runs once on each side, ours first in odd rounds and PyTorch's first
in even ones: our criterion bench (BP, `SIGNSYM_PAIRED_ROUNDS=0`, criterion's mean) and
`scripts/torch_kernels.py` (median of repeated calls) on the same shapes. Prints each pair and a
markdown table of medians over the rounds with the ratio ours / PyTorch's.

    python3 scripts/side_by_side.py --torch-python /path/to/venv/bin/python [--rounds 2]
    python3 scripts/side_by_side.py --torch-python ... --avx2   # as on a CPU without AVX-512

`--avx2` builds the benches without `x86-v4` (so `gemm` runs its AVX2 kernels; into
`target/avx2`), caps signsym's own loops with `SIGNSYM_MAX_SIMD=avx2`, and runs PyTorch with
`ATEN_CPU_CAPABILITY=avx2` and `ONEDNN_MAX_CPU_ISA=AVX2`: on an AVX-512 machine, both sides use
the instructions an AVX2-only CPU has (the cores and caches stay this machine's; burn-flex's own
elementwise kernels still pick AVX-512 at run time, see docs/performance.md). A
`CARGO_TARGET_DIR` in the environment replaces `target/avx2`.

Needs only Python's standard library here; `--torch-python` names an interpreter with PyTorch
(from PyPI; never a dependency of signsym).
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (label, our bench binary, criterion filter, torch_kernels.py --only, measurement seconds)
TARGETS = [
    ("ResNet-18 step, torchvision stem", "training_step", "train_step/resnet18_32/bp$",
     "resnet18_32 Adam", 3),
    ("ResNet-18 step, CIFAR stem", "training_step", "train_step/resnet18_cifar_stem_32/bp$",
     "resnet18_cifar_stem_32", 8),
    ("conv 3x3 64->64 fwd+bwd", "feedback_kernels", "kernel/conv3x3_64x64_b32_32x32/bp$",
     "conv3x3", 3),
    ("FGSM, ResNet-18", "attacks", "attack/resnet18_32/fgsm/bp$", "resnet18_32 FGSM", 3),
    ("PGD-5, ResNet-18", "attacks", "attack/resnet18_32/pgd5-linf/bp$", "resnet18_32 PGD-5", 4),
    ("conv1d k5 64->64 fwd+bwd", "feedback_kernels", "kernel/conv1d_k5_64x64_b32_256/signsym$",
     "conv1d_k5", 3),
    ("conv_transpose 4x4/2 64->32 fwd+bwd", "feedback_kernels",
     "kernel/conv_transpose4x4s2_64x32_b32_16x16/signsym$", "conv_transpose4x4s2", 3),
]

UNITS = {"ns": 1e-6, "µs": 1e-3, "us": 1e-3, "ms": 1.0, "s": 1e3}


def build(avx2):
    """Builds the three benches; returns {name: executable}."""
    cmd = ["cargo", "bench", "--no-run", "--message-format=json",
           "--bench", "training_step", "--bench", "attacks", "--bench", "feedback_kernels"]
    env = dict(os.environ)
    if avx2:
        cmd += ["--no-default-features", "--features", "flex,study"]
        env.setdefault("CARGO_TARGET_DIR", os.path.join(ROOT, "target", "avx2"))
    out = subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    found = {}
    for line in out.stdout.splitlines():
        msg = json.loads(line)
        if (msg.get("reason") == "compiler-artifact" and msg.get("executable")
                and msg["target"]["kind"] == ["bench"]):
            found[msg["target"]["name"]] = msg["executable"]
    return found


def ours(executable, filt, seconds, avx2):
    env = dict(os.environ, SIGNSYM_PAIRED_ROUNDS="0")
    if avx2:
        env["SIGNSYM_MAX_SIMD"] = "avx2"
    out = subprocess.run([executable, "--bench", filt, "--warm-up-time", "1",
                          "--measurement-time", str(seconds), "--noplot"],
                         cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout
    m = re.search(r"time:\s+\[\S+ \S+ (\S+) (\S+) \S+ \S+\]", out)
    if not m:
        sys.exit(f"no criterion time for {filt}:\n{out}")
    return float(m.group(1)) * UNITS[m.group(2)]


def theirs(python, only, seconds, avx2):
    env = dict(os.environ)
    if avx2:
        env.update(ATEN_CPU_CAPABILITY="avx2", ONEDNN_MAX_CPU_ISA="AVX2")
    out = subprocess.run([python, os.path.join(ROOT, "scripts", "torch_kernels.py"),
                          "--only", only, "--seconds", str(seconds)],
                         cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout
    m = re.search(r"median ([0-9.]+) ms", out)
    if not m:
        sys.exit(f"no PyTorch time for {only}:\n{out}")
    capability = re.search(r"CPU capability (\S+)", out)
    return float(m.group(1)), capability.group(1) if capability else "?"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--torch-python", required=True)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--avx2", action="store_true")
    parser.add_argument("--only", default="", help="targets whose label contains this")
    args = parser.parse_args()

    benches = build(args.avx2)
    targets = [t for t in TARGETS if args.only in t[0]]
    times = {t[0]: ([], []) for t in targets}
    capability = "?"
    for r in range(args.rounds):
        for label, bench, filt, only, seconds in targets:
            sides = [("ours", lambda: ours(benches[bench], filt, seconds, args.avx2)),
                     ("pytorch", lambda: theirs(args.torch_python, only, seconds, args.avx2))]
            for side, run in sides if r % 2 == 0 else sides[::-1]:
                value = run()
                if side == "pytorch":
                    value, capability = value
                times[label][side == "pytorch"].append(value)
                print(f"round {r + 1} {label}: {side} {value:.1f} ms", flush=True)

    print(f"\nsignsym {'without x86-v4, SIGNSYM_MAX_SIMD=avx2' if args.avx2 else 'default build'}; "
          f"PyTorch CPU capability {capability}; {args.rounds} rounds\n")
    print("| target | ours (ms) | PyTorch (ms) | ratio of medians |")
    print("|---|---|---|---|")
    for label, (a, b) in times.items():
        ratio = statistics.median(a) / statistics.median(b)
        print(f"| {label} | {', '.join(f'{x:.1f}' for x in a)} | "
              f"{', '.join(f'{x:.1f}' for x in b)} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
