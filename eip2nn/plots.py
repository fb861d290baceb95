"""Figures logged with every run: parity plots and learning curves (PNG)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def parity_plot(parities: dict, path: str | Path, title: str = "") -> Path:
    """Energy (meV/atom, shifted by the reference mean) and force parity, one colour per split.

    parities: {split name: :class:`eip2nn.training.metrics.Parity`}.
    """
    fig, (ax_e, ax_f) = plt.subplots(1, 2, figsize=(10, 4.5))
    for name, p in parities.items():
        if p.energy_ref.size:
            ax_e.scatter(p.energy_ref, p.energy_pred, s=8, label=name, alpha=0.7)
        if p.force_ref.size:
            ax_f.scatter(p.force_ref, p.force_pred, s=2, label=name, alpha=0.4)
    for ax, unit in ((ax_e, "energy (eV/atom)"), (ax_f, "force component (eV/Å)")):
        lo, hi = ax.get_xlim()
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_xlabel(f"DFT {unit}")
        ax.set_ylabel(f"predicted {unit}")
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def learning_curve_plot(history: list[dict], path: str | Path, title: str = "") -> Path:
    """Training and validation loss per epoch (log scale)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = [h["epoch"] for h in history]
    ax.semilogy(epochs, [h["train_loss"] for h in history], label="train")
    ax.semilogy(epochs, [h["val_loss"] for h in history], label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def confusion_plot(confusion, classes: list[str], path: str | Path, title: str = "") -> Path:
    """Selector confusion matrix: rows true class, columns predicted, counts in the cells."""
    n = len(classes)
    fig, ax = plt.subplots(figsize=(2.5 + 0.9 * n, 2 + 0.8 * n))
    ax.imshow(confusion, cmap="Blues")
    short = [c if len(c) <= 24 else c[:22] + "…" for c in classes]
    ax.set_xticks(range(n), short, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), short, fontsize=8)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(int(confusion[i][j])), ha="center", va="center", fontsize=9)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (closest EIP to DFT)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
