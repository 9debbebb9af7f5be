"""Independent re-implementations of peer architectures, written the way the peers write them.

Used to prove that sharenet loads their checkpoints and gives their outputs. They follow
torchvision's resnet.py and the popular CIFAR ResNet (option A LambdaLayer) layout, not sharenet;
the learned-sharing peers are written from the papers in their authors' naming: Kang et al.'s
Net_RL2 ResNets with shared filter bases and Savarese & Maire's SWRN with template banks. Both
register a shared module under every block that uses it, so their state dicts hold alias keys.
"""

import torch
import torch.nn.functional as F
from torch import nn


class TVBasic(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class TVBottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class TVResNet(nn.Module):
    def __init__(self, block, layers, num_classes=1000):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], 2)
        self.layer3 = self._make_layer(block, 256, layers[2], 2)
        self.layer4 = self._make_layer(block, 512, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)

    def _make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def tv_resnet(depth, num_classes=1000):
    block, layers = {18: (TVBasic, [2, 2, 2, 2]), 34: (TVBasic, [3, 4, 6, 3]), 50: (TVBottleneck, [3, 4, 6, 3])}[depth]
    return TVResNet(block, layers, num_classes)


class LambdaLayer(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


class CifarBlock(nn.Module):
    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = LambdaLayer(
                lambda x: F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4), "constant", 0)
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, num_blocks, num_classes=10):
        super().__init__()
        self.in_planes = 16
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._make_layer(16, num_blocks, 1)
        self.layer2 = self._make_layer(32, num_blocks, 2)
        self.layer3 = self._make_layer(64, num_blocks, 2)
        self.linear = nn.Linear(64, num_classes)

    def _make_layer(self, planes, num_blocks, stride):
        layers = []
        for s in [stride] + [1] * (num_blocks - 1):
            layers.append(CifarBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.avg_pool2d(out, out.size()[3])
        return self.linear(out.view(out.size(0), -1))


def randomize(model, seed=0):
    """Random weights and BN statistics, so a wrong mapping cannot go unnoticed."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in list(model.parameters()) + [b for b in model.buffers() if b.is_floating_point()]:
            t.copy_(
                torch.rand(t.shape, generator=g) * 0.2 + 0.9
                if t.ndim == 1
                else torch.randn(t.shape, generator=g) * 0.05
            )
    return model.eval()


class ProjectedBlock(CifarBlock):
    """The plain basic block with option B (1x1 conv + BN), named `shortcut` as in Net_RL2's ImageNet nets."""

    def __init__(self, in_planes, planes, stride=1):
        super().__init__(in_planes, planes, stride)
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))


