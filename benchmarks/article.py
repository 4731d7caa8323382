"""The PyTorch article's ``VGGPerceptualLoss``, re-implemented without torchvision.

The article (a widely copied Japanese tutorial, see ``docs/performance.md``) builds
``torchvision.models.vgg16()``, loads ``vgg16.pth``, keeps the whole classifier in memory, cuts
``features`` into the slices ``[:4]``, ``[4:9]``, ``[9:16]``, ``[16:23]``, freezes their
parameters and runs prediction and target through each slice in turn, adding an L1 distance of
the features (and of unnormalised Gram matrices for style layers).

Here the model comes from this project's backbone spec, whose modules and state-dict keys are
identical to torchvision's, so the computation is the same. Two deliberate differences, both
outside the timed work: no file is loaded (random weights, which do not change the time), and
no ``.to("cuda")`` in ``__init__`` (the benchmark moves the module).
"""

from __future__ import annotations

import torch

from perceptual_loss.backbones import get_backbone


class VGGPerceptualLoss(torch.nn.Module):
    def __init__(self, resize: bool = True) -> None:
        super().__init__()
        self.vgg = get_backbone("vgg16").build()
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
            input = input.repeat(1, 3, 1, 1)
            target = target.repeat(1, 3, 1, 1)
        input = (input - self.mean) / self.std
        target = (target - self.mean) / self.std
        if self.resize:
            input = self.transform(input, mode="bilinear", size=(224, 224), align_corners=False)
            target = self.transform(target, mode="bilinear", size=(224, 224), align_corners=False)
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
