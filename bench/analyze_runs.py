"""Benchmark: ``HyperparameterAnalyzer.load_results`` on 1,000 real W&B offline runs (goal: < 1 s).

How the runs are made (fast and real):

1. One real offline run is written by ``wandb`` itself (``wandb.init(mode="offline")`` in a
   subprocess) with lictrain's config keys and, per epoch, the metrics ``fit()`` logs (test
   ``loss``/``bpp``/``mse``/``psnr``/``ms_ssim``, ``lr``, ``gamma``, ``w_lr``, task weights,
   ``train/*``, ...), then ``finish()``.
2. Its ``run-<id>.wandb`` log is decoded into wandb's own ``Record`` protobufs; each of the
   1,000 clones gets a new run id, new ``lambda``/``gamma``/``w_lr`` config values and new
   metric values in every history and summary record, is re-serialized with wandb's protobuf
   classes and re-framed with :func:`lictrain.analysis.readers.encode_wandb_log` (byte-identical
   to wandb-core's framing: re-encoding the unmodified template reproduces the file exactly,
   which this script checks). Each clone gets the same folder layout as a real sweep trial:
   ``trial-NNNN/wandb/offline-run-<time>-<id>/{run-<id>.wandb,files/,logs/,tmp/}`` plus the
   ``latest-run`` symlink.

Then ``load_results()`` is timed: ``--repeat`` times in this process (after one untimed warm-up
that imports wandb's protobuf module, ~1 s, paid once per process), with one reader process and
with ``--workers`` forked ones, reporting wall and CPU seconds (CPU time is what an idle
machine's wall time would be; on a shared, loaded machine wall time is higher), then once cold
in a fresh interpreter, where the imports (pandas; wandb's protobuf module, which imports the
wandb package, ~1 s) are timed apart from the first load; the result is checked (1,000 rows).

Usage::

    python bench/analyze_runs.py [--runs 1000] [--epochs 20] [--repeat 5] [--workers 2] [--dir DIR] [--check]

``--check`` exits 1 if the median warm load misses the goal.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import statistics
import string
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

try:
    from lictrain.analysis.readers import encode_wandb_log, iter_wandb_log
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from lictrain.analysis.readers import encode_wandb_log, iter_wandb_log

GOAL_S = 1.0

TEMPLATE_SCRIPT = textwrap.dedent("""
    import os, sys
    os.environ["WANDB_SILENT"] = "true"
    import wandb
    from lictrain.config import TrainConfig
    from lictrain.tracking.wandb_run import wandb_config
    epochs = int(sys.argv[2])
    cfg = TrainConfig(use_balanced=True, epochs=epochs).to_dict()
    run = wandb.init(project="lictrain", dir=sys.argv[1], mode="offline", config=wandb_config(cfg), name="template")
    for e in range(epochs):
        m = {"epoch": e, "loss": 1.0, "bpp": 0.5, "mse": 0.001, "psnr": 30.0, "ms_ssim": 0.95, "lr": 1e-4,
             "w_lr": 0.025, "gamma": 0.003, "weight/distortion": 0.5, "weight/rate": 0.5,
             "train/loss": 1.1, "train/bpp": 0.5, "train/mse": 0.001, "train/psnr": 29.0,
             "train/aux_loss": 10.0, "skipped_steps": 0, "epoch_seconds": 1.5}
        run.log(m, step=e)
    run.finish()
