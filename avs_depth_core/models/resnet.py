"""ResNet encoders in plain torch, with torchvision's parameter names so ImageNet weights load from a local file.

Monodepth2's ResnetEncoder (networks/resnet_encoder.py) returns five feature maps; the first layer may take any number
of channels (2 for the echo spectrogram, 6 for PoseNet's frame pair).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from avs_depth_core.checkpoint import load_torch_weights

# depth -> (block type, blocks per stage); torchvision.models.resnet.
LAYOUTS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)), 50: ("bottleneck", (3, 4, 6, 3))}


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class ResNetEncoder(nn.Module):
    """ResNet without avgpool/fc. forward(x) -> [conv1 (1/2), layer1 (1/4), layer2 (1/8), layer3 (1/16), layer4 (1/32)]."""

    def __init__(self, num_layers: int = 18, in_channels: int = 3, width: int = 64) -> None:
        super().__init__()
        if num_layers not in LAYOUTS:
            raise ValueError(f"ResNet depth {num_layers} is not supported; choose from {sorted(LAYOUTS)}")
        kind, blocks = LAYOUTS[num_layers]
        block = BasicBlock if kind == "basic" else Bottleneck
        self.in_channels = in_channels
        self.conv1 = nn.Conv2d(in_channels, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self._inplanes = width
        self.layer1 = self._make_layer(block, width, blocks[0], 1)
        self.layer2 = self._make_layer(block, width * 2, blocks[1], 2)
        self.layer3 = self._make_layer(block, width * 4, blocks[2], 2)
        self.layer4 = self._make_layer(block, width * 8, blocks[3], 2)
        self.num_ch_enc = [width] + [width * m * block.expansion for m in (1, 2, 4, 8)]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, block: type[nn.Module], planes: int, count: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self._inplanes != planes * block.expansion:
            downsample = nn.Sequential(nn.Conv2d(self._inplanes, planes * block.expansion, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self._inplanes, planes, stride, downsample)]
        self._inplanes = planes * block.expansion
        layers += [block(self._inplanes, planes) for _ in range(1, count)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f0 = self.relu(self.bn1(self.conv1(x)))
        f1 = self.layer1(self.maxpool(f0))
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        return [f0, f1, f2, f3, self.layer4(f3)]

    def load_torchvision_weights(self, path: str | Path) -> None:
        """Load a torchvision ResNet state dict (e.g. resnet18-f37072fd.pth) from a local file.

        fc.* is dropped. When this encoder takes N != 3 input channels, conv1 is the RGB kernel tiled to N channels and
        scaled by 3/N (Monodepth2 tiles it per frame and divides by the frame count).
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: ResNet weights not found")
        state = load_torch_weights(path, "ResNet weights")
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        w = state.get("conv1.weight")
        if w is None:
            raise ValueError(f"{path}: no 'conv1.weight'; not a torchvision ResNet state dict")
        if w.shape[1] != self.in_channels:
            reps = -(-self.in_channels // w.shape[1])
            state["conv1.weight"] = w.repeat(1, reps, 1, 1)[:, : self.in_channels] * (w.shape[1] / self.in_channels)
        missing, unexpected = self.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"{path}: does not fit ResNet encoder (missing {missing[:5]}, unexpected {unexpected[:5]})")
