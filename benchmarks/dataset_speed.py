"""Dataset throughput: supervised samples/s from a bag through the echo STFT to batches.

Builds a synthetic bag (256x512 RGB + 32FC1 depth + CameraInfo + a BV2-length binaural echo per frame), then times
SupervisedBagDataset + DataLoader over whole epochs:
  first pass  - dataset construction (reads and decodes the bag, builds the cache) plus one epoch;
  cached      - a fresh dataset on the built cache (as the next run sees it): its first epoch (including DataLoader
                worker start-up) and its next epoch (persistent workers), per worker count;
  window      - the cache holding echo windows instead of features, so the STFT and resize run per item.
Target: the loader is never the bottleneck of CPU training, 200 samples/s or more.

  .venv/bin/python benchmarks/dataset_speed.py [--frames 200] [--batch-size 8] [--workers 0,2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from avs_depth_core.audio import BATVISION_CHIRP
from avs_depth_core.data import topics
from avs_depth_core.data.bag import BagWriter, make_msg
from avs_depth_core.data.datasets import SupervisedBagDataset
from avs_depth_core.data.messages import camera_info_fields, echo_fields, image_fields


def write_bag(path: Path, frames: int, size: tuple[int, int], echo_samples: int) -> None:
    rng = np.random.default_rng(0)
    h, w = size
    K = np.array([[w / 2, 0, w / 2], [0, w / 2, h / 2], [0, 0, 1]])
    ramp = np.linspace(0.5, 12.0, w, dtype=np.float32)[None].repeat(h, 0)
    with BagWriter(path) as writer:
        for i in range(frames):
            t = 1_000_000_000 + i * 100_000_000
            rgb = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
            depth = ramp + np.float32(0.01 * i)
            echo = rng.uniform(-0.5, 0.5, (2, echo_samples)).astype(np.float32)
            writer.write(topics.CAMERA_INFO, make_msg(topics.CAMERA_INFO_TYPE, t, "cam", camera_info_fields(K, w, h)),
                         topics.CAMERA_INFO_TYPE)
            writer.write(topics.IMAGE, make_msg(topics.IMAGE_TYPE, t, "cam", image_fields(rgb, "rgb8")), topics.IMAGE_TYPE)
            writer.write(topics.DEPTH, make_msg(topics.IMAGE_TYPE, t, "cam", image_fields(depth, "32FC1")), topics.IMAGE_TYPE)
            writer.write(topics.ECHO, make_msg(topics.ECHO_TYPE, t, "mic", echo_fields(echo, 44_100, BATVISION_CHIRP)),
                         topics.ECHO_TYPE)


def loader(dataset: SupervisedBagDataset, batch_size: int, workers: int) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers, persistent_workers=workers > 0,
                      generator=torch.Generator().manual_seed(0))


def epoch(batches: DataLoader) -> tuple[int, float]:
    start = time.perf_counter()
    n = 0
    for batch in batches:
        n += batch["rgb"].shape[0]
    return n, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--size", default="256x512", help="HxW of the recorded images and of the dataset")
    parser.add_argument("--echo-samples", type=int, default=20_000, help="samples per channel (BV2 recordings: 20000)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", default="0,2", help="comma-separated DataLoader worker counts for the cached epochs")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads of the main process (0: torch's default; workers always use 1)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    size = tuple(int(v) for v in args.size.split("x"))
    workers = [int(w) for w in args.workers.split(",")]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.frames} frames at {size[0]}x{size[1]}, "
          f"echo 2x{args.echo_samples}, batch {args.batch_size}")
    with tempfile.TemporaryDirectory(prefix="avs-dataset-speed-") as tmp:
        bag, cache = Path(tmp) / "bag", Path(tmp) / "cache"
        start = time.perf_counter()
        write_bag(bag, args.frames, size, args.echo_samples)
        bag_mb = sum(f.stat().st_size for f in bag.iterdir()) / 2**20
        print(f"wrote bag: {bag_mb:.0f} MiB in {time.perf_counter() - start:.1f} s")

        def dataset(cache_features: bool) -> SupervisedBagDataset:
            return SupervisedBagDataset(bag, "all", image_size=size, cache_dir=cache, cache_features=cache_features,
                                        progress=False, verbose=False)

        rows = []
        for label, features in (("features", True), ("window", False)):
            start = time.perf_counter()
            ds = dataset(features)
            build = time.perf_counter() - start
            n, t = epoch(loader(ds, args.batch_size, 0))
            cache_mb = sum(f.stat().st_size for f in ds.cache.path.iterdir()) / 2**20
            rows.append((f"first pass ({label} cache, {cache_mb:.0f} MiB)", 0, n, build + t))
            for w in workers:
                batches = loader(dataset(features), args.batch_size, w)
                n, t = epoch(batches)
                rows.append((f"cached, first epoch ({label})", w, n, t))
                n, t = epoch(batches)  # workers already started
                rows.append((f"cached, next epoch ({label})", w, n, t))
        print(f"{'pass':<44}{'workers':>8}{'samples':>9}{'seconds':>9}{'samples/s':>11}")
        for label, w, n, t in rows:
            print(f"{label:<44}{w:>8}{n:>9}{t:>9.2f}{n / t:>11.1f}")


if __name__ == "__main__":
    main()
