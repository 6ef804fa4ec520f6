"""Tiny models for fast end-to-end tests; the CLI loads them as ``--model <this file>:tiny_net``."""

from torch import nn
from torchvision.models import MaxVit, SwinTransformer, VisionTransformer
from torchvision.models.swin_transformer import PatchMergingV2, SwinTransformerBlockV2


class TinyNet(nn.Module):
    """conv-BN-ReLU stem, one residual block, global pool, linear: every coupling kind in a few KMACs."""

    def __init__(self, num_classes: int = 10, width: int = 16):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.block = nn.Sequential(
            nn.Conv2d(width, width, 3, 1, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, 1, 1, bias=False),
            nn.BatchNorm2d(width),
        )
        self.head = nn.Sequential(
            nn.Conv2d(width, 2 * width, 1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU()
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        x = self.stem(x)
        x = (x + self.block(x)).relu()
        return self.fc(self.pool(self.head(x)).flatten(1))


def tiny_net(num_classes: int = 10) -> nn.Module:
    return TinyNet(num_classes)


def sequential_net(num_classes: int = 10) -> nn.Sequential:
    """Three conv-BN-ReLU (16, 32, 32 channels, two of stride 2), pool, linear; its weights are named
    ``<index>.weight``, which seed-style ``pruned_params`` regexes select."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, num_classes),
    )


def tiny_vit(num_classes: int = 10, image_size: int = 32) -> nn.Module:
    """A two-block torchvision ViT (4 heads of 8, 32 wide), its head not zero-initialised so that
    its outputs tell pruned models apart."""
    model = VisionTransformer(
        image_size=image_size,
        patch_size=8,
        num_layers=2,
        num_heads=4,
        hidden_dim=32,
        mlp_dim=64,
        num_classes=num_classes,
    )
    nn.init.normal_(model.heads.head.weight)
    return model


def tiny_timm_vit(num_classes: int = 10) -> nn.Module:
    """A two-block timm ViT (4 heads of 8, 32 wide): timm's Attention, LayerNorm and tokens."""
    import timm  # noqa: PLC0415 - optional: only the tests that use timm build this

    model = timm.models.vision_transformer.VisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4, num_classes=num_classes
    )
    nn.init.normal_(model.head.weight)
    return model


def tiny_swin(num_classes: int = 10) -> nn.Module:
    """A two-stage torchvision Swin (v1): window attention with shifts, patch merging, 16 wide."""
    model = SwinTransformer(
        patch_size=[4, 4],
        embed_dim=16,
        depths=[2, 2],
        num_heads=[2, 4],
        window_size=[4, 4],
        num_classes=num_classes,
    )
    nn.init.normal_(model.head.weight)
    return model


def tiny_swin_v2(num_classes: int = 10) -> nn.Module:
    """:func:`tiny_swin` with Swin v2 blocks (cosine attention, a position-bias MLP) and merging."""
    model = SwinTransformer(
        patch_size=[4, 4],
        embed_dim=16,
        depths=[2, 2],
        num_heads=[2, 4],
        window_size=[4, 4],
        num_classes=num_classes,
        block=SwinTransformerBlockV2,
        downsample_layer=PatchMergingV2,
    )
    nn.init.normal_(model.head.weight)
    return model


def tiny_maxvit(num_classes: int = 10) -> nn.Module:
    """A two-block torchvision MaxViT for 32 x 32 inputs (partitions of 2 x 2, 16 and 32 wide, heads of
    8): MBConv, window and grid attention. Its linear layers and position-bias tables get random
    weights of a real scale, so that a wrong cut (of a head or of its bias column) shows in the output."""
    model = MaxVit(
        input_size=(32, 32),
        stem_channels=8,
        partition_size=2,
        block_channels=[16, 32],
        block_layers=[1, 1],
        head_dim=8,
        stochastic_depth_prob=0.0,
        num_classes=num_classes,
    )
    for name, parameter in model.named_parameters():
        if name.endswith("relative_position_bias_table") or (parameter.dim() == 2 and "weight" in name):
            nn.init.normal_(parameter, std=0.3)
    return model
