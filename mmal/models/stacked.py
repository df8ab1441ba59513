"""K models of one architecture as one module, so that one forward and backward pass trains all of them.

The fused model and its unimodal references (``mmal.metrics.references``) are small MLPs: a training step
costs dispatch, not arithmetic, and three models cost three times one. ``stack(models)`` builds one module
whose every ``nn.Linear`` holds the K weight matrices, (K, out, in), and applies them with one batched
matrix product; every other layer already works on a leading member dimension (the models are written
that way), and inputs and outputs carry it: x[m] (K, B, D), mask (K, B, M), logits (K, B, C). Dropout takes
member k's masks from its seed's counter-based stream (``mmal.models.dropout``), the masks the member draws
training alone, all K members' in one batched hash.
On one CPU thread every member's forward, gradients and optimizer updates are then bitwise those of the
model alone (``tests/test_stacked.py``), except where a batched product takes another kernel than the
layer's own: a batch of 1 or 3 rows, and tiny layers (a sweep of sizes found 4 -> 4, 4 -> 8 and 8 -> 4 on 8
or 16 rows; none where a side has 16 units or more); there the results are equal in distribution. Stacking
changes speed, not results.

A component says whether it stacks: the class attribute ``stacks = True`` (``Fusion`` declares it False,
mmal's MLP and identity encoders, fusions and classifier True, the CNN encoders False). A model stacks when
every module in it is one of PyTorch's layers below or a class that says it stacks, and it has no one-output
linear layer (the gated fusion's gates, whose batched product rounds differently); otherwise it trains alone,
and ``unstackable_reason`` says why.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from mmal.models.dropout import CounterDropout, MaskKeys, dropout_layers, replace_module

# PyTorch's modules that work on a leading member dimension: the containers, and the leaves that ``stack``
# replaces or that are elementwise.
TORCH_MODULES = (nn.Sequential, nn.ModuleList, nn.Linear, nn.ReLU, nn.Dropout)


class StackedLinear(nn.Module):
    """K linear layers: (K, B, in) -> (K, B, out), with weight (K, out, in) and bias (K, out)."""

    def __init__(self, layers: list[nn.Linear]):
        super().__init__()
        self.weight = nn.Parameter(torch.stack([layer.weight.detach() for layer in layers]))
        self.bias = nn.Parameter(torch.stack([layer.bias.detach() for layer in layers]))

    def forward(self, x: Tensor) -> Tensor:
        return _StackedLinear.apply(x, self.weight, self.bias)


class _StackedLinear(torch.autograd.Function):
    """x W^T + b per member, with the gradients computed as ``nn.Linear``'s own are, member by member: the
    weight gradient as grad^T x (autograd's rule for a batched product would compute (x^T grad)^T, whose
    sums run in another order and differ in the last bit)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        ctx.save_for_backward(x, weight, bias)
        return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor, Tensor]:
        x, weight, bias = ctx.saved_tensors  # under autocast grad may be bf16 while weight is float32
        grad_x = torch.bmm(grad, weight.to(grad.dtype)) if ctx.needs_input_grad[0] else None
        grad_weight = torch.bmm(grad.transpose(1, 2), x.to(grad.dtype)).to(weight.dtype)
        return grad_x, grad_weight, grad.sum(1).to(bias.dtype)


def unstackable_reason(model: nn.Module) -> str | None:
    """Why ``model`` cannot stack (module docstring), naming the first module in the way; None when it can."""
    for name, module in model.named_modules():
        kind = type(module)
        if kind not in TORCH_MODULES and not getattr(kind, "stacks", False):
            return f"{name or 'the model'} ({kind.__name__}) does not declare stacks = True"
        if isinstance(module, nn.Linear) and (module.bias is None or module.out_features == 1):
            return f"{name} is a linear layer with {'no bias' if module.bias is None else 'one output'}"
    return None


def stackable(model: nn.Module) -> bool:
    """Whether ``model`` can train stacked with copies of itself (``unstackable_reason`` is None)."""
    return unstackable_reason(model) is None


def stack(models: list[nn.Module], seeds: list[int]) -> nn.Module:
    """One module training ``models`` (same architecture, each ``stackable``) together; member k's dropout
    masks come from ``seeds[k]`` (``mmal.models.dropout``). The members keep their own weights: ``unstack``
    copies the result back."""
    stacked = copy.deepcopy(models[0])
    for name, module in models[0].named_modules():
        if isinstance(module, nn.Linear):
            replace_module(stacked, name, StackedLinear([m.get_submodule(name) for m in models]))
    keys = MaskKeys(seeds, "dropout", next(stacked.parameters()).device)
    for i, (name, module) in enumerate(dropout_layers(stacked)):
        replace_module(stacked, name, CounterDropout(module.p, keys, i, stacked=True))
    return stacked


def unstack(stacked: nn.Module, models: list[nn.Module]) -> None:
    """Copy each member's trained weights from ``stacked`` into its model."""
    with torch.no_grad():
        for name, module in stacked.named_modules():
            if isinstance(module, StackedLinear):
                for k, model in enumerate(models):
                    layer = model.get_submodule(name)
                    layer.weight.copy_(module.weight[k])
                    layer.bias.copy_(module.bias[k])