class BasisBlock(nn.Module):
    """Kang et al.'s stride-1 block: each 3x3 conv is [its own rank-u basis; the stage's shared
    rank-s basis] as one response map, a BatchNorm over the u+s responses, then 1x1 coefficients.
    One shared basis serves both convs, or (double) one per conv position. The block registers
    the shared basis again, as the peer does: its state dict repeats the tensor under the block."""

    def __init__(self, planes, unique_rank, shared):
        super().__init__()
        if len(shared) == 1:
            self.shared_basis = shared[0]
        else:
            self.shared_basis_1, self.shared_basis_2 = shared
        ranks = [unique_rank + b.out_channels for b in (shared[0], shared[-1])]
        self.basis_conv1 = nn.Conv2d(planes, unique_rank, 3, 1, 1, bias=False)
        self.basis_bn1 = nn.BatchNorm2d(ranks[0])
        self.coeff_conv1 = nn.Conv2d(ranks[0], planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.basis_conv2 = nn.Conv2d(planes, unique_rank, 3, 1, 1, bias=False)
        self.basis_bn2 = nn.BatchNorm2d(ranks[1])
        self.coeff_conv2 = nn.Conv2d(ranks[1], planes, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()

    def decomposed(self, x, k):
        shared = self.shared_basis if hasattr(self, "shared_basis") else getattr(self, f"shared_basis_{k}")
        responses = torch.cat([getattr(self, f"basis_conv{k}")(x), shared(x)], 1)  # own first, then shared
        return getattr(self, f"coeff_conv{k}")(getattr(self, f"basis_bn{k}")(responses))

    def forward(self, x):
        out = F.relu(self.bn1(self.decomposed(x, 1)))
        out = self.bn2(self.decomposed(out, 2))
        return F.relu(out + self.shortcut(x))


class NetRL2ResNet(nn.Module):
    """Kang et al.'s ResNets with deeply shared filter bases. Block 1 of a stage is plain (it
    changes the shape); blocks 2..n use the stage's shared basis `shared_basis_{g}` (or
    `shared_basis_{g}_{1,2}`); both ranks scale with the stage width. CIFAR: 3x3 stem, option A;
    ImageNet: 7x7/2 stem with max-pool, option B."""

    def __init__(self, num_blocks, shared_rank, unique_rank, double=False, imagenet=False, num_classes=10):
        super().__init__()
        widths = (64, 128, 256, 512) if imagenet else (16, 32, 64)
        self.conv1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False) if imagenet else nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.pool = nn.MaxPool2d(3, 2, 1) if imagenet else nn.Identity()
        self.stages, in_planes = len(widths), widths[0]
        for g, (planes, n) in enumerate(zip(widths, num_blocks, strict=True), 1):
            k = planes // widths[0]
            names = [f"shared_basis_{g}_1", f"shared_basis_{g}_2"] if double else [f"shared_basis_{g}"]
            shared = [nn.Conv2d(planes, shared_rank * k, 3, 1, 1, bias=False) for _ in names]
            for name, basis in zip(names, shared, strict=True):
                setattr(self, name, basis)
            first = (ProjectedBlock if imagenet else CifarBlock)(in_planes, planes, 1 if g == 1 else 2)
            setattr(
                self,
                f"layer{g}",
                nn.Sequential(first, *(BasisBlock(planes, unique_rank * k, shared) for _ in range(n - 1))),
            )
            in_planes = planes
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x):
        x = self.pool(F.relu(self.bn1(self.conv1(x))))
        for g in range(1, self.stages + 1):
            x = getattr(self, f"layer{g}")(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class TemplateBank(nn.Module):
    """Savarese & Maire: a stage's `templates`, (count, planes, planes, 3, 3)."""

    def __init__(self, count, planes):
        super().__init__()
        self.templates = nn.Parameter(torch.randn(count, planes, planes, 3, 3) * (2 / (9 * planes)) ** 0.5)


class SConv2d(nn.Module):
    """A stride-1 3x3 conv whose kernel is sum_j coefficients[j] * templates[j]; it registers
    the bank too, as the peer does (alias keys `...conv{k}.bank.templates`)."""

    def __init__(self, bank):
        super().__init__()
        self.bank = bank
        self.coefficients = nn.Parameter(torch.randn(len(bank.templates), 1, 1, 1, 1))

    def forward(self, x):
        return F.conv2d(x, (self.coefficients * self.bank.templates).sum(0), padding=1)


class SWRNBlock(nn.Module):
    """Pre-activation wide block; with a bank (blocks 2..n) both convs mix its templates. A block
    that widens feeds its 1x1 `convShortcut` from the activated input."""

    def __init__(self, in_planes, planes, stride, bank=None):
        super().__init__()
        if bank is not None:
            self.bank = bank
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = SConv2d(bank) if bank is not None else nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = SConv2d(bank) if bank is not None else nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        if in_planes != planes:
            self.convShortcut = nn.Conv2d(in_planes, planes, 1, stride, bias=False)

    def forward(self, x):
        act = F.relu(self.bn1(x))
        skip = self.convShortcut(act) if hasattr(self, "convShortcut") else x
        return self.conv2(F.relu(self.bn2(self.conv1(act)))) + skip


class SWRN(nn.Module):
    """Savarese & Maire's SWRN-depth-widen-templates: WRN with one template bank `bank_{g}` per stage."""

    def __init__(self, depth, widen, templates, num_classes=10):
        super().__init__()
        n, in_planes = (depth - 4) // 6, 16
        self.conv_3x3 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        for g, (planes, stride) in enumerate(zip((16 * widen, 32 * widen, 64 * widen), (1, 2, 2), strict=True), 1):
            bank = TemplateBank(templates, planes)
            setattr(self, f"bank_{g}", bank)
            blocks = [SWRNBlock(in_planes, planes, stride)] + [SWRNBlock(planes, planes, 1, bank) for _ in range(n - 1)]
            setattr(self, f"stage_{g}", nn.Sequential(*blocks))
            in_planes = planes
        self.lastact = nn.Sequential(nn.BatchNorm2d(in_planes), nn.ReLU())
        self.classifier = nn.Linear(in_planes, num_classes)

    def forward(self, x):
        x = self.stage_3(self.stage_2(self.stage_1(self.conv_3x3(x))))
        return self.classifier(self.lastact(x).mean((2, 3)))
