"""Four classic CNNs built by hand in PyTorch (torchvision's CPU wheel does not import beside
the CPU torch here), written the way their papers' reference code writes them, for the graph
import tests (tests/test_graph_import.py):

- :func:`resnet18`: He et al. 2015, torchvision's layout (BasicBlock, [2, 2, 2, 2], 64..512
  filters, 1×1 stride-2 projection shortcuts, ``out += identity``), every weight and shape as
  torchvision's; ``num_classes`` for the head.
- :func:`vgg11`: Simonyan & Zisserman 2014, configuration A (8 conv layers, 5 max pools), its
  classifier shrunk to 512-wide FC layers for a 64×64 input (``x.view(x.size(0), -1)``).
- :func:`mobilenet_v2`: Sandler et al. 2018, the inverted residuals (1×1 expand, 3×3
  depthwise, 1×1 linear projection, the shortcut where stride 1 and the widths agree), ReLU6,
  ``F.adaptive_avg_pool2d(x, 1)`` and ``torch.flatten``.
- :func:`inception_small`: two Inception modules (Szegedy et al. 2014): 1×1, 1×1→3×3,
  1×1→3×3→3×3 and 3×3 max pool→1×1 branches joined with ``torch.cat(dim=1)``.

:func:`randomize` draws every weight and batch-norm statistic (so no batch norm is the identity);
the nets come in eval mode.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["resnet18", "vgg11", "mobilenet_v2", "inception_small", "randomize", "NETS"]


def randomize(net: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights (torch's default init, seeded) and random batch-norm statistics; eval."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.normal_(0, 0.2, generator=gen)
                m.running_mean.normal_(0, 0.2, generator=gen)
                m.running_var.uniform_(0.5, 2.0, generator=gen)
    return net.eval()


# -- ResNet-18 --------------------------------------------------------------------------------
class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    def __init__(self, layers: tuple[int, ...] = (2, 2, 2, 2), num_classes: int = 10) -> None:
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._stage(64, layers[0])
        self.layer2 = self._stage(128, layers[1], 2)
        self.layer3 = self._stage(256, layers[2], 2)
        self.layer4 = self._stage(512, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)

    def _stage(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        down = None
        if stride != 1 or self.inplanes != planes:
            down = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride, bias=False),
                                 nn.BatchNorm2d(planes))
        layers = [BasicBlock(self.inplanes, planes, stride, down)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def resnet18(num_classes: int = 10) -> nn.Module:
    return randomize(ResNet((2, 2, 2, 2), num_classes), 18)


# -- VGG-11 -----------------------------------------------------------------------------------
class VGG(nn.Module):
    CFG_A = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")

    def __init__(self, num_classes: int = 10, image: int = 64) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = 3
        for v in self.CFG_A:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, int(v), 3, padding=1), nn.ReLU(inplace=True)]
                c = int(v)
        self.features = nn.Sequential(*layers)
        side = image // 32
        self.classifier = nn.Sequential(
            nn.Linear(512 * side * side, 512), nn.ReLU(True), nn.Dropout(),
            nn.Linear(512, 512), nn.ReLU(True), nn.Dropout(), nn.Linear(512, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = x.view(x.size(0), -1)
        return self.classifier(x)


def vgg11(num_classes: int = 10, image: int = 64) -> nn.Module:
    return randomize(VGG(num_classes, image), 11)


# -- MobileNetV2 ------------------------------------------------------------------------------
def conv_bn(c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1,
            act: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(c_in, c_out, k, stride, (k - 1) // 2, groups=groups, bias=False),
              nn.BatchNorm2d(c_out)]
    return nn.Sequential(*layers, *([nn.ReLU6(inplace=True)] if act else []))


class InvertedResidual(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = c_in * expand
        self.use_res_connect = stride == 1 and c_in == c_out
        layers = [conv_bn(c_in, hidden, 1)] if expand != 1 else []
        layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden),  # depthwise
                   conv_bn(hidden, c_out, 1, act=False)]                # linear bottleneck
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    #: t (expansion), c (channels), n (repeats), s (first stride): the paper's Table 2
    SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
               (6, 160, 3, 2), (6, 320, 1, 1))

    def __init__(self, num_classes: int = 10, last: int = 640) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv_bn(3, 32, 3, 2)]
        c = 32
        for t, out, n, s in self.SETTING:
            for i in range(n):
                layers.append(InvertedResidual(c, out, s if i == 0 else 1, t))
                c = out
        layers.append(conv_bn(c, last, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


def mobilenet_v2(num_classes: int = 10) -> nn.Module:
    return randomize(MobileNetV2(num_classes), 2)


# -- a small Inception net --------------------------------------------------------------------
class BasicConv2d(nn.Module):
    def __init__(self, c_in: int, c_out: int, **kw: object) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, bias=False, **kw)
        self.bn = nn.BatchNorm2d(c_out, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


class Inception(nn.Module):
    def __init__(self, c_in: int, c1: int, c3r: int, c3: int, c5r: int, c5: int,
                 pool: int) -> None:
        super().__init__()
        self.branch1 = BasicConv2d(c_in, c1, kernel_size=1)
        self.branch2 = nn.Sequential(BasicConv2d(c_in, c3r, kernel_size=1),
                                     BasicConv2d(c3r, c3, kernel_size=3, padding=1))
        self.branch3 = nn.Sequential(BasicConv2d(c_in, c5r, kernel_size=1),
                                     BasicConv2d(c5r, c5, kernel_size=3, padding=1),
                                     BasicConv2d(c5, c5, kernel_size=3, padding=1))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True),
                                     BasicConv2d(c_in, pool, kernel_size=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)]
        return torch.cat(outs, 1)


class InceptionSmall(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(BasicConv2d(3, 32, kernel_size=3, stride=2, padding=1),
                                  nn.MaxPool2d(3, 2, ceil_mode=True))
        self.inception3a = Inception(32, 16, 24, 32, 4, 8, 8)     # -> 64 channels
        self.inception3b = Inception(64, 32, 32, 48, 8, 24, 16)   # -> 120 channels
        self.maxpool = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(120, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inception3b(self.inception3a(self.stem(x)))
        x = self.avgpool(self.maxpool(x))
        return self.fc(self.dropout(torch.flatten(x, 1)))


def inception_small(num_classes: int = 10) -> nn.Module:
    return randomize(InceptionSmall(num_classes), 3)


#: name -> constructor, for parametrized tests.
NETS = {"resnet18": resnet18, "vgg11": vgg11, "mobilenet_v2": mobilenet_v2,
        "inception_small": inception_small}
