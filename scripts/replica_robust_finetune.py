#!/usr/bin/env python3
"""The main job (`cargo run --release --example robust_finetune`) written in PyTorch + biotorch,
for side-by-side wall times on the same CPU (docs/performance.md). Same protocol and sizes: the
small CNN (conv5 32 → pool → conv5 64 → pool → fc 128 → head), BP pre-training on 12,000 MNIST
images (1 epoch, Adam 2e-3, weight decay 5e-4, batch 32), a copy fine-tuned per rule on 12,000
Fashion-MNIST images (1 epoch, backbone 1e-3 / head 1e-2), clean accuracy on the 10,000 test
images, FGSM and PGD-5 (step ε/3) at ε ∈ {0, .02, .05, .1, .2, .3} on 250 images under the rule's
own backward (biotorch's layers) and the exact gradient (a plain PyTorch copy), and the
feedback/exact gradient cosine. HopSkipJump is left out (run the main job with
`--hsj-examples 0` to compare).

    python scripts/replica_robust_finetune.py [--data data] [--threads 2] [--rules bp,usf,...]

PyTorch, torchvision and biotorch come from PyPI; they are never a dependency of signsym.
"""

import argparse
import gzip
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

RULES = {"bp": None, "usf": "usf", "frsf": "frsf", "brsf": "brsf", "fa": "fa"}


def idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load(data, prefix, part):
    x = idx(f"{data}/{prefix}-{part}-images-idx3-ubyte.gz").astype(np.float32) / 255.0
    y = idx(f"{data}/{prefix}-{part}-labels-idx1-ubyte.gz").astype(np.int64)
    return torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y)


def layers(rule):
    if RULES[rule] is None:
        return nn.Conv2d, nn.Linear, {}
    import importlib
    # The rule's submodule must be imported by name: `biotorch.layers` does not import them.
    module = importlib.import_module(f"biotorch.layers.{RULES[rule]}")
    return module.Conv2d, module.Linear, {"layer_config": {"type": RULES[rule], "options": {
        "constrain_weights": False, "gradient_clip": False, "init": "kaiming"}}}


class SmallCnn(nn.Module):
    def __init__(self, rule="bp"):
        super().__init__()
        conv, linear, kw = layers(rule)
        self.conv1 = conv(1, 32, 5, padding=2, **kw)
        self.conv2 = conv(32, 64, 5, padding=2, **kw)
        self.fc1 = linear(64 * 7 * 7, 128, **kw)
        self.head = linear(128, 10, **kw)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.head(F.relu(self.fc1(x.flatten(1))))


def copy_weights(dst, src, head=True):
    s = {k: v for k, v in src.state_dict().items() if k.split(".")[-1] in ("weight", "bias")}
    if not head:
        s = {k: v for k, v in s.items() if not k.startswith("head.")}
    dst.load_state_dict(s, strict=False)


def train(model, x, y, groups, seed):
    opt = torch.optim.Adam(groups, betas=(0.9, 0.999), weight_decay=5e-4)
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(x), generator=g).to(x.device)
    model.train()
    for i in range(0, len(x), 32):
        b = order[i:i + 32]
        loss = F.cross_entropy(model(x[b]), y[b])
        opt.zero_grad()
        loss.backward()
        opt.step()


def accuracy(model, x, y):
    model.eval()
    with torch.no_grad():
        return sum((model(x[i:i + 500]).argmax(1) == y[i:i + 500]).sum().item()
                   for i in range(0, len(x), 500)) / len(x)


def grad(model, x, y):
    x = x.clone().requires_grad_(True)
    loss = F.cross_entropy(model(x), y, reduction="sum")
    return torch.autograd.grad(loss, x)[0]


def pgd(model, x, y, eps, steps, step):
    adv = x.clone()
    for _ in range(steps):
        adv = adv + step * grad(model, adv, y).sign()
        adv = torch.min(torch.max(adv, x - eps), x + eps).clamp(0, 1)
    with torch.no_grad():
        return (model(adv).argmax(1) == y).float().mean().item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rules", default="bp,usf,frsf,brsf,fa")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (the GPU check's reference)")
    args = ap.parse_args()
    dev = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    started = time.perf_counter()
    mx, my = load(args.data, "mnist", "train")
    fx, fy = load(args.data, "fashion", "train")
    tx, ty = load(args.data, "fashion", "t10k")
    mx, my, fx, fy = (t[:12000].to(dev) for t in (mx, my, fx, fy))
    tx, ty = tx.to(dev), ty.to(dev)
    pre = SmallCnn().to(dev)
    t = time.perf_counter()
    train(pre, mx, my, pre.parameters(), 0)
    print(f"pre-training {time.perf_counter() - t:.1f} s")
    ax, ay = tx[:250], ty[:250]
    eps_grid = [0.0, 0.02, 0.05, 0.1, 0.2, 0.3]
    for rule in args.rules.split(","):
        t = time.perf_counter()
        net = SmallCnn(rule).to(dev)
        copy_weights(net, pre, head=False)
        head = [p for n, p in net.named_parameters() if n.startswith("head.") and p.requires_grad]
        body = [p for n, p in net.named_parameters() if not n.startswith("head.") and p.requires_grad]
        train(net, fx, fy, [{"params": body, "lr": 1e-3}, {"params": head, "lr": 1e-2}], 1)
        t_train = time.perf_counter() - t
        clean = accuracy(net, tx, ty)
        t = time.perf_counter()
        exact = SmallCnn().to(dev)
        copy_weights(exact, net)
        exact.eval()
        net.eval()
        rows = {}
        for source, model in (("feedback", net), ("exact", exact)):
            rows[("fgsm", source)] = [pgd(model, ax, ay, e, 1, e) for e in eps_grid]
            rows[("pgd", source)] = [pgd(model, ax, ay, e, 5, e / 3) for e in eps_grid]
        gf, ge = grad(net, ax, ay).flatten(1), grad(exact, ax, ay).flatten(1)
        cos = F.cosine_similarity(gf, ge, dim=1).mean().item()
        t_attack = time.perf_counter() - t
        print(f"{rule}: clean {clean:.4f}, FGSM fb/ex ε=0.1 {rows[('fgsm', 'feedback')][3]:.3f}/"
              f"{rows[('fgsm', 'exact')][3]:.3f}, PGD fb/ex {rows[('pgd', 'feedback')][3]:.3f}/"
              f"{rows[('pgd', 'exact')][3]:.3f}, cos {cos:.3f}; train {t_train:.1f} s, "
              f"attacks {t_attack:.1f} s")
    print(f"total {time.perf_counter() - started:.1f} s ({args.device}, {args.threads} threads, "
          f"torch {torch.__version__})")


if __name__ == "__main__":
    main()
