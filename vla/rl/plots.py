"""PNG plot of success over RL iterations (training rollouts, and evaluations when there are any)."""

from __future__ import annotations

import os
from pathlib import Path


def plot_success(history: list[dict], path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    its = [h["iteration"] + 1 for h in history]
    ax.plot(its, [100 * h["success_rate"] for h in history], marker="o", ms=3, label="training rollouts (stochastic)")
    evals = [(h["iteration"] + 1, h["eval_success_rate"]) for h in history if "eval_success_rate" in h]
    if evals:
        ax.plot(*zip(*[(i, 100 * s) for i, s in evals]), marker="s", label="evaluation (deterministic)")
    ax.set_xlabel("RL iteration")
    ax.set_ylabel("success rate (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title(title)
    fig.tight_layout()
    tmp = path.with_name(".tmp-" + path.name)
    fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