""")


def make_template(work: Path, epochs: int) -> Path:
    """Write one real offline run with wandb; return its .wandb file."""
    env = {**os.environ, "WANDB_SILENT": "true", "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    subprocess.run([sys.executable, "-c", TEMPLATE_SCRIPT, str(work), str(epochs)], check=True, env=env)
    files = list((work / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1, files
    return files[0]


def fake_metrics(lmbda: float, gamma: float, w_lr: float, rng: random.Random) -> dict[str, float]:
    """Plausible final metrics for a configuration (a smooth R-D trend plus noise)."""
    import math

    bpp = 0.1 + 25 * lmbda * (1 + 0.1 * rng.random())
    psnr = 27 + 4 * math.log10(lmbda / 0.0018 + 1) + 40 * gamma - 10 * abs(w_lr - 0.025) + rng.gauss(0, 0.05)
    return {"bpp": bpp, "psnr": psnr, "loss": lmbda * 255**2 * 10 ** (-psnr / 10) + bpp,
            "mse": 10 ** (-psnr / 10), "ms_ssim": 0.9 + psnr / 1000, "gamma": gamma, "w_lr": w_lr}


def clone_runs(template: Path, out: Path, runs: int, seed: int = 0) -> None:
    """Write ``runs`` clones of ``template`` with new ids, configs and metrics (see module doc)."""
    os.environ.setdefault("WANDB_SILENT", "true")
    from wandb.proto import wandb_internal_pb2 as pb

    data = template.read_bytes()
    payloads = list(iter_wandb_log(data, str(template)))
    assert encode_wandb_log(payloads) == data, "re-framing the template must reproduce wandb's file"
    records = [pb.Record.FromString(p) for p in payloads]
    old_id = template.stem[len("run-"):]
    stamp = template.parent.name.split("-")[2]  # offline-run-<stamp>-<id>
    rng = random.Random(seed)
    lambdas, gammas, w_lrs = (0.0018, 0.0035, 0.0067, 0.013), (0.001, 0.003, 0.006, 0.01), (0.01, 0.025, 0.05)
    alphabet = string.ascii_lowercase + string.digits
    ids: set[str] = set()
    for i in range(runs):
        run_id = "".join(rng.choice(alphabet) for _ in range(8))
        while run_id in ids:
            run_id = "".join(rng.choice(alphabet) for _ in range(8))
        ids.add(run_id)
        lmbda, gamma, w_lr = lambdas[i % 4], gammas[(i // 4) % 4], w_lrs[(i // 16) % 3]
        final = fake_metrics(lmbda, gamma, w_lr, rng)
        config_values = {"lambda": lmbda, "gamma": gamma, "w_lr": w_lr, "seed": i}
        encoded = []
        for rec in records:
            kind = rec.WhichOneof("record_type")
            if kind == "run":
                rec = pb.Record.FromString(rec.SerializeToString())
                rec.run.run_id = run_id
                rec.run.display_name = f"trial-{i:04d}"
                for item in rec.run.config.update:
                    if item.key in config_values:
                        item.value_json = json.dumps(config_values[item.key])
            elif kind in ("history", "summary"):
                rec = pb.Record.FromString(rec.SerializeToString())
                items = rec.history.item if kind == "history" else rec.summary.update
                for item in items:
                    key = item.key or "/".join(item.nested_key)
                    if key in final:
                        item.value_json = json.dumps(final[key] * (1 + 0.001 * rng.random()))
            # the id also sits in other records (files, telemetry): same length, so a byte swap is safe
            encoded.append(rec.SerializeToString().replace(old_id.encode(), run_id.encode()))
        blob = encode_wandb_log(encoded)
        run_dir = out / f"trial-{i:04d}" / "wandb" / f"offline-run-{stamp}-{run_id}"
        for sub in ("files", "logs", "tmp/code"):
            (run_dir / sub).mkdir(parents=True, exist_ok=True)
        (run_dir / f"run-{run_id}.wandb").write_bytes(blob)
        (run_dir / "files" / "requirements.txt").write_text("torch\n")
        (run_dir.parent / "latest-run").symlink_to(run_dir.name)


def time_load(root: Path, repeat: int, workers: int | None) -> tuple[list[float], list[float], int]:
    """Wall and CPU seconds (this process; children's too when workers > 1) of each load."""
    from lictrain.analysis.analyzer import HyperparameterAnalyzer

    HyperparameterAnalyzer(root, workers=workers).load_results()  # warm-up: imports wandb's protobuf module
    walls, cpus = [], []
    for _ in range(repeat):
        analyzer = HyperparameterAnalyzer(root, workers=workers)
        before = os.times()
        started = time.perf_counter()
        df = analyzer.load_results()
        walls.append(time.perf_counter() - started)
        after = os.times()
        cpus.append(sum(after[:4]) - sum(before[:4]))
    return walls, cpus, len(df)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=20, help="epochs logged per run (history and summary records)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--dir", type=Path, default=None, help="keep the generated runs here (default: a temp dir)")
    ap.add_argument("--workers", type=int, default=2, help="also time this many reader processes (1: skip)")
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="lictrain-bench-"))
    root = args.dir or work / "runs"
    try:
        if args.dir is not None and any(root.glob("trial-*")):
            print(f"reusing the {sum(1 for _ in root.glob('trial-*'))} runs in {root}")
        else:
            if root.exists() and any(root.iterdir()):
                print(f"--dir {root} holds other files; pass an empty or new folder")
                return 2
            started = time.perf_counter()
            template = make_template(work / "template", args.epochs)
            made = time.perf_counter() - started
            started = time.perf_counter()
            clone_runs(template, root, args.runs)
            cloned = time.perf_counter() - started
            size = sum(p.stat().st_size for p in root.rglob("*.wandb"))
            print(f"template: real wandb offline run, {args.epochs} epochs, {template.stat().st_size / 1024:.1f} KiB, "
                  f"{made:.1f} s")
            print(f"cloned {args.runs} runs in {cloned:.1f} s ({size / 2**20:.1f} MiB of .wandb logs)")

        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"machine: {os.cpu_count()} CPUs, load average {load:.1f} before timing")
        median = math.inf
        for workers in [1] + ([args.workers] if args.workers > 1 else []):
            walls, cpus, rows = time_load(root, args.repeat, workers)
            assert rows == args.runs, f"expected {args.runs} rows, got {rows}"
            median = min(median, statistics.median(walls))
            print(f"load_results warm, {workers} process(es): wall median {statistics.median(walls):.3f} s "
                  f"(min {min(walls):.3f}), CPU median {statistics.median(cpus):.3f} s over {args.repeat} runs "
                  f"({statistics.median(walls) / args.runs * 1e3:.2f} ms/run; goal < {GOAL_S:.1f} s for 1,000)")

        cold = subprocess.run(
            [sys.executable, "-c", "import time, sys; t0 = time.perf_counter(); "
             "from lictrain.analysis.analyzer import HyperparameterAnalyzer; t1 = time.perf_counter(); "
             "from lictrain.analysis.readers import proto; proto(); t2 = time.perf_counter(); "
             "df = HyperparameterAnalyzer(sys.argv[1]).load_results(); t3 = time.perf_counter(); "
             "print(f'{t1 - t0:.3f} {t2 - t1:.3f} {t3 - t2:.3f} {len(df)}')", str(root)],
            capture_output=True, text=True, check=True,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")})
        imp_pandas, imp_wandb, first, cold_rows = cold.stdout.split()
        print(f"cold, fresh interpreter: import of the analyzer (pandas, numpy) {float(imp_pandas):.3f} s, "
              f"of wandb's protobuf module {float(imp_wandb):.3f} s, first load_results {float(first):.3f} s "
              f"({cold_rows} rows)")
        if args.check and median >= GOAL_S * args.runs / 1000:
            print("FAIL: goal missed")
            return 1
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
