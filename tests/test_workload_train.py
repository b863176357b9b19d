"""The training program's optimizer: torch.optim.Adam's updates, without torch.optim (which imports torch._dynamo)."""

from __future__ import annotations

import copy

import torch

from workload.adam import Adam
from workload.game import board_spec
from workload.net import PolicyValueNet


def test_adam_updates_the_weights_exactly_as_torch_optim_adam() -> None:
    torch.manual_seed(4)
    ours = PolicyValueNet(board_spec("hex8"))
    theirs, initial = copy.deepcopy(ours), copy.deepcopy(ours)
    mine, reference = Adam(ours.parameters(), lr=2e-3, weight_decay=1e-4), torch.optim.Adam(theirs.parameters(), lr=2e-3, weight_decay=1e-4)
    for _ in range(5):
        x = torch.randn(16, 3, 8, 8)
        for net, opt in ((ours, mine), (theirs, reference)):
            logits, value = net(x)
            opt.zero_grad()
            (logits.square().mean() + value.sum()).backward()  # type: ignore[no-untyped-call]  # torch leaves Tensor.backward unannotated
            opt.step()
    assert not any(torch.equal(a, b) for a, b in zip(ours.parameters(), initial.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(ours.parameters(), theirs.parameters()))
