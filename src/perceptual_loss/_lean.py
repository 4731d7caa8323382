"""Memory-lean autograd for a frozen convolutional trunk (VGG, AlexNet, SqueezeNet layouts).

A perceptual loss runs its prediction through a frozen network and back-propagates to the
image only. Plain autograd keeps far more than that needs:

* ``Conv2d`` saves its float input even when its weight is frozen, but the input gradient of a
  convolution needs only the weight (``convolution_backward`` reads just the input's shape
  when the weight gradient is not asked for).
* ``ReLU`` saves its float output, but its backward needs only where the output is positive:
  one byte (``torch.bool``) or one bit (packed ``torch.uint8``) per element.
* ``MaxPool2d`` saves its float input and 64-bit indices, but its backward needs only the
  indices, and they fit in 32 bits for any plane under 2**31 elements.
* ``BatchNorm2d`` in eval mode is a per-channel affine map whose input gradient needs only its
  scale.

This module fuses ``Conv2d -> [BatchNorm2d] -> [ReLU]`` into one ``torch.autograd.Function``
that saves a mask and nothing else, and gives ``MaxPool2d`` int32 winner indices. Forward
values are computed by the same ATen kernels as the plain modules, so they are bit-identical;
input gradients use the same backward kernels (``convolution_backward`` with
``output_mask=[True, False, False]``, ``max_pool2d_with_indices_backward``), so they are equal
up to the order of floating-point rounding in the ReLU/BatchNorm steps (tests hold them to
``rtol=1e-6`` in float32 and ``1e-12`` in float64; in practice they are usually exact).

With ``winograd=True`` (the extractor's default on CPU, see :mod:`perceptual_loss.execution`)
the wide 3x3 convolutions run by Winograd F(4x4, 3x3) instead, forward and backward
(:mod:`perceptual_loss._winograd`): fewer multiplications, values within a few 1e-6 of the
plain modules' relative to a layer's norm. Without a gradient the fused steps compute their
values alone (nothing saved), so a target's pass runs the same kernels as the prediction's.

Limits: parameters must be frozen (``requires_grad=False``; a trainable module runs plain, so
no weight gradient is ever dropped), batch norm must be in eval mode, and the lean backward is
not itself differentiable (double backward, e.g. a gradient penalty through the loss, needs
the plain path). Everything else falls back to the plain module, so any ``nn.Sequential``
runs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from perceptual_loss import _winograd
from perceptual_loss._bitmask import pack_mask, unpack_mask

__all__ = [
    "LeanPlan",
    "build_plan",
    "lean_forward",
]

DOUBLE_BACKWARD_MESSAGE = (
    "the memory-lean backbone path computes first-order gradients only, but a graph of the "
    "gradient was asked for (create_graph=True: double backward, e.g. a gradient penalty). "
    "Build the loss or metric with memory=\"plain\" for that."
)


def first_order_only(backward: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a ``backward`` as not differentiable, with an error that names the fix.

    Autograd runs a backward with grad mode on only when ``create_graph=True``; the lean
    backward cannot build that graph, so it says so at once instead of failing later with
    torch's generic message.
    """
    @functools.wraps(backward)
    def wrapper(ctx: Any, *grads: Tensor | None) -> Any:
        if torch.is_grad_enabled():
            raise RuntimeError(DOUBLE_BACKWARD_MESSAGE)
        return backward(ctx, *grads)

    return wrapper


# --------------------------------------------------------------------------------------------
# Conv2d -> [BatchNorm2d] -> [ReLU]
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ConvGeometry:
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int

    def as_args(self) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int], int]:
        """``(stride, padding, dilation, groups)``, as ``F.conv2d`` takes them."""
        return self.stride, self.padding, self.dilation, self.groups


def _is_channels_last(x: Tensor) -> bool:
    return (x.dim() == 4 and not x.is_contiguous()
            and x.is_contiguous(memory_format=torch.channels_last))


