"""Training: fit the policy/value net to selfplay samples and write a candidate checkpoint (.pth).

python -m workload.train --board hex8 --num-players 2 --data a.npz b.npz --init best.pth --out cand.pth
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from servicekit.filehash import sha256_file
from workload import report
from workload.game import UnsupportedConfig, board_spec
from workload.net import PolicyValueNet, device_or_fail, load_checkpoint, save_checkpoint


def load_samples(paths: list[Path]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Concatenate the samples of several selfplay batches."""
    parts = [np.load(p) for p in paths]
    return (np.concatenate([p["planes"] for p in parts]), np.concatenate([p["policies"] for p in parts]),
            np.concatenate([p["values"] for p in parts]))


def fit(net: PolicyValueNet, samples: tuple[np.ndarray, np.ndarray, np.ndarray], epochs: int, batch: int,
        lr: float, device: torch.device, seed: int | None = None) -> dict[str, float]:
    """Train in place with cross-entropy on the search policy and MSE on the outcome; returns final losses."""
    gen = torch.Generator().manual_seed(seed if seed is not None else int(time.time()))
    x, pi, z = (torch.from_numpy(a) for a in samples)
    net.to(device).train()
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=1e-4)
    policy_loss = value_loss = torch.zeros(())
    for epoch in range(epochs):
        # One line per epoch, so a long training run is never taken for a stuck one.
        report.progress(0.1 + 0.8 * epoch / max(1, epochs), f"epoch {epoch + 1}/{epochs}")
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), batch):
            idx = order[start:start + batch]
            logits, value = net(x[idx].to(device))
            policy_loss = -(pi[idx].to(device) * torch.log_softmax(logits, 1)).sum(1).mean()
            value_loss = nn.functional.mse_loss(value, z[idx].to(device))
            opt.zero_grad()
            (policy_loss + value_loss).backward()  # type: ignore[no-untyped-call]  # torch leaves Tensor.backward unannotated
            opt.step()
    return {"policy_loss": round(policy_loss.item(), 4), "value_loss": round(value_loss.item(), 4), "samples": float(len(x))}


def main(argv: list[str] | None = None) -> None:
    """Train from batches and write the candidate."""
    ap = argparse.ArgumentParser(description=__doc__)
    report.add_config_arguments(ap)
    ap.add_argument("--data", nargs="+", required=True, help="selfplay .npz files")
    ap.add_argument("--init", default="none", help="checkpoint to start from, or 'none'")
    ap.add_argument("--out", required=True, help="candidate checkpoint path (.pth)")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    args = ap.parse_args(argv)
    try:
        spec = board_spec(args.board, args.num_players)
    except UnsupportedConfig as exc:
        report.fail(str(exc))
    missing = [p for p in args.data if not Path(p).exists()]
    if missing:
        report.fail(f"training data not found: {', '.join(missing)}")
    torch.set_num_threads(1)
    if args.seed is not None:  # the fresh net's initial weights too, so that a seeded run repeats exactly
        torch.manual_seed(args.seed)
    started = time.monotonic()
    init = Path(args.init) if args.init not in ("", "none") else None
    net, meta = load_checkpoint(init) if init and init.exists() else (PolicyValueNet(spec), {})
    report.progress(0.05, "loading samples")
    metrics = fit(net, load_samples([Path(p) for p in args.data]), args.epochs, args.batch_size, args.lr,
                  device_or_fail(args.device), args.seed)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    generation = int(meta.get("generation", 0)) + 1
    save_checkpoint(net, out, {"generation": generation, "parent": args.init, "metrics": metrics})
    report.result(
        kind="training", board_type=args.board, num_players=args.num_players, path=str(out),
        size_bytes=out.stat().st_size, sha256=sha256_file(out)[1], metrics=metrics, generation=generation,
        seconds=round(time.monotonic() - started, 3), input_batches=args.data, parent=args.init,
    )


if __name__ == "__main__":
    main()
