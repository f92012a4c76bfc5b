"""Loaders of other projects' checkpoints into this project's policy classes: lerobot pi0 / pi0.5
and openpi pi0 / pi0.5 (pretrained.py, pi0_names.py), lerobot SmolVLA (smolvla_load.py,
smolvla_names.py), with what they share (lerobot_metadata.py, weight_names.py, weights.py); and the
way back, `vla export --format lerobot` (lerobot_export.py, lerobot_export_config.py, lerobot_processors.py),
which reads the same name tables backwards.
vla.policy.registry.load_policy is the entry point; nothing below vla/policy/registry.py imports this."""
