"""Framework overhead of lictrain's training step vs a plain CompressAI-style loop.

Both run on the same model and the same batch, interleaved (ABAB...) so machine noise hits
both alike; prints the median seconds per step of each and their ratio (goal <= 1.02), and
the time to draw one batch from lictrain's loader as a share of a step (goal < 5%).

    .venv/bin/python bench/train_step.py [--model bmshj2018-hyperprior] [--repeats 15]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from lictrain.config import TrainConfig
from lictrain.losses import RateDistortionLoss
from lictrain.models import build_model
from lictrain.training.build import build_loaders
from lictrain.training.loop import to_device
from lictrain.training.optimizers import build_aux_optimizer, split_parameters
from lictrain.training.strategy import StandardStrategy


def plain_compressai_step(model, optimizer, aux_optimizer, criterion, batch, clip):
    """CompressAI's examples/train.py inner loop, verbatim in spirit."""
    optimizer.zero_grad()
    aux_optimizer.zero_grad()
    out = model(batch)
    loss = criterion(out, batch).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    aux_loss = model.aux_loss()
    aux_loss.backward()
    aux_optimizer.step()


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bmshj2018-hyperprior")
    parser.add_argument("--quality", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--patch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()

    torch.manual_seed(0)
    cfg = TrainConfig(model=args.model, quality=args.quality, batch_size=args.batch_size, patch_size=args.patch_size,
                      epoch_size=args.batch_size * (args.repeats + 4))
    loader, _, _ = build_loaders(cfg, torch.device("cpu"))
    loader.set_epoch(0)
    batch = to_device(next(iter(loader)), torch.device("cpu"))  # uint8 crops -> float, as in training
    criterion = RateDistortionLoss(cfg.lmbda)

    ours_model = build_model(args.model, args.quality)
    plain_model = copy.deepcopy(ours_model)
    net, aux = split_parameters(ours_model)
    ours = StandardStrategy(cfg, ours_model, ours_model, criterion, net, build_aux_optimizer(aux, cfg.aux_lr))
    p_net, p_aux = split_parameters(plain_model)
    p_opt, p_aux_opt = torch.optim.Adam(p_net, lr=cfg.peak_lr), torch.optim.Adam(p_aux, lr=cfg.aux_lr)

    def run_ours() -> None:
        ours.step(batch)

    def run_plain() -> None:
        plain_compressai_step(plain_model, p_opt, p_aux_opt, criterion, batch, cfg.clip_max_norm)

    for _ in range(2):  # warm-up: allocator, first-call overheads
        run_ours()
        run_plain()
    ours_t, plain_t, load_t = [], [], []
    iterator = iter(loader)
    for i in range(args.repeats):
        load_t.append(timed(lambda: to_device(next(iterator), torch.device("cpu"))))  # as in training
        # alternate which goes first, so neither always follows the other
        if i % 2:
            ours_t.append(timed(run_ours)); plain_t.append(timed(run_plain))
        else:
            plain_t.append(timed(run_plain)); ours_t.append(timed(run_ours))

    m_ours, m_plain, m_load = (statistics.median(t) for t in (ours_t, plain_t, load_t))
    print(f"model {args.model} q{args.quality}, batch {args.batch_size}x{args.patch_size}^2, {args.repeats} interleaved steps, {torch.get_num_threads()} threads")
    print(f"lictrain step        median {m_ours * 1000:8.1f} ms")
    print(f"plain CompressAI     median {m_plain * 1000:8.1f} ms")
    print(f"ratio lictrain/plain        {m_ours / m_plain:8.3f}   (goal <= 1.02)")
    print(f"data loading per batch      {m_load * 1000:8.2f} ms = {100 * m_load / m_ours:.2f}% of a step (goal < 5%)")


if __name__ == "__main__":
    main()
