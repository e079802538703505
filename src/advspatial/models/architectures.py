"""Built-in architectures, each registered by name.

All take ``in_channels`` and ``num_classes`` and accept any input size for which
their layers make sense (``smallcnn``/``lenet5``: 28x28 or 32x32; the GAP nets: any).
Each names the module whose output is its "last convolutional block" through the
attribute ``cam_layer`` so that Grad-CAM can find it without guessing.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from .folding import conv_bn
from .hooks import hooked
from .pooling import MaxPool2x2, commutes
from .registry import register_model


class ConvBatchNormReLU(nn.Sequential):
    """conv3x3 -> BatchNorm -> ReLU as children 0, 1, 2 (their names as in a plain ``nn.Sequential``, so state dicts
    and layer names are unchanged); in eval mode the BatchNorm is folded into the convolution (:mod:`.folding`)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self[2](self.pre_activation(x))

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution and its BatchNorm (folded in eval mode): what the ReLU is applied to."""
        conv, norm, _ = self
        return conv_bn(cast(nn.Conv2d, conv), cast(nn.BatchNorm2d, norm), x)

    def pooled(self, x: torch.Tensor, pool: nn.Module) -> torch.Tensor:
        """``pool(self(x))``, with the pooling before the ReLU where the two commute (:func:`.pooling.commutes`)
        and nothing hooks this block."""
        relu = self[2]
        if hooked(self) or not commutes(relu, pool, x):
            return pool(self(x))
        return relu(pool(self.pre_activation(x)))


class PoolBeforeReLU(nn.Sequential):
    """``nn.Sequential`` (the same children, names and state dict) that runs each ReLU, or
    :class:`ConvBatchNormReLU`, followed by a :class:`~.pooling.MaxPool2x2` with the pooling first, where the two
    commute (:func:`.pooling.commutes`): the same numbers and input gradient, the ReLU on a quarter of the values."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        modules = list(self)
        i = 0
        while i < len(modules):
            module, following = modules[i], modules[i + 1] if i + 1 < len(modules) else None
            if type(following) is MaxPool2x2 and type(module) is ConvBatchNormReLU:  # a subclass may compute more
                x, i = module.pooled(x, following), i + 2
            elif following is not None and commutes(module, following, x):
                x, i = module(following(x)), i + 2
            else:
                x, i = module(x), i + 1
        return x


@register_model("smallcnn", "3 conv blocks (16-32-64, BN, ReLU) + 2 FC; default for 28x28, ~91% on Fashion-MNIST")
class SmallCNN(nn.Module):
    """conv16-pool-conv32-pool-conv64 -> fc128 -> fc. Grad-CAM layer: ``block3`` (7x7 on 28x28)."""

    cam_layer = "block3"
    #: its convolutions run fastest channels-last on a CPU (:mod:`.layout`)
    memory_format = torch.channels_last

    def __init__(self, in_channels: int = 1, num_classes: int = 10, input_size: int = 28) -> None:
        super().__init__()
        self.block1 = PoolBeforeReLU(ConvBatchNormReLU(in_channels, 16), MaxPool2x2())
        self.block2 = PoolBeforeReLU(ConvBatchNormReLU(16, 32), MaxPool2x2())
        self.block3 = ConvBatchNormReLU(32, 64)
        side = input_size // 4
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * side * side, 128), nn.ReLU(), nn.Dropout(0.25), nn.Linear(128, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.block3(self.block2(self.block1(x))))


@register_model("lenet5", "classic MNIST net: conv32(5x5)-pool-conv64(5x5)-pool-fc200-fc10")
class LeNet5(nn.Module):
    """The two-conv MNIST network used throughout the adversarial literature."""

    cam_layer = "features.4"

    def __init__(self, in_channels: int = 1, num_classes: int = 10, input_size: int = 28) -> None:
        super().__init__()
        self.features = PoolBeforeReLU(
            nn.Conv2d(in_channels, 32, 5, padding=2), nn.ReLU(), MaxPool2x2(),
            nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), MaxPool2x2(),
        )
        side = input_size // 4
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(64 * side * side, 200), nn.ReLU(),
                                        nn.Linear(200, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@register_model("gapnet", "CAM-friendly: 4 conv blocks, global average pooling, one linear layer (exact CAM)")
class GAPNet(nn.Module):
    """Conv features -> global average pooling -> linear: CAM equals the linear map of the features."""

    cam_layer = "features"

    def __init__(self, in_channels: int = 1, num_classes: int = 10, input_size: int = 28) -> None:
        super().__init__()
        self.features = PoolBeforeReLU(
            ConvBatchNormReLU(in_channels, 32), ConvBatchNormReLU(32, 32), MaxPool2x2(),
            ConvBatchNormReLU(32, 64), ConvBatchNormReLU(64, 128),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


class BasicBlock(nn.Module):
    """ResNet basic block; its final ReLU is a separate module per block."""

    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.relu2 = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(conv_bn(self.conv1, self.bn1, x))
        out = conv_bn(self.conv2, self.bn2, out)
        return self.relu2(out + self.shortcut(x))


@register_model("resnet18-cifar", "ResNet-18 with a 3x3 stem for 32x32 inputs (CIFAR-10)")
class ResNet18CIFAR(nn.Module):
    """ResNet-18 (2-2-2-2 basic blocks, 64-128-256-512) adapted to 32x32 inputs."""

    cam_layer = "layer4"

    def __init__(self, in_channels: int = 3, num_classes: int = 10, input_size: int = 32) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        widths, layers, cin = (64, 128, 256, 512), [], 64
        for i, width in enumerate(widths):
            stride = 1 if i == 0 else 2
            layers.append(nn.Sequential(BasicBlock(cin, width, stride), BasicBlock(width, width, 1)))
            cin = width
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        return self.fc(torch.flatten(self.pool(x), 1))
