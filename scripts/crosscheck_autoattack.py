#!/usr/bin/env python3
"""Cross-check signsym's APGD-CE, APGD-T, Square and AutoAttack against torchattacks.

Reads what `cargo run --release --example crosscheck_autoattack -- --out DIR` wrote into DIR
(bp.safetensors, usf.safetensors, images.f32, labels.json, ours.json), loads the weights into a
PyTorch replica of signsym's small CNN, runs torchattacks on the same images and budgets, and
prints a Markdown table of both sides. PyTorch, torchattacks and safetensors come from PyPI;
they are never a dependency of signsym or of its tests.

    python scripts/crosscheck_autoattack.py out/crosscheck          # the comparison
    python scripts/crosscheck_autoattack.py out/crosscheck --bench  # AutoAttack throughput

With the exact gradient our numbers for the uSF model are directly comparable: its forward is an
ordinary network, and PyTorch's autograd on the replica is that exact gradient. The feedback
rows have no torchattacks counterpart (no PyTorch library attacks through a feedback backward).
"""

import argparse
import json
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchattacks
from safetensors.torch import load_file


class SmallCnn(nn.Module):
    """signsym's SmallCnn with its classification head: conv5-relu-pool, conv5-relu-pool,
    linear-relu, linear."""

    def __init__(self, c1=32, c2=64, hidden=128, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, c1, 5, padding=2)
        self.conv2 = nn.Conv2d(c1, c2, 5, padding=2)
        self.fc1 = nn.Linear(c2 * 7 * 7, hidden)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        return self.head(x)


def load(path):
    """Weights from signsym's `Network::save_safetensors` (linear weights are [in, out])."""
    t = load_file(path)
    model = SmallCnn()
    state = {
        "conv1.weight": t["backbone.conv1.weight"],
        "conv1.bias": t["backbone.conv1.bias"],
        "conv2.weight": t["backbone.conv2.weight"],
        "conv2.bias": t["backbone.conv2.bias"],
        "fc1.weight": t["backbone.fc1.weight"].t().contiguous(),
        "fc1.bias": t["backbone.fc1.bias"],
        "head.weight": t["head.linear.weight"].t().contiguous(),
        "head.bias": t["head.linear.bias"],
    }
    model.load_state_dict(state)
    return model.eval()


def robust_accuracy(model, attack, x, y):
    adv = attack(x, y)
    with torch.no_grad():
        return (model(adv).argmax(1) == y).float().mean().item()


def wilson_halfwidth(p, n):
    z = 1.96
    return z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--square-queries", type=int, default=5000)
    ap.add_argument("--bench", action="store_true", help="time AutoAttack on 32 images, eps 0.1")
    args = ap.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    d = args.dir
    labels = torch.tensor(json.load(open(f"{d}/labels.json")))
    n = len(labels)
    x = torch.frombuffer(bytearray(open(f"{d}/images.f32", "rb").read()), dtype=torch.float32)
    x = x.reshape(n, 1, 28, 28).clone()
    ours = json.load(open(f"{d}/ours.json"))

    if args.bench:
        model = load(f"{d}/bp.safetensors")
        xb, yb = x[:32], labels[:32]
        for name, attack in [
            ("torchattacks AutoAttack (its defaults: APGD 10 steps, FAB-T)",
             torchattacks.AutoAttack(model, norm="Linf", eps=0.1, version="standard", n_classes=10, seed=0)),
            ("APGD-CE + APGD-T (100 steps) + Square (5000), as signsym's standard suite",
             torchattacks.MultiAttack([
                 torchattacks.APGD(model, norm="Linf", eps=0.1, steps=100, n_restarts=1, loss="ce", seed=0),
                 torchattacks.APGDT(model, norm="Linf", eps=0.1, steps=100, n_restarts=1, n_classes=10, seed=0),
                 torchattacks.Square(model, norm="Linf", eps=0.1, n_queries=5000, n_restarts=1, seed=0),
             ])),
        ]:
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                attack(xb, yb)
                times.append(time.perf_counter() - t0)
            best = sorted(times)[1]
            print(f"{name}: median {best:.2f} s per 32 images = {32 / best:.1f} img/s "
                  f"({torch.get_num_threads()} threads)")
        return

    print(f"n = {n} Fashion-MNIST test images; PyTorch {torch.__version__}, torchattacks "
          f"{torchattacks.__version__}, {torch.get_num_threads()} threads\n")
    print("| rule | attack | ε | signsym (exact) | torchattacks | difference | ±95 % (one side) |")
    print("|---|---|---|---|---|---|---|")
    worst = 0.0
    for rule in ["bp", "usf"]:
        model = load(f"{d}/{rule}.safetensors")
        with torch.no_grad():
            clean = (model(x).argmax(1) == labels).float().mean().item()
        mine = {(r["attack"], r["epsilon"]): r["robust_accuracy"]
                for r in ours if r["rule"] == rule and r["source"] in ("exact", "score")}
        clean_ours = mine.get(("apgd-ce-linf", 0.0))
        print(f"| {rule} | clean | 0 | {clean_ours:.3f} | {clean:.3f} | {clean - clean_ours:+.3f} | |")
        eps_list = sorted({e for (_, e) in mine if e > 0})
        for eps in eps_list:
            attacks = {
                "apgd-ce-linf": torchattacks.APGD(model, norm="Linf", eps=eps, steps=args.steps,
                                                  n_restarts=1, loss="ce", seed=0),
                "apgd-t-linf": torchattacks.APGDT(model, norm="Linf", eps=eps, steps=args.steps,
                                                  n_restarts=1, n_classes=10, seed=0),
                "square-linf": torchattacks.Square(model, norm="Linf", eps=eps,
                                                   n_queries=args.square_queries, n_restarts=1,
                                                   seed=0),
            }
            attacks["autoattack-standard-linf"] = torchattacks.MultiAttack(list(attacks.values()))
            for name, attack in attacks.items():
                theirs = robust_accuracy(model, attack, x, labels)
                value = mine[(name, eps)]
                half = wilson_halfwidth(value, n)
                worst = max(worst, abs(value - theirs) / max(half, 1e-9))
                print(f"| {rule} | {name} | {eps} | {value:.3f} | {theirs:.3f} | "
                      f"{value - theirs:+.3f} | {half:.3f} |")
            full = torchattacks.AutoAttack(model, norm="Linf", eps=eps, version="standard",
                                           n_classes=10, seed=0)
            print(f"| {rule} | torchattacks AutoAttack as shipped (APGD 10 steps, FAB-T) | {eps} | "
                  f"| {robust_accuracy(model, full, x, labels):.3f} | | |")
    print(f"\nlargest |difference| in units of the 95 % half-width: {worst:.2f}")
    fb = [r for r in ours if r["source"] == "feedback" and r["epsilon"] > 0]
    print("\nsignsym through the feedback backward (no torchattacks counterpart):")
    for r in fb:
        print(f"  {r['rule']} {r['attack']} ε={r['epsilon']}: {r['robust_accuracy']:.3f}")


if __name__ == "__main__":
    sys.exit(main())
