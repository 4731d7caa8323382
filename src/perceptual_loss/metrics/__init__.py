"""Image metrics, one module each, and the registry that ``perceptual compare`` reads.

- :mod:`perceptual_loss.metrics.lpips`: :class:`~perceptual_loss.metrics.lpips.LPIPS` and
  :func:`~perceptual_loss.metrics.lpips.lpips_distance`;
- :mod:`perceptual_loss.metrics.dists`: :class:`~perceptual_loss.metrics.dists.DISTS` and
  :func:`~perceptual_loss.metrics.dists.dists_distance`.

Both run on the backbone registry's trunks (LPIPS' alexnet, vgg16, squeezenet1_1 with its own
layers and heads; DISTS' vgg16 with L2 pooling) through the shared
:class:`~perceptual_loss.extractor.FeatureExtractor`.

**Adding a metric** is its module plus one :func:`register_metric` call (here, or in your own
code before the command runs): ``perceptual compare``'s ``--metric`` choices and help, the
scorer (:class:`~perceptual_loss.apps.compare.scorer.ImageScorer`), the JSON/CSV columns and
the HTML report's sorting pick it up from the registry. A metric's factory is named by its
import path (``"package.module:function"``), so listing the metrics imports no torch (the
command's ``--help`` stays fast). The factory takes :class:`MetricSettings` and returns the
module and a label of the weights it uses; the module maps two ``(N, C, H, W)`` batches in
``[0, 1]`` (the judged images first, the references second) to ``(N,)`` values.

Example:
    >>> [spec.name for spec in list_metrics()]
    ['lpips', 'dists']
    >>> get_metric("dists").higher_is_better
    False
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from perceptual_loss._registry import Registry

__all__ = ["MetricSettings", "MetricSpec", "get_metric", "list_metrics", "register_metric"]


@dataclass
class MetricSettings:
    """What the scorer of ``perceptual compare`` hands every metric factory.

    Attributes:
        weights: The ``--weights`` value: ``"imagenet"``, ``None`` (random), a path or a
            registry key. A factory uses it where it fits its trunk and says otherwise.
        tile_size: Largest tile side for metrics that tile large images, or ``None``.
        lpips_net: The ``--lpips-net`` trunk (``"alex"``, ``"vgg"``, ``"squeeze"``).
        notes: Where a factory appends a sentence for the report (e.g. which weights it used
            when ``weights`` does not fit its trunk).
    """

    weights: str | os.PathLike[str] | None = "imagenet"
    tile_size: int | None = None
    lpips_net: str = "alex"
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class MetricSpec:
    """One registered metric.

    Attributes:
        name: The ``--metric`` name and the value's column name.
        description: One line for the command's help and the report.
        factory: ``"package.module:function"``; the function takes :class:`MetricSettings`
            and returns ``(module, weights label)``.
        higher_is_better: Whether larger values mean more alike (the report sorts the worst
            pairs first either way).
        random_trunk: Whether ``--weights random`` gives it an untrained network (the command
            then warns that its values do not measure perceptual similarity).
    """

    name: str
    description: str
    factory: str
    higher_is_better: bool = False
    random_trunk: bool = True

    def build(self, settings: MetricSettings) -> tuple[Any, str]:
        """Import the factory and call it: ``(module, weights label)``."""
        module_name, _, function = self.factory.partition(":")
        make: Callable[[MetricSettings], tuple[Any, str]] = getattr(
            importlib.import_module(module_name), function)
        return make(settings)


_REGISTRY: Registry[MetricSpec] = Registry("metric")


def register_metric(spec: MetricSpec) -> MetricSpec:
    """Add ``spec`` (a second metric of the same name is a ValueError).

    Raises:
        ValueError: The name is taken, or is one of the scorer's own values (``mse``,
            ``psnr``, ``ssim``, ``perceptual``) or ``all``.
    """
    if spec.name in ("mse", "psnr", "ssim", "perceptual", "all") or ":" not in spec.factory:
        raise ValueError(f"metric {spec.name!r}: the name must not be one of mse, psnr, ssim, "
                         "perceptual or all, and the factory must read 'module:function'; "
                         f"got factory {spec.factory!r}")
    return _REGISTRY.add(spec.name, spec)


def get_metric(name: str) -> MetricSpec:
    """The metric called ``name`` (unknown names list the registered ones)."""
    return _REGISTRY.get(name)


def list_metrics() -> list[MetricSpec]:
    """The registered metrics in the order they were registered."""
    return [_REGISTRY.get(name) for name in _REGISTRY.in_order()]


register_metric(MetricSpec(
    "lpips", "LPIPS (--lpips-net alex|vgg|squeeze, v0.1 heads), tiled for large images",
    "perceptual_loss.metrics.lpips:scorer_metric"))
register_metric(MetricSpec(
    "dists", "DISTS (VGG16 with L2 pooling, published alpha/beta, official 256-px protocol)",
    "perceptual_loss.metrics.dists:scorer_metric"))
