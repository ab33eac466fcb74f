"""Training logs: scalars to TensorBoard and CSV, and the training-curve PNG."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from avs_depth_core.files import atomic_output, save_figure
from avs_depth_core.train.runtime import Runtime


class RunLog:
    """Scalars to TensorBoard (run_dir/tensorboard) and CSV (train_log.csv per step, val_log.csv per epoch), and the
    training curve PNG (run_dir/training_curve.png). Only the main rank writes; on resume the CSVs are appended to.
    """

    def __init__(self, run_dir: Path, runtime: Runtime, purge_step: int | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = runtime.is_main
        self.writer = None
        if self.enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.writer = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=purge_step)
            if purge_step is not None:
                for name in ("train_log.csv", "val_log.csv"):
                    _truncate_csv(self.run_dir / name, purge_step)

    def scalars(self, kind: str, step: int, values: Mapping[str, float], epoch: int) -> None:
        """kind 'train' (per step) or 'val' (per epoch)."""
        if not self.enabled:
            return
        for name, value in values.items():
            self.writer.add_scalar(f"{kind}/{name}", value, step)
        path = self.run_dir / f"{kind}_log.csv"
        row = {"step": step, "epoch": epoch, **{k: float(v) for k, v in values.items()}}
        new = not path.is_file()
        with path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(row))
            if new:
                w.writeheader()
            w.writerow(row)

    def plot(self, train_key: str = "loss", val_keys: Iterable[str] = ("abs_rel", "delta1")) -> Path | None:
        """Training loss per step (with a running mean) and validation metrics per epoch, as one PNG."""
        if not self.enabled:
            return None
        self.writer.flush()
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        train = read_csv(self.run_dir / "train_log.csv")
        val = read_csv(self.run_dir / "val_log.csv")
        val_keys = [k for k in val_keys if val and k in val[0]]
        fig, axes = plt.subplots(1, 1 + len(val_keys), figsize=(5 * (1 + len(val_keys)), 3.6), squeeze=False)
        ax = axes[0, 0]
        if train:
            steps = np.array([r["step"] for r in train])
            loss = np.array([r[train_key] for r in train])
            ax.plot(steps, loss, lw=0.6, alpha=0.5, label=train_key)
            k = len(loss) // 20
            if k > 1:
                ax.plot(steps[k - 1:], np.convolve(loss, np.ones(k) / k, mode="valid"), lw=1.5, label=f"running mean of {k}")
            ax.legend()
        ax.set(xlabel="step", title=f"train {train_key}")
        for ax, key in zip(axes[0, 1:], val_keys, strict=True):
            ax.plot([r["step"] for r in val], [r[key] for r in val], "o-")
            ax.set(xlabel="step", title=f"val {key}")
        for ax in axes[0]:
            ax.grid(alpha=0.3)
        fig.tight_layout()
        try:
            return save_figure(fig, self.run_dir / "training_curve.png", dpi=100)
        finally:
            plt.close(fig)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_csv(path: Path) -> list[dict[str, float]]:
    if not Path(path).is_file():
        return []
    with Path(path).open(newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _truncate_csv(path: Path, from_step: int) -> None:
    """On resume, drop rows from `from_step` on: they were logged after the checkpoint and are logged again."""
    if not path.is_file():
        return
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    # A row cut short by a kill has empty fields; it is dropped with the rest after the checkpoint.
    keep = [r for r in rows if all(v not in (None, "") for v in r.values()) and float(r["step"]) < from_step]
    with atomic_output(path) as tmp, tmp.open("w", newline="") as f:
        if rows:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(keep)


