#!/usr/bin/env python3
"""PyTorch's side of `cargo bench --bench feedback_kernels -- conv3x3` and of the small CNN's
training steps (`training_step -- 'small_cnn|resnet18'`) and of the ResNet-18 attacks
(`attacks -- 'attack/resnet18_32'`), and of the 1-d and transposed convolutions
(`feedback_kernels -- 'conv1d|conv_transpose'`), for ratios measured back to back on one CPU
(docs/performance.md). Same shapes: a 3×3 convolution 64 → 64, padding 1, batch 32, 32×32,
forward + backward (input and weight gradients) of `sum(conv(x) ∘ r)`; the main job's small CNN
(5×5 convolutions of 32 and 64 channels, padding 2, 2×2 pools, 128 hidden, 10 classes, 28×28) one
Adam step on a batch of 32; torchvision's ResNet-18 (10 classes) on 32×32, batch 32, one Adam step
with its own stem and with the CIFAR stem (3×3 stride-1 first convolution, no max pooling); FGSM
and PGD-5 (L∞, ε = 0.03, steps of ε/3, no random start: `PgdConfig::paper()`) on that ResNet-18 in eval mode, each
ending with one forward on the adversarial batch to report success, as signsym's attacks do.

    python scripts/torch_kernels.py [--threads 2] [--seconds 4] [--only resnet]

PyTorch comes from PyPI; it is never a dependency of signsym.
"""

import argparse
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def timed(step, seconds):
    """Median wall time of `step` over repeated calls for about `seconds` (after a warm-up)."""
    for _ in range(3):
        step()
    times = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 10:
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), len(times)


def conv_step():
    x = torch.rand(32, 64, 32, 32, requires_grad=True)
    r = torch.rand(32, 64, 32, 32)
    conv = nn.Conv2d(64, 64, 3, padding=1)

    def step():
        x.grad = None
        conv.zero_grad(set_to_none=True)
        (conv(x) * r).sum().backward()

    return step


def other_conv_step(transposed):
    """`benches/feedback_kernels.rs`'s 1-d convolution (64 → 64, kernel 5, padding 2, batch 32,
    length 256) or transposed convolution (64 → 32, kernel 4, stride 2, padding 1, batch 32,
    16 × 16 → 32 × 32): forward + input, weight and bias gradients of `sum(y)`."""
    if transposed:
        x = torch.rand(32, 64, 16, 16, requires_grad=True)
        conv = nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1)
    else:
        x = torch.rand(32, 64, 256, requires_grad=True)
        conv = nn.Conv1d(64, 64, 5, padding=2)

    def step():
        x.grad = None
        conv.zero_grad(set_to_none=True)
        conv(x).sum().backward()

    return step


class SmallCnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, 5, padding=2)
        self.fc1 = nn.Linear(64 * 7 * 7, 128)
        self.head = nn.Linear(128, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.head(F.relu(self.fc1(x.flatten(1))))


def small_cnn_step():
    net = SmallCnn()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=5e-4)
    x = torch.rand(32, 1, 28, 28)
    y = torch.randint(0, 10, (32,))

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        opt.step()

    return step


def resnet18(cifar_stem):
    import torchvision

    net = torchvision.models.resnet18(num_classes=10)
    if cifar_stem:
        net.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    return net


def resnet_step(cifar_stem):
    net = resnet18(cifar_stem)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4, weight_decay=5e-4)
    x = torch.rand(32, 3, 32, 32)
    y = torch.arange(32) % 10

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        opt.step()

    return step


def resnet_attack(steps):
    """FGSM (steps = 1, a step of ε) or PGD (steps of ε/3), L∞ ε = 0.03, in [0, 1]."""
    net = resnet18(False).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    x = torch.rand(32, 3, 32, 32)
    y = torch.arange(32) % 10
    eps = 0.03
    alpha = eps if steps == 1 else eps / 3

    def attack():
        adv = x.clone()
        for _ in range(steps):
            adv.requires_grad_(True)
            grad, = torch.autograd.grad(F.cross_entropy(net(adv), y), adv)
            with torch.no_grad():
                adv = adv + alpha * grad.sign()
                adv = torch.min(torch.max(adv, x - eps), x + eps).clamp(0, 1)
        with torch.no_grad():
            return (net(adv).argmax(1) != y).sum().item()

    return attack


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--only", default="", help="run the benches whose name contains this")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}")
    benches = [("conv3x3_64x64_b32_32x32 fwd+bwd", conv_step),
               ("small CNN Adam step, batch 32", small_cnn_step),
               ("resnet18_32 Adam step, batch 32", lambda: resnet_step(False)),
               ("resnet18_cifar_stem_32 Adam step, batch 32", lambda: resnet_step(True)),
               ("resnet18_32 FGSM, batch 32", lambda: resnet_attack(1)),
               ("resnet18_32 PGD-5, batch 32", lambda: resnet_attack(5)),
               ("conv1d_k5_64x64_b32_256 fwd+bwd", lambda: other_conv_step(False)),
               ("conv_transpose4x4s2_64x32_b32_16x16 fwd+bwd", lambda: other_conv_step(True))]
    for name, make in benches:
        if args.only not in name:
            continue
        median, n = timed(make(), args.seconds)
        print(f"{name}: median {median * 1e3:.2f} ms over {n} calls")


if __name__ == "__main__":
    main()
