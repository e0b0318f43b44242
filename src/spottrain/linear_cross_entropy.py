"""Cross-entropy of an output projection without holding its logits: `[N, V]` is computed a chunk of rows at a
time, in the forward pass and again in the backward pass, so a step keeps `chunk × V` floats alive instead of
every head's `[B, S, V]` (2 GB in bf16 for four heads at 4 × 2048 × 32k, twice that once upcast).

Per-token CE comes back (not a mean), so any weighting, masking or token selection the tasks do downstream
works through autograd as with `F.cross_entropy(..., reduction="none")`. The backward pass recomputes each
chunk's logits (one more `chunk × H × V` product, ~1/3 of the projection's cost) rather than keeping them; that is
the trade Liger's and Apple's cut cross-entropy make too. Written here rather than taken from Liger-Kernel
because Liger's fused kernel is Triton-only (no CPU path for CI) and reduces to a scalar inside the kernel, which
token weights computed from the CE itself (Rho-1) cannot use.

`LinearWithCrossEntropy` is the module form: an `nn.Linear` whose `forward(hidden, targets)` returns the CE. It
replaces a model's output projection in place (same parameter), so DeepSpeed ZeRO-3 gathers the weight for it as
for any module, in the forward and the backward pass.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

CHUNK_BYTES = 512 * 2**20  # fp32 logits of one chunk: 4096 rows at a 32k vocabulary


def rows_per_chunk(vocab_size: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    return max(1, chunk_bytes // (4 * vocab_size))


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk_rows: int):
        ce = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        lse = torch.empty_like(ce)
        for start in range(0, hidden.shape[0], chunk_rows):
            rows = slice(start, start + chunk_rows)
            logits = _logits(hidden[rows], weight, bias)
            lse[rows] = torch.logsumexp(logits, dim=-1)
            ce[rows] = lse[rows] - logits.gather(1, targets[rows, None]).squeeze(1)
        ctx.save_for_backward(hidden, weight, bias, targets, lse)
        ctx.chunk_rows = chunk_rows
        return ce

    @staticmethod
    def backward(ctx, grad_ce):
        hidden, weight, bias, targets, lse = ctx.saved_tensors
        need_hidden, need_weight, need_bias = ctx.needs_input_grad[:3]
        grad_hidden = torch.empty_like(hidden) if need_hidden else None
        # Summed over chunks in fp32: bf16 partial sums would each round.
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_weight else None
        grad_bias = torch.zeros(weight.shape[0], dtype=torch.float32, device=weight.device) if need_bias else None
        for start in range(0, hidden.shape[0], ctx.chunk_rows):
            rows = slice(start, start + ctx.chunk_rows)
            # d CE / d logits = softmax − one-hot(target), scaled by each row's incoming gradient
            grad_logits = _logits(hidden[rows], weight, bias).sub_(lse[rows, None]).exp_()
            grad_logits[torch.arange(grad_logits.shape[0], device=grad_logits.device), targets[rows]] -= 1.0
            grad_logits *= grad_ce[rows, None]
            if need_bias:
                grad_bias += grad_logits.sum(dim=0)
            grad_logits = grad_logits.to(hidden.dtype)
            if need_hidden:
                grad_hidden[rows] = grad_logits @ weight
            if need_weight:
                grad_weight.add_(grad_logits.T @ hidden[rows])  # upcast as it adds: no fp32 copy of the product
        return (grad_hidden, None if grad_weight is None else grad_weight.to(weight.dtype),
                None if grad_bias is None else grad_bias.to(bias.dtype), None, None)


def _logits(hidden: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """One chunk's logits in the model's dtype (as `nn.Linear` computes them), upcast for the softmax."""
    return nn.functional.linear(hidden, weight, bias).float()


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         bias: Optional[torch.Tensor] = None, chunk_rows: Optional[int] = None) -> torch.Tensor:
    """CE of `targets` under the logits `hidden @ weight.T + bias`, per token: `hidden` [..., H], `targets` [...]
    → fp32 [...], equal to `F.cross_entropy(logits.float(), targets, reduction="none")`."""
    rows = chunk_rows or rows_per_chunk(weight.shape[0])
    flat = _LinearCrossEntropy.apply(hidden.reshape(-1, hidden.shape[-1]), weight, bias,
                                     targets.reshape(-1), rows)
    return flat.view(targets.shape)


class LinearWithCrossEntropy(nn.Linear):
    """An output projection that returns logits, or, given targets, their per-token CE without the logits."""

    def forward(self, hidden: torch.Tensor, targets: Optional[torch.Tensor] = None) -> torch.Tensor:
        if targets is None:
            return super().forward(hidden)
        return linear_cross_entropy(hidden, self.weight, targets, self.bias)

    @classmethod
    def replacing(cls, linear: nn.Linear) -> "LinearWithCrossEntropy":
        """The same parameters (tied embeddings stay tied) behind this module."""
        module = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
        module.weight = linear.weight
        module.bias = linear.bias
        return module
