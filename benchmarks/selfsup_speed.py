"""Training throughput of the self-supervised (Monodepth2) trainer on CPU: triples/s and frames/s per optimiser step.

    .venv/bin/python benchmarks/selfsup_speed.py                       # the default configurations below, 1 thread
    .venv/bin/python benchmarks/selfsup_speed.py --configs tiny --iters 5 --threads 2 --json speed.json

Timed: one training step exactly as avs_depth_core.train.monodepth2 runs it (training_loss: augmentation, depth and pose
networks, the multi-scale photometric + smoothness loss; then backward and the Adam step) on random triples already in
memory, so bag reading is not included; median of --iters after --warmup steps. A triple is one training sample
(target + two source frames); frames/s counts the 3 frames of each. Also shown: the share of the step spent in the loss
(forward and backward), which dominates at small network widths.
Configurations: tiny (64x128, ResNet-18 at 1/8 width: the unit tests), bench (64x128 at 1/4 width: scaling_ablation.py
--quick), paper (192x640, full ResNet-18, Monodepth2's default input).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avs_depth_core.losses.photometric import Monodepth2Loss
from avs_depth_core.models.monodepth2 import Monodepth2Config
from avs_depth_core.train.monodepth2 import Monodepth2Model, batch_intrinsics, training_loss
from avs_depth_core.train.runtime import Runtime

CONFIGS = {
    "tiny": {"height": 64, "width": 128, "encoder_width": 8, "decoder_channels": [4, 8, 16, 16, 32], "batch_size": 12},
    "bench": {"height": 64, "width": 128, "encoder_width": 16, "decoder_channels": [8, 16, 32, 32, 64], "batch_size": 12},
    "paper": {"height": 192, "width": 640, "batch_size": 12},
}


def random_batch(config: Monodepth2Config) -> dict:
    b, h, w = config.batch_size, config.height, config.width
    K = torch.tensor([[0.58 * w, 0.0, 0.5 * w], [0.0, 1.92 * h, 0.5 * h], [0.0, 0.0, 1.0]])  # KITTI's normalised K
    return {"rgb": torch.rand(b, 3, 3, h, w), "K": K.expand(b, 3, 3).clone(), "stamp_ns": torch.arange(b)}


def time_config(name: str, values: dict, iters: int, warmup: int) -> dict:
    config = Monodepth2Config.from_dict(values)
    torch.manual_seed(0)
    model = Monodepth2Model(config).train()
    criterion = Monodepth2Loss.from_config(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    runtime = Runtime(torch.device("cpu"))
    batch = random_batch(config)
    steps, losses, cpu = [], [], []
    for i in range(warmup + iters):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = training_loss(model, criterion, batch, config, runtime)
        optimizer.zero_grad(set_to_none=True)
        result.loss.backward()
        optimizer.step()
        elapsed = time.perf_counter() - start
        if i >= warmup:
            steps.append(elapsed)
            cpu.append(time.process_time() - start_cpu)
            # The loss alone, forward and backward, on detached network outputs.
            disps = {k: v.detach().requires_grad_() for k, v in model.depth(batch["rgb"][:, 1]).items()}
            t0 = time.perf_counter()
            target, sources = batch["rgb"][:, 1], {-1: batch["rgb"][:, 0], 1: batch["rgb"][:, 2]}
            poses = {o: torch.eye(4).expand(config.batch_size, 4, 4) for o in sources}
            K4, inv_K4 = batch_intrinsics(batch["K"], (config.height, config.width), batch["stamp_ns"])
            criterion(target, sources, disps, poses, K4, inv_K4).loss.backward()
            losses.append(time.perf_counter() - t0)
    step = statistics.median(steps)
    params = sum(p.numel() for p in model.parameters())
    return {"config": name, "height": config.height, "width": config.width, "batch": config.batch_size,
            "params_m": round(params / 1e6, 2), "step_ms": round(1000 * step, 1),
            "cpu_ms": round(1000 * statistics.median(cpu), 1),
            "triples_per_s": round(config.batch_size / step, 2), "frames_per_s": round(3 * config.batch_size / step, 2),
            "loss_share": round(statistics.median(losses) / step, 2)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=["tiny", "bench", "paper"])
    p.add_argument("--iters", type=int, default=5, help="timed steps per configuration (median reported)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--batch-size", type=int, default=None, help="override every configuration's batch (default 12)")
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"Monodepth2 training step on CPU, {torch.get_num_threads()} thread(s), torch {torch.__version__}, "
          f"median of {args.iters} steps after {args.warmup} warm-up")
    print(f"{'config':<7} {'input':>8} {'batch':>5} {'params M':>8} {'step ms':>8} {'cpu ms':>8} {'triples/s':>9} "
          f"{'frames/s':>9} {'loss share':>10}")
    rows = []
    for name in args.configs:
        values = dict(CONFIGS[name])
        if args.batch_size:
            values["batch_size"] = args.batch_size
        r = time_config(name, values, args.iters, args.warmup)
        rows.append(r)
        print(f"{r['config']:<7} {r['height']:>3}x{r['width']:<4} {r['batch']:>5} {r['params_m']:>8} {r['step_ms']:>8} "
              f"{r['cpu_ms']:>8} {r['triples_per_s']:>9} {r['frames_per_s']:>9} {r['loss_share']:>10}")
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
