"""Cost of balanced R-D optimisation per training step, against a standard step.

Model: CompressAI bmshj2018-hyperprior (quality 1, random init); batch: 8 seeded random
128x128 crops of a synthetic image.  Three step kinds, each with its own copy of the model and
optimiser, timed interleaved (A B C A B C ...) after warm-up; medians over the repetitions:

  A  standard:            forward, lambda*255^2*MSE + bpp, backward, torch.optim.Adam step
  B  balanced next-batch: forward, weighted_loss (applies the pending logit update with these
                          losses), backward, BalancedOptimizer step      (no extra forward)
  C  balanced same-batch: B's work + a no-grad forward on the same batch for L', update_weights

Goals (issue 3): B/A <= 1.03, C/A <= 1.40.

``--extra`` adds two kinds that split B's cost: D = the standard loss stepped by
BalancedOptimizer without balancing (cautious Adam + clipping alone), and B0 = B with
``cautious=False``.

    python bench/balanced_overhead.py [--reps 10] [--warmup 2] [--device cpu|cuda] [--extra]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F
from compressai.zoo import bmshj2018_hyperprior

from lictrain.optim import BalancedOptimizer

LAMBDA_Q1 = 0.0018  # CompressAI's lambda for quality 1 (MSE)
GOAL_NEXT, GOAL_SAME = 1.03, 1.40


def make_batch(n: int, size: int, seed: int, device: torch.device) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 32, 32, generator=g)
    image = F.interpolate(coarse, size=(512, 512), mode="bicubic", align_corners=False)
    image = (image + 0.05 * torch.randn(image.shape, generator=g)).clamp(0, 1)[0]
    ys = torch.randint(0, 512 - size + 1, (n,), generator=g).tolist()
    xs = torch.randint(0, 512 - size + 1, (n,), generator=g).tolist()
    crops = [image[:, y:y + size, x:x + size] for y, x in zip(ys, xs)]
    return torch.stack(crops).to(device)


def task_losses(out: dict, x: torch.Tensor, lmbda: float) -> torch.Tensor:
    """[lambda*255^2*MSE, bpp] with bpp = sum(-log2 p) / num_pixels."""
    n, _, h, w = x.shape
    num_pixels = n * h * w
    bpp = sum(-torch.log2(lik).sum() for lik in out["likelihoods"].values()) / num_pixels
    distortion = lmbda * 255**2 * F.mse_loss(out["x_hat"], x)
    return torch.stack([distortion, bpp])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=10, help="timed repetitions per step kind")
    ap.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--extra", action="store_true", help="also time kinds D and B0 (see above)")
    args = ap.parse_args()

    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    base = bmshj2018_hyperprior(quality=1, pretrained=False).to(device).train()
    x = make_batch(args.batch, args.size, seed=0, device=device)

    net_a, net_b, net_c, net_d, net_b0 = (copy.deepcopy(base) for _ in range(5))
    opt_a = torch.optim.Adam(net_a.parameters(), lr=1e-4)
    opt_b = BalancedOptimizer(net_b.parameters(), lr=1e-4, balanced_update="next-batch")
    opt_c = BalancedOptimizer(net_c.parameters(), lr=1e-4, balanced_update="same-batch")
    opt_d = BalancedOptimizer(net_d.parameters(), lr=1e-4)
    opt_b0 = BalancedOptimizer(net_b0.parameters(), lr=1e-4, balanced_update="next-batch",
                               cautious=False)

    def standard() -> None:
        losses = task_losses(net_a(x), x, LAMBDA_Q1)
        loss = losses[0] + losses[1]
        opt_a.zero_grad()
        loss.backward()
        opt_a.step()

    def next_batch() -> None:
        losses = task_losses(net_b(x), x, LAMBDA_Q1)
        loss = opt_b.weighted_loss(losses)  # also the pending logit update, L' = these losses
        opt_b.zero_grad()
        loss.backward()
        opt_b.step()

    def same_batch() -> None:
        losses = task_losses(net_c(x), x, LAMBDA_Q1)
        loss = opt_c.weighted_loss(losses)
        opt_c.zero_grad()
        loss.backward()
        opt_c.step()
        with torch.no_grad():
            opt_c.update_weights(task_losses(net_c(x), x, LAMBDA_Q1))

    def machinery_only() -> None:
        losses = task_losses(net_d(x), x, LAMBDA_Q1)
        loss = losses[0] + losses[1]
        opt_d.zero_grad()
        loss.backward()
        opt_d.step()

    def next_batch_plain() -> None:
        losses = task_losses(net_b0(x), x, LAMBDA_Q1)
        loss = opt_b0.weighted_loss(losses)
        opt_b0.zero_grad()
        loss.backward()
        opt_b0.step()

    kinds = {"A standard": standard, "B next-batch": next_batch, "C same-batch": same_batch}
    if args.extra:
        kinds.update({"D cautious+clip": machinery_only, "B0 nb, no caut.": next_batch_plain})
    times: dict[str, list[float]] = {name: [] for name in kinds}
    for rep in range(args.warmup + args.reps):
        for name, fn in kinds.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            if rep >= args.warmup:
                times[name].append(time.perf_counter() - t0)

    med = {name: statistics.median(ts) for name, ts in times.items()}
    a = med["A standard"]
    print(f"bmshj2018-hyperprior q1, batch {args.batch}x3x{args.size}x{args.size}, "
          f"device {device}, torch threads {torch.get_num_threads()}, "
          f"{args.reps} reps after {args.warmup} warm-up rounds (interleaved)")
    for name, m in med.items():
        spread = f"{min(times[name]) * 1e3:.1f}-{max(times[name]) * 1e3:.1f}"
        print(f"  {name:<16} median {m * 1e3:9.1f} ms  (range {spread} ms)")
    rb, rc = med["B next-batch"] / a, med["C same-batch"] / a
    print(f"  B/A = {rb:.3f}  (goal <= {GOAL_NEXT:.2f}: {'met' if rb <= GOAL_NEXT else 'NOT met'})")
    print(f"  C/A = {rc:.3f}  (goal <= {GOAL_SAME:.2f}: {'met' if rc <= GOAL_SAME else 'NOT met'})")
    lo = {name: min(ts) for name, ts in times.items()}
    print(f"  fastest-run ratios (robust to other load on the machine): "
          f"B/A = {lo['B next-batch'] / lo['A standard']:.3f}, "
          f"C/A = {lo['C same-batch'] / lo['A standard']:.3f}")
    if args.extra:
        print(f"  D/A = {med['D cautious+clip'] / a:.3f}  (optimiser machinery, no balancing)   "
              f"B0/A = {med['B0 nb, no caut.'] / a:.3f}  (next-batch, cautious off)")
    print(f"  task weights after the run: next-batch {opt_b.task_weights.tolist()}, "
          f"same-batch {opt_c.task_weights.tolist()}")


if __name__ == "__main__":
    main()
