"""The PyTorch article's ``VGGPerceptualLoss``, re-implemented from its text for parity tests.

Only two changes, neither of which changes a value: the network comes from this project's
VGG16 (same module layout and state-dict keys as ``torchvision.models.vgg16()``), and the
device is left to the caller instead of being chosen in ``__init__``.
"""

from __future__ import annotations

import torch

from perceptual_loss.backbones.vgg import VGG


class ArticleVGGPerceptualLoss(torch.nn.Module):
    def __init__(self, path: str, resize: bool = True) -> None:
        super().__init__()
        self.vgg = VGG("vgg16")
        self.vgg.load_state_dict(torch.load(path, weights_only=True))
        self.vgg.eval()
        blocks = [
            self.vgg.features[:4],
            self.vgg.features[4:9],
            self.vgg.features[9:16],
            self.vgg.features[16:23],
        ]
        for bl in blocks:
            for p in bl.parameters():
                p.requires_grad = False
        self.blocks = torch.nn.ModuleList(blocks)
        self.transform = torch.nn.functional.interpolate
        self.resize = resize
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, input, target, feature_layers=(0, 1, 2, 3), style_layers=()):  # noqa: A002
        if input.shape[1] != 3:
            input = input.repeat(1, 3, 1, 1)  # noqa: A001
            target = target.repeat(1, 3, 1, 1)
        input = (input - self.mean) / self.std  # noqa: A001
        target = (target - self.mean) / self.std
        if self.resize:
            input = self.transform(input, mode="bilinear", size=(224, 224),  # noqa: A001
                                   align_corners=False)
            target = self.transform(target, mode="bilinear", size=(224, 224),
                                    align_corners=False)
        loss = 0.0
        x = input
        y = target
        for i, block in enumerate(self.blocks):
            x = block(x)
            y = block(y)
            if i in feature_layers:
                loss += torch.nn.functional.l1_loss(x, y)
            if i in style_layers:
                act_x = x.reshape(x.shape[0], x.shape[1], -1)
                act_y = y.reshape(y.shape[0], y.shape[1], -1)
                gram_x = act_x @ act_x.permute(0, 2, 1)
                gram_y = act_y @ act_y.permute(0, 2, 1)
                loss += torch.nn.functional.l1_loss(gram_x, gram_y)
        return loss
