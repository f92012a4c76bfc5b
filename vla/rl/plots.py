"""PNG plot of success over RL iterations (training rollouts, and evaluations when there are any)."""

from __future__ import annotations

import os
from pathlib import Path


def plot_success(history: list[dict], path: Path, title: str = "", x: str = "iteration") -> None:
    """x: the history key on the horizontal axis, "iteration" (shown from 1) or "env_steps"."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    def at(h: dict) -> float:
        return h[x] + 1 if x == "iteration" else h[x]

    train = [(at(h), 100 * h["success_rate"]) for h in history if "success_rate" in h]
    if train:
        ax.plot(*zip(*train), marker="o", ms=3, label="training rollouts (stochastic)")
    evals = [(at(h), 100 * h["eval_success_rate"]) for h in history if "eval_success_rate" in h]
    if evals:
        ax.plot(*zip(*evals), marker="s", label="evaluation (deterministic)")
    ax.set_xlabel("RL iteration" if x == "iteration" else x.replace("_", " "))
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
