"""The CIFAR-10 ResNets of He et al. (2016), section 4.2, with "option A" shortcuts.

Layout (depth = 6n + 2): a 3x3 convolution 3->16 with BatchNorm and ReLU, then
three stages of n basic blocks each with 16, 32 and 64 channels (the first block
of stages 2 and 3 halves the resolution with a stride-2 convolution), global
average pooling and one linear layer. ResNet-20/32/44/56 have n = 3/5/7/9 and
about 0.27M/0.46M/0.66M/0.85M parameters.

Option A shortcuts are parameter-free: the identity, and where a block changes
the shape, spatial subsampling ``x[:, :, ::2, ::2]`` followed by zero channels,
split evenly before and after the kept ones (16 -> 32 channels: 8 zero channels,
16 kept, 8 zero). The split matters for pretrained weights: the convolutions
after a stage transition were trained against that channel layout.

Parameter names (``conv1``, ``bn1``, ``layer1.0.conv1``, ..., ``linear``) follow
the published pretrained files of akamaster/pytorch_resnet_cifar10, so their
state dicts load strictly once the ``module.`` prefix is removed. Every
activation is its own ``nn.ReLU`` module, so hooks see it; nothing is a lambda,
so the models deep-copy, pickle and trace with ``torch.fx``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ModelError
from .folding import conv_bn

WIDTHS = (16, 32, 64)


class ShortcutA(nn.Module):
    """Parameter-free shortcut: subsample by ``stride`` and zero-pad ``cin`` -> ``cout`` channels."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        if cout < cin or (cout - cin) % 2:
            raise ModelError(f"option-A shortcut needs an even channel increase, got {cin} -> {cout}")
        self.stride = stride
        self.pad = (cout - cin) // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.pad:
            # F.pad pads the last dimensions first: (W left, W right, H top, H bottom, C front, C back)
            x = F.pad(x, (0, 0, 0, 0, self.pad, self.pad))
        return x

    def extra_repr(self) -> str:
        return f"stride={self.stride}, pad_channels={self.pad}+{self.pad}"


class CifarBasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU (each ReLU its own module; in eval mode each
    BatchNorm folded into its convolution, :mod:`.folding`)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity() if stride == 1 and cin == cout else ShortcutA(cin, cout, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(conv_bn(self.conv1, self.bn1, x))
        out = conv_bn(self.conv2, self.bn2, out)
        return self.relu2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-``depth`` for 32x32 CIFAR images (He et al. 2016, option A shortcuts); raw logits.

    Expects *normalized* input; the zoo wraps it in :class:`~advspatial.models.Normalized`.
    """

    cam_layer = "layer3"
    #: its convolutions run fastest channels-last on a CPU (:mod:`.layout`)
    memory_format = torch.channels_last

    def __init__(self, depth: int = 20, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ModelError(f"CIFAR ResNet depth must be 6n+2 with n >= 1 (20, 32, 44, 56, 110, ...), got {depth}")
        n = (depth - 2) // 6
        self.depth = depth
        self.conv1 = nn.Conv2d(in_channels, WIDTHS[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(WIDTHS[0])
        self.relu = nn.ReLU()
        cin = WIDTHS[0]
        stages = []
        for i, width in enumerate(WIDTHS):
            blocks = []
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(CifarBasicBlock(cin, width, stride))
                cin = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(WIDTHS[-1], num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        """He (Kaiming) normal initialisation of convolutions and the linear layer, as in the paper."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(conv_bn(self.conv1, self.bn1, x))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.linear(torch.flatten(self.pool(x), 1))


def cifar_resnet(depth: int, num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    """A randomly initialised CIFAR ResNet of ``depth`` (20, 32, 44, 56, 110, ...)."""
    return CifarResNet(depth, num_classes, in_channels)