def _shape_only(like: Tensor, shape: torch.Size, channels_last: bool) -> Tensor:
    """An uninitialised stand-in for a forward input whose values a backward never reads.

    The ATen input-gradient kernels read only its shape, dtype and memory format. It is
    allocated rather than expanded from a scalar because some kernels first make an expanded
    tensor contiguous (a full copy); an untouched allocation costs no time and, on CPU, no
    resident memory.
    """
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=memory_format)


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype autocast would run a convolution in on this device, or ``None``."""
    if device_type in ("cpu", "cuda") and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None


_BnArgs = tuple[Tensor, Tensor | None, Tensor | None, Tensor, float]


def _fused_values(x: Tensor, weight: Tensor | None, bias: Tensor | None,
                  geometry: _ConvGeometry | None, bn: _BnArgs | None, relu: bool,
                  keep_pre: bool, winograd: bool) -> tuple[Tensor, Tensor, bool]:
    """``relu(bn(conv(x)))`` with each stage optional, recording nothing.

    ``winograd``: the convolution may run by Winograd where :func:`_winograd.usable` says it
    pays. Returns ``(pre, out, ran_winograd)``: the output before the ReLU (``out`` itself
    without one), the output, and whether Winograd ran. The ReLU runs in place on a tensor
    made here unless the pre-activation is wanted.
    """
    out = x
    if weight is not None and geometry is not None:
        winograd = winograd and _winograd.usable(x, weight, *geometry.as_args())
        if winograd:
            out = _winograd.conv3x3(x, weight, bias)
        else:
            # Same call as nn.Conv2d; under autocast the kernel sees the same casted operands.
            out = F.conv2d(out, weight, bias, *geometry.as_args())
    else:
        winograd = False
    if bn is not None:
        running_mean, bn_weight, bn_bias, running_var, eps = bn
        out = F.batch_norm(out, running_mean, running_var, bn_weight, bn_bias,
                           training=False, momentum=0.0, eps=eps)
    pre = out
    if relu:
        # In place only on a tensor made here and not returned (never on the input).
        out = torch.relu_(pre) if pre is not x and not keep_pre else torch.relu(pre)
    return pre, out, winograd


class _ConvBnReLU(torch.autograd.Function):
    """``relu(bn(conv(x)))`` with each stage optional; saves a mask and the frozen scales.

    Returns the last stage's output, and also the output before the ReLU when ``keep_pre``
    (a pre-activation tap such as ``conv3_3`` needs it; both then receive gradients).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: Tensor,
        weight: Tensor | None,
        bias: Tensor | None,
        geometry: _ConvGeometry | None,
        bn: _BnArgs | None,
        relu: bool,
        keep_pre: bool,
        bits: bool,
        winograd: bool,
    ) -> Tensor | tuple[Tensor, Tensor]:
        ctx.cast_dtype = _autocast_dtype(x.device.type) if weight is not None else None
        ctx.input_dtype = x.dtype
        ctx.input_shape = x.shape
        ctx.channels_last = _is_channels_last(x)
        ctx.geometry = geometry
        ctx.relu = relu
        ctx.keep_pre = keep_pre
        ctx.bits = bits
        pre, out, ctx.winograd = _fused_values(x, weight, bias, geometry, bn, relu, keep_pre,
                                               winograd)
        bn_saved: tuple[Tensor | None, ...] = (None, None, None)
        ctx.eps = 0.0
        if bn is not None:
            running_mean, bn_weight, _, running_var, ctx.eps = bn
            bn_saved = (bn_weight, running_mean, running_var)
            ctx.bn_input_shape = pre.shape
        saved_mask: tuple[Tensor, ...] = ()
        if relu:
            # out >= 0 or NaN: nonzero is where plain autograd's ReLU passes the gradient
            # (NaN included), and a cast to bool is twice as fast as a comparison on CPU.
            positive = out.bool()
            if bits:
                packed, shape, permuted = pack_mask(positive)
                ctx.mask_layout = (shape, permuted)
                saved_mask = (packed,)
            else:
                saved_mask = (positive,)
        ctx.has_bn = bn is not None
        ctx.save_for_backward(weight, *bn_saved, *saved_mask)
        if keep_pre:
            return pre, out
        return out

    @staticmethod
    @first_order_only
    def backward(ctx: Any, *grads: Tensor | None) -> tuple[Tensor | None, ...]:
        weight, bn_weight, running_mean, running_var, *mask_saved = ctx.saved_tensors
        if ctx.keep_pre:
            grad_pre, grad_out = grads
        else:
            grad_pre, (grad_out,) = None, grads
        grad = grad_out
        if ctx.relu and grad is not None:
            if ctx.bits:
                positive = unpack_mask(mask_saved[0], *ctx.mask_layout)
            else:
                positive = mask_saved[0]
            # The mask becomes a float tensor first, then one same-dtype multiply: a multiply
            # of mixed dtypes (float by bool or uint8) and torch.where fall to ATen's
            # element-by-element casting loop, 20-30x slower on CPU. The product takes the
            # mask's memory format, the forward output's.
            grad = positive.view(torch.uint8).to(grad.dtype).mul_(grad)
        if grad_pre is not None:
            if grad is None:
                grad = grad_pre
            elif ctx.relu:
                grad.add_(grad_pre)  # the masked product above is ours: no second full map
            else:
                grad = grad + grad_pre
        if grad is None:
            return (None,) * 9
        if ctx.has_bn:
            # Eval-mode batch norm: the input gradient is grad * weight / sqrt(var + eps);
            # the ATen kernel reads only the input's shape for it, as for the convolution.
            shape_only = _shape_only(grad, ctx.bn_input_shape, ctx.channels_last)
            grad = torch.ops.aten.native_batch_norm_backward(
                grad, shape_only, bn_weight, running_mean, running_var, None, None, False,
                ctx.eps, [True, False, False],
            )[0]
        if weight is not None and ctx.winograd:
            grad = _winograd.conv3x3_input_grad(grad.to(weight.dtype), weight)
        elif weight is not None:
            geometry: _ConvGeometry = ctx.geometry
            if ctx.cast_dtype is not None:
                weight = weight.to(ctx.cast_dtype)
                grad = grad.to(ctx.cast_dtype)
            else:
                grad = grad.to(weight.dtype)
            # Only the shape (and memory format) of the input matters for its gradient.
            shape_only = _shape_only(grad, ctx.input_shape, ctx.channels_last)
            grad = torch.ops.aten.convolution_backward(
                grad, shape_only, weight, None, list(geometry.stride), list(geometry.padding),
                list(geometry.dilation), False, [0, 0], geometry.groups, [True, False, False],
            )[0]
        if grad.dtype != ctx.input_dtype:
            grad = grad.to(ctx.input_dtype)
        return (grad,) + (None,) * 8


