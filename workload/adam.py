"""Adam with L2 weight decay, computed as torch.optim.Adam computes it one tensor at a time, without torch.optim.

torch.optim's optimizers import torch._dynamo on first use (their methods are wrapped to keep the compiler out):
~3 s of CPU a training job, as much as importing torch itself and more than a small fit, for a compiler the
workload never uses. This is torch's single-tensor update (its CPU path), operation for operation, so a seeded
run writes the same weights (tests/test_workload_train.py compares them with torch.optim.Adam's).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


class Adam:
    """Adam over `params`: `step()` after each backward, `zero_grad()` before the next."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        self.params = list(params)
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self.exp_avgs = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.exp_avg_sqs = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.steps = 0.0  # a float, as torch reads its step count back from a tensor

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter that has a gradient."""
        beta1, beta2 = self.betas
        self.steps += 1.0
        step_size = self.lr / (1 - beta1**self.steps)
        bias_correction2_sqrt = (1 - beta2**self.steps) ** 0.5
        for param, exp_avg, exp_avg_sq in zip(self.params, self.exp_avgs, self.exp_avg_sqs):
            if param.grad is None:
                continue
            grad = param.grad.add(param, alpha=self.weight_decay) if self.weight_decay != 0 else param.grad
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(self.eps)
            param.addcdiv_(exp_avg, denom, value=-step_size)

    def zero_grad(self) -> None:
        """Drop the gradients (as torch's `set_to_none`), so that the next backward writes fresh ones."""
        for param in self.params:
            param.grad = None
