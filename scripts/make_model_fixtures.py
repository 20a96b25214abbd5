"""Writes the PyTorch fixtures that `crates/models/tests/torchvision.rs` checks our models against.

Run from the repository root (needs torch, torchvision and safetensors; the tests do not):

    python3 scripts/make_model_fixtures.py

For each torchvision architecture it writes
- `<arch>_params.txt`: the full-size model's state-dict keys and shapes, as torchvision defines them;
- `<arch>_narrow.pth` and `<arch>_narrow.safetensors`: a narrow copy with the same key layout and
  random (seeded) weights and batch-norm statistics;
- `<arch>_narrow_io.safetensors`: a fixed input and PyTorch's eval-mode output for it (and, for
  the ResNets, the train-mode output, which uses batch statistics).

The narrow copies are built by `narrow_*` below. Each builder is first checked against torchvision
itself at full width: same keys, same shapes, and the same output for the same weights.
"""

import os
import sys

import torch
import torch.nn as nn
import torchvision
from safetensors.torch import save_file
from torchvision.models.resnet import BasicBlock

OUT = os.path.join("crates", "models", "tests", "fixtures")


def narrow_alexnet(ch=(64, 192, 384, 256, 256), hidden=4096, classes=1000):
    class AlexNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, ch[0], 11, 4, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
                nn.Conv2d(ch[0], ch[1], 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
                nn.Conv2d(ch[1], ch[2], 3, padding=1), nn.ReLU(inplace=True),
                nn.Conv2d(ch[2], ch[3], 3, padding=1), nn.ReLU(inplace=True),
                nn.Conv2d(ch[3], ch[4], 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            )
            self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
            self.classifier = nn.Sequential(
                nn.Dropout(0.5), nn.Linear(ch[4] * 36, hidden), nn.ReLU(inplace=True),
                nn.Dropout(0.5), nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
                nn.Linear(hidden, classes),
            )

        def forward(self, x):
            return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))

    return AlexNet()


def narrow_vgg16(ch=(64, 128, 256, 512, 512), hidden=4096, classes=1000):
    class Vgg(nn.Module):
        def __init__(self):
            super().__init__()
            layers, c_in = [], 3
            for stage, convs in enumerate((2, 2, 3, 3, 3)):
                for _ in range(convs):
                    layers += [nn.Conv2d(c_in, ch[stage], 3, padding=1), nn.ReLU(inplace=True)]
                    c_in = ch[stage]
                layers.append(nn.MaxPool2d(2, 2))
            self.features = nn.Sequential(*layers)
            self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
            self.classifier = nn.Sequential(
                nn.Linear(ch[4] * 49, hidden), nn.ReLU(True), nn.Dropout(0.5),
                nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(0.5),
                nn.Linear(hidden, classes),
            )

        def forward(self, x):
            return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))

    return Vgg()


def narrow_resnet18(widths=(64, 128, 256, 512), classes=1000, cifar_stem=False):
    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            w0 = widths[0]
            if cifar_stem:
                self.conv1 = nn.Conv2d(3, w0, 3, 1, 1, bias=False)
            else:
                self.conv1 = nn.Conv2d(3, w0, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(w0)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.Identity() if cifar_stem else nn.MaxPool2d(3, 2, 1)
            c_in = w0
            for i, w in enumerate(widths):
                stride = 1 if i == 0 else 2
                down = None
                if stride != 1 or c_in != w:
                    down = nn.Sequential(nn.Conv2d(c_in, w, 1, stride, bias=False), nn.BatchNorm2d(w))
                blocks = [BasicBlock(c_in, w, stride, down), BasicBlock(w, w)]
                setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
                c_in = w
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(c_in, classes)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            for i in range(4):
                x = getattr(self, f"layer{i + 1}")(x)
            return self.fc(torch.flatten(self.avgpool(x), 1))

    return ResNet()


def randomize(model, gen):
    """Weights ~ N(0, 1/fan_in) so activations keep their scale; batch-norm statistics, scales and
    shifts away from their defaults so eval-mode batch norm is really exercised."""
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=gen) * 1.5 + 0.5)
            elif name.endswith("running_mean"):
                t.copy_(torch.randn(t.shape, generator=gen) * 0.2)
            elif t.dim() == 1:
                is_bn_scale = name.endswith("weight")
                t.copy_(torch.randn(t.shape, generator=gen) * 0.1 + (1.0 if is_bn_scale else 0.0))
            else:
                fan_in = t[0].numel()
                t.copy_(torch.randn(t.shape, generator=gen) / fan_in ** 0.5)


def same_layout(ours, theirs, x):
    a, b = ours.state_dict(), theirs.state_dict()
    assert list(a) == list(b), (set(a) ^ set(b))
    for k in a:
        assert a[k].shape == b[k].shape, (k, a[k].shape, b[k].shape)
    ours.load_state_dict(b)
    ours.eval(), theirs.eval()
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x))


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(2502_05925)

    full = {
        "alexnet": (torchvision.models.alexnet(), narrow_alexnet()),
        "vgg16": (torchvision.models.vgg16(), narrow_vgg16()),
        "resnet18": (torchvision.models.resnet18(), narrow_resnet18()),
    }
    x_full = torch.randn(1, 3, 224, 224, generator=gen)
    for arch, (tv, replica) in full.items():
        same_layout(replica, tv, x_full)
        with open(os.path.join(OUT, f"{arch}_params.txt"), "w") as f:
            f.write(f"# torchvision {torchvision.__version__} models.{arch}(): state-dict key, shape\n")
            for k, v in tv.state_dict().items():
                f.write(f"{k}\t{list(v.shape)}\n")
        print(arch, "layout matches torchvision", file=sys.stderr)

    narrow = {
        "alexnet": (narrow_alexnet((8, 16, 16, 12, 12), 24, 10), 67, 2),
        "vgg16": (narrow_vgg16((4, 6, 8, 8, 8), 16, 10), 32, 2),
        # Train-mode batch norm over few values is ill-conditioned: 64 pixels and 4 images keep
        # at least 16 values per channel in layer4.
        "resnet18": (narrow_resnet18((4, 8, 8, 12), 10), 64, 4),
        # (Named "cifarstem": with the name "resnet18_cifar_narrow.pth" torch.save writes a zip
        # that burn-store 0.22.1's reader (zip 9.4.1) refuses with "Invalid Central Directory
        # header", while Python's zipfile reads it.)
        "resnet18_cifarstem": (narrow_resnet18((4, 8, 8, 12), 10, cifar_stem=True), 32, 4),
    }
    for arch, (model, size, batch) in narrow.items():
        randomize(model, gen)
        # Saved before any train-mode pass, which would move the running statistics.
        state = {k: v.clone().contiguous() for k, v in model.state_dict().items()}
        model.eval()
        x = torch.randn(batch, 3, size, size, generator=gen)
        io = {"input": x.contiguous()}
        with torch.no_grad():
            io["output_eval"] = model(x).contiguous()
            if arch.startswith("resnet"):
                model.train()
                io["output_train"] = model(x).contiguous()
        base = os.path.join(OUT, f"{arch}_narrow")
        torch.save(state, base + ".pth")
        save_file(state, base + ".safetensors")
        save_file(io, base + "_io.safetensors")
        print(arch, "written", file=sys.stderr)


if __name__ == "__main__":
    main()
