"""SRPO: self-referential progress rewards from a world-model encoder (docs/ALGORITHMS.md section 3).

frames.py (a trajectory's video) -> encoders.py (policy vision / small video encoder / V-JEPA 2;
world_model.py and train_world_model.py for the small one) -> reward.py (DBSCAN centres, distances,
the reward formulas) -> progress.py (a batch's rewards, checks, logs) -> srpo.py (the update: GRPO on
those rewards). setup.py wires it into `vla rl`.
"""