# --------------------------------------------------------------------------------------------
# MaxPool2d with a 32-bit winner index
# --------------------------------------------------------------------------------------------

#: The largest flat index an int32 holds; planes with more elements keep int64 indices.
_INT32_LIMIT = 2**31 - 1


def _pool_index_dtype(input_plane: int) -> torch.dtype:
    """Dtype that holds the flat winner indices of an ``input_plane``-element (H*W) plane."""
    return torch.int32 if input_plane <= _INT32_LIMIT else torch.int64


class _MaxPoolIndex(torch.autograd.Function):
    """``max_pool2d`` that saves only its winners' flat indices, as int32.

    Plain autograd saves the float input and int64 indices. A uint8 window position would be
    smaller still, but rebuilding flat indices from it costs int64 divisions that took longer
    than the pooling itself on CPU; an int32 copy costs one conversion each way.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: Tensor, pool: nn.MaxPool2d
    ) -> Tensor:
        # kernel, stride, padding, dilation, as the backward kernel takes them
        ctx.geometry = [list(_pair(value)) for value in (  # type: ignore[arg-type]
            pool.kernel_size, pool.stride, pool.padding, pool.dilation)]
        ctx.ceil_mode = pool.ceil_mode
        out, indices = F.max_pool2d(x, *ctx.geometry, ceil_mode=pool.ceil_mode,
                                    return_indices=True)
        ctx.input_shape = x.shape
        ctx.channels_last = _is_channels_last(x)
        ctx.save_for_backward(indices.to(_pool_index_dtype(x.shape[-2] * x.shape[-1])))
        return out

    @staticmethod
    @first_order_only
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None]:
        (saved,) = ctx.saved_tensors
        shape_only = _shape_only(grad, ctx.input_shape, ctx.channels_last)
        grad_input = torch.ops.aten.max_pool2d_with_indices_backward(
            grad, shape_only, *ctx.geometry, ctx.ceil_mode,
            saved.to(torch.int64),  # the kernel takes int64 indices
        )
        if ctx.channels_last:
            grad_input = grad_input.contiguous(memory_format=torch.channels_last)
        return grad_input, None


# --------------------------------------------------------------------------------------------
# Planning: which modules fuse, which run plain
# --------------------------------------------------------------------------------------------


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    if len(value) == 1:
        return (int(value[0]), int(value[0]))
    return (int(value[0]), int(value[1]))


def _frozen(module: nn.Module) -> bool:
    return not any(p.requires_grad for p in module.parameters(recurse=False))


def _lean_conv(module: nn.Module) -> bool:
    return (isinstance(module, nn.Conv2d) and type(module).forward is nn.Conv2d.forward
            and module.padding_mode == "zeros" and not isinstance(module.padding, str)
            and _frozen(module))


def _lean_bn(module: nn.Module) -> bool:
    return (isinstance(module, nn.BatchNorm2d) and type(module).forward is nn.BatchNorm2d.forward
            and not module.training and module.running_mean is not None
            and module.running_var is not None and _frozen(module))


def _lean_relu(module: nn.Module) -> bool:
    return isinstance(module, nn.ReLU) and type(module).forward is nn.ReLU.forward


def _lean_pool(module: nn.Module) -> bool:
    return (isinstance(module, nn.MaxPool2d) and type(module).forward is nn.MaxPool2d.forward
            and not module.return_indices)


@dataclass(frozen=True)
class _Step:
    """Modules ``first..last`` (inclusive) run as one step.

    ``kind`` is ``"fused"`` (conv/bn/relu), ``"pool"`` or ``"plain"``; ``taps`` are the
    module indices in this step whose outputs the caller wants.
    """

    kind: str
    first: int
    last: int
    conv: int | None = None
    bn: int | None = None
    relu: int | None = None
    keep_pre: bool = False


@dataclass(frozen=True)
class LeanPlan:
    """How :func:`lean_forward` runs a sequence of modules; build it with :func:`build_plan`.

    Attributes:
        steps: The fused and plain steps, in order.
        keep: Indices of the modules whose outputs are returned.
        bits: Whether ReLU masks are packed eight to a byte (else one ``bool`` per element).
    """

    steps: tuple[_Step, ...]
    keep: frozenset[int]
    bits: bool

    def describe(self) -> list[str]:
        """One line per step, e.g. ``"fused 0..1 (conv, relu)"``, for logs and tests."""
        lines = []
        for step in self.steps:
            parts = [name for name, index in (("conv", step.conv), ("bn", step.bn),
                                              ("relu", step.relu)) if index is not None]
            detail = f" ({', '.join(parts)}{', keep_pre' if step.keep_pre else ''})"
            lines.append(f"{step.kind} {step.first}..{step.last}"
                         + (detail if step.kind == "fused" else ""))
        return lines


def build_plan(modules: Sequence[nn.Module], keep: Collection[int], *,
               bits: bool = False) -> LeanPlan:
    """Group a sequence of modules into lean steps.

    ``Conv2d``, an eval-mode ``BatchNorm2d`` and ``ReLU`` that follow each other fuse into one
    step as long as no output in the middle of the group is wanted, except the output right
    before the ReLU (a pre-activation tap), which the fused step can return too. Max-pools save
    int32 winner indices. Anything else runs as the plain module.

    Args:
        modules: The trunk, e.g. an ``nn.Sequential`` of VGG ``features``.
        keep: Indices into ``modules`` whose outputs :func:`lean_forward` must return. Modules
            after the largest index are never run.
        bits: Pack ReLU masks eight to a byte (8x less mask memory, a little more time).

    Returns:
        A :class:`LeanPlan`.

    Raises:
        ValueError: If ``keep`` is empty or names an index outside ``modules``.
    """
    keep_set = frozenset(int(i) for i in keep)
    if not keep_set:
        raise ValueError("build_plan needs at least one module index in `keep`, got none")
    bad = sorted(i for i in keep_set if not 0 <= i < len(modules))
    if bad:
        raise ValueError(
            f"build_plan: indices {bad} are outside the {len(modules)} modules given; "
            f"pass indices in 0..{len(modules) - 1}"
        )
    stop = max(keep_set)
    steps: list[_Step] = []
    i = 0
    while i <= stop:
        module = modules[i]
        if _lean_conv(module) or _lean_bn(module):
            conv = bn = None
            j = i
            if _lean_conv(module):
                conv = j
                if j not in keep_set and j < stop and _lean_bn(modules[j + 1]):
                    j += 1
                    bn = j
            else:
                bn = j
            if j < stop and _lean_relu(modules[j + 1]):
                steps.append(_Step("fused", i, j + 1, conv=conv, bn=bn, relu=j + 1,
                                   keep_pre=j in keep_set))
                i = j + 2
            else:
                steps.append(_Step("fused", i, j, conv=conv, bn=bn))
                i = j + 1
        elif _lean_relu(module):
            steps.append(_Step("fused", i, i, relu=i))
            i += 1
        elif _lean_pool(module):
            steps.append(_Step("pool", i, i))
            i += 1
        else:
            steps.append(_Step("plain", i, i))
            i += 1
    return LeanPlan(steps=tuple(steps), keep=keep_set, bits=bits)


def _still_lean(step: _Step, modules: Sequence[nn.Module]) -> bool:
    """Whether a planned step may still run lean.

    Modules may be unfrozen or put in train mode after planning; they then run plain, so no
    weight gradient is ever dropped.
    """
    if step.conv is not None and not _lean_conv(modules[step.conv]):
        return False
    return step.bn is None or _lean_bn(modules[step.bn])


def _run_fused(step: _Step, modules: Sequence[nn.Module], x: Tensor,
               bits: bool, *, record: bool, winograd: bool) -> tuple[Tensor | None, Tensor]:
    """Run one fused step; returns ``(pre_relu_or_None, out)``.

    ``record``: through the lean autograd function; else the values alone (nothing needs a
    gradient). ``winograd``: see :func:`lean_forward`.
    """
    weight = bias = None
    geometry = None
    if step.conv is not None:
        conv = modules[step.conv]
        assert isinstance(conv, nn.Conv2d)
        weight, bias = conv.weight, conv.bias
        geometry = _ConvGeometry(_pair(conv.stride), _pair(conv.padding),  # type: ignore[arg-type]
                                 _pair(conv.dilation), conv.groups)
    bn_args = None
    if step.bn is not None:
        bn = modules[step.bn]
        assert isinstance(bn, nn.BatchNorm2d)
        assert bn.running_mean is not None and bn.running_var is not None
        bn_args = (bn.running_mean, bn.weight, bn.bias, bn.running_var, float(bn.eps))
    if not record:
        pre, out, _ = _fused_values(x, weight, bias, geometry, bn_args, step.relu is not None,
                                    step.keep_pre, winograd)
        return (pre if step.keep_pre else None), out
    result = _ConvBnReLU.apply(x, weight, bias, geometry, bn_args, step.relu is not None,
                               step.keep_pre, bits, winograd)
    if step.keep_pre:
        pre, out = result
        return pre, out
    return None, result


def lean_forward(modules: Sequence[nn.Module], x: Tensor, plan: LeanPlan, *,
                 protect_input: bool = False, winograd: bool = False) -> dict[int, Tensor]:
    """Run ``modules`` on ``x`` with lean autograd and return the wanted outputs.

    Without autograd (``torch.no_grad()``, or an input and frozen modules that need no
    gradient) the fused steps compute their values and save nothing, and the other modules
    run plain.

    Args:
        modules: The same sequence the plan was built from.
        x: Input batch ``(N, C, H, W)``, any float dtype, contiguous or ``channels_last``;
            autocast is honoured exactly as the plain modules honour it.
        plan: From :func:`build_plan`.
        protect_input: ``x`` is a tap the caller already handed out: never modify it in place
            (an in-place ReLU first in ``modules`` runs out of place).
        winograd: Run the convolutions that qualify (:func:`_winograd.usable`: CPU float32
            3x3 layers with enough channels) by Winograd F(4x4, 3x3), forward and backward;
            their values then differ from the plain modules' by a few 1e-6 relative.

    Returns:
        ``{module index: output}`` for every index in ``plan.keep``. Without ``winograd``
        values are bit-identical to running the modules one after another (with out-of-place
        ReLUs where an output is kept, so an in-place ReLU cannot overwrite a kept
        pre-activation).
    """
    outputs: dict[int, Tensor] = {}
    stop = max(plan.keep)
    needs_grad = torch.is_grad_enabled() and (
        x.requires_grad
        or any(p.requires_grad for m in modules[: stop + 1] for p in m.parameters())
    )
    for step in plan.steps:
        # Fused steps also run without a gradient (their values alone, the same kernels);
        # a pool needs its lean function only when a gradient is recorded.
        lean = _still_lean(step, modules) and (
            step.kind == "fused" or (step.kind == "pool" and needs_grad))
        if not lean:
            for index in range(step.first, step.last + 1):
                module = modules[index]
                if isinstance(module, nn.ReLU) and (index - 1 in plan.keep
                                                    or (index == 0 and protect_input)):
                    x = torch.relu(x)  # never overwrite a kept output in place
                else:
                    x = module(x)
                if index in plan.keep:
                    outputs[index] = x
            continue
        if step.kind == "fused":
            pre, x = _run_fused(step, modules, x, plan.bits, record=needs_grad,
                                winograd=winograd)
            if pre is not None:
                outputs[step.last - 1] = pre
        else:
            pool = modules[step.first]
            assert isinstance(pool, nn.MaxPool2d)
            x = _MaxPoolIndex.apply(x, pool)
        if step.last in plan.keep:
            outputs[step.last] = x
    return outputs
