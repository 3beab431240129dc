"""DMO: forward values from one model, gradients from another (decoupled model optimization).

The policy's trajectory is computed by the heavy global world model (images, no gradient); its latent
states come from the local model filtering those images. For the policy gradient every transition is
rewritten as ``l' = f_bwd(l, a) + stopgrad(l_fwd' - f_bwd(l, a))``: its value is the forward latent, its
derivative the local model's Jacobian at the forward state. With ``f_fwd == f_bwd`` this is exactly
backpropagation through time (``tests/test_sapo_dmo.py::test_dmo_equals_bptt``).
"""

from __future__ import annotations

import torch


def decoupled(backward_value: torch.Tensor, forward_value: torch.Tensor) -> torch.Tensor:
    """A tensor with the value of ``forward_value`` and the gradient of ``backward_value``.

    Args:
        backward_value: f_bwd(l, a), part of the autograd graph.
        forward_value: the forward model's value of the same quantity (its graph, if any, is ignored).
    """
    if backward_value.shape != forward_value.shape:
        raise ValueError(
            f"decoupled transition needs equal shapes, got {tuple(backward_value.shape)} (backward model) and "
            f"{tuple(forward_value.shape)} (forward model); check that both describe the same latent"
        )
    return backward_value + (forward_value.detach() - backward_value.detach())


def grads_finite(params: list[torch.Tensor] | tuple[torch.Tensor, ...], limit: float = 1e6) -> bool:
    """Whether every gradient is finite and the global norm below ``limit`` (else the update is skipped)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return True
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    return bool(torch.isfinite(norm)) and float(norm) < limit
