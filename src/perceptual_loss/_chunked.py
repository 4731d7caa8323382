"""A batch through the trunk in chunks, each chunk's backward taken right away.

A perceptual loss is a sum over samples: sample ``i``'s terms depend on sample ``i`` alone (the
trunk is frozen, batch norm is in eval mode). So the input gradient of a training step can be
taken chunk by chunk during the forward: run a chunk, take ``d(terms of the chunk)/d(chunk)``
at once, free the chunk's graph, go on. What stays for the real backward is one gradient the
size of the input; the real backward multiplies it by the upstream gradient of each sample's
value (exact for any function of the loss: first-order chain rule). Peak memory is one
chunk's graph instead of the whole batch's, the work is the same.

Used by :class:`~perceptual_loss.PerceptualLoss` when the device rule chunks a training step
(see :mod:`perceptual_loss.execution`); never with ``memory="plain"`` or when the target needs
a gradient too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from perceptual_loss._lean import DOUBLE_BACKWARD_MESSAGE

__all__ = ["run_chunks"]

ChunkTerms = Callable[[torch.Tensor, slice], dict[str, torch.Tensor]]


class _PrecomputedGradient(torch.autograd.Function):
    """Value ``(N,)`` whose gradient w.r.t. the prediction was taken in the forward."""

    @staticmethod
    def forward(ctx: Any, prediction: torch.Tensor, value: torch.Tensor,  # type: ignore[override]
                gradient: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(gradient)
        return value.clone()

    @staticmethod
    def backward(ctx: Any, upstream: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        if torch.is_grad_enabled():
            raise RuntimeError(DOUBLE_BACKWARD_MESSAGE)
        (gradient,) = ctx.saved_tensors
        scale = upstream.reshape((-1,) + (1,) * (gradient.dim() - 1))
        return (scale * gradient).to(gradient.dtype), None, None


def run_chunks(prediction: torch.Tensor, chunk: int, terms_of: ChunkTerms, *,
               eager_backward: bool) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """Terms of the whole batch from chunks of ``chunk`` samples.

    Args:
        prediction: ``(N, ...)``.
        chunk: Samples per chunk.
        terms_of: ``(prediction rows, rows) -> {term: (n_rows,)}``.
        eager_backward: Take each chunk's input gradient at once (see the module docstring);
            the terms are then detached and the second return value carries the gradient.

    Returns:
        ``(terms, total)``: ``{term: (N,)}``, and with ``eager_backward`` the ``(N,)`` sum of
        the terms with the gradient attached (else ``None``).
    """
    n = prediction.shape[0]
    chunks = [slice(first, min(first + chunk, n)) for first in range(0, n, chunk)]
    if not eager_backward:
        parts = [terms_of(prediction[rows], rows) for rows in chunks]
        if len(parts) == 1:
            return parts[0], None
        return {name: torch.cat([part[name] for part in parts]) for name in parts[0]}, None
    gradient = torch.empty_like(prediction)  # every row is written below
    parts = []
    for rows in chunks:
        rows_input = prediction[rows].detach().requires_grad_()
        with torch.enable_grad():
            part = terms_of(rows_input, rows)
            # backward(inputs=...) rather than autograd.grad: hooks that watch the graph
            # (FlopCounterMode's module tracker) refuse a grad() call made inside a forward.
            torch.stack(list(part.values())).sum().backward(inputs=[rows_input])
        gradient[rows] = rows_input.grad
        parts.append({name: value.detach() for name, value in part.items()})
        del part, rows_input
    terms = {name: torch.cat([part[name] for part in parts]) for name in parts[0]}
    total = torch.stack(list(terms.values())).sum(0)
    return terms, _PrecomputedGradient.apply(prediction, total, gradient)
