"""RL post-training of flow policies (docs/ALGORITHMS.md sections 1-2).

Data path: rollout.py (grouped rollouts, stochastic sampling from vla.policy.sampling)
-> advantages.py (GRPO group normalisation, dynamic sampling, GAE) -> grpo.py / ppo.py
(one update each, built from update.py and losses.py) -> trainer.py (the `vla rl` loop,
checkpoint.py for exact resume, plots.py). heads.py holds the value head and head storage.
"""
