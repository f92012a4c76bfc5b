"""Tiny pi0 / pi0.5 / SmolVLA checkpoints in the published layouts, and the setup the loader tests share.

tests/policy/fixtures/lerobot_{pi0,pi05} were written by lerobot 0.4.4 itself
(scripts/make_lerobot_reference.py): its save_pretrained layout, tensor names
and shapes, plus lerobot's action chunks for fixed inputs and noise; lerobot_smolvla likewise
(scripts/make_lerobot_smolvla_reference.py). lift_checkpoint and the Lift / eval / rl / train
runs below work for all three kinds.
"""

import json
import os
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from vla.policy.registry import load_policy

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).resolve().parents[2]
LEROBOT_PYTHON = os.environ.get("VLA_LEROBOT_PYTHON")
EXTRA_PATH = os.environ.get("VLA_LEROBOT_PYTHONPATH", "")
requires_lerobot = pytest.mark.skipif(not LEROBOT_PYTHON, reason="VLA_LEROBOT_PYTHON is not set (a Python with lerobot 0.4.4)")


def fixture(kind: str) -> Path:
    return FIXTURES / f"lerobot_{kind}"


def load_reference(root: Path, **kw):
    """The policy in a reference directory (checkpoint/ and tokenizer/ side by side)."""
    return load_policy(root / "checkpoint", tokenizer_path=str(root / "tokenizer"), **kw)


def copy_fixture(kind: str, dest: Path) -> Path:
    shutil.copytree(fixture(kind), dest)
    return dest


def reference_batch(root: Path) -> tuple[dict, dict]:
    ref = load_file(str(root / "reference.safetensors"))
    batch = {"observation.images." + k[len("image.observation.images."):]: v for k, v in ref.items() if k.startswith("image.")}
    batch["observation.state"] = ref["state"]
    batch["task"] = json.loads((root / "inputs.json").read_text())["tasks"]
    return batch, ref


def assert_training_losses_match(policy, batch: dict, ref: dict) -> None:
    """lerobot's training forward with fixed noise and time: per-element (v - u)^2 (docs/PRETRAINED.md)."""
    x0, noise, t = ref["train_actions"], ref["noise"], ref["train_time"]
    x_t = t[:, None, None] * noise + (1 - t[:, None, None]) * x0
    with torch.no_grad():
        cache, state_token = policy.encode_observation(batch)
        losses = (noise - x0 - policy.velocity(cache, state_token, x_t, t)) ** 2
    assert torch.allclose(losses, ref["train_losses"], rtol=1e-5, atol=1e-4)


def load_for_finetuning(kind: str, **options):
    """The fixture's policy with fine-tuning options applied, in train mode, and its reference batch
    carrying the reference's training actions; (policy, batch, ref)."""
    from vla.policy.finetune import apply_finetune_options

    root = fixture(kind)
    policy = load_reference(root)
    for key, value in options.items():
        setattr(policy.config, key, value)
    apply_finetune_options(policy)
    batch, ref = reference_batch(root)
    batch["action"] = ref["train_actions"][..., :5]
    return policy.train(), batch, ref


def edit_weights(path: Path, edit) -> None:
    weights = load_file(str(path))
    edit(weights)
    save_file(weights, str(path))


def to_openpi_layout(lerobot_dir: Path, dest: Path) -> Path:
    """openpi's PyTorch layout: no `model.` prefix, pre-4.52 PaliGemma names, assets/<name>/norm_stats.json."""
    dest.mkdir(parents=True)
    kind = json.loads((lerobot_dir / "config.json").read_text())["type"]
    weights = {}
    for key, value in load_file(str(lerobot_dir / "model.safetensors")).items():
        key = key[len("model."):]
        key = key.replace("paligemma.model.language_model.", "paligemma.language_model.model.")
        key = key.replace("paligemma.model.vision_tower.", "paligemma.vision_tower.")
        key = key.replace("paligemma.model.multi_modal_projector.", "paligemma.multi_modal_projector.")
        key = key.replace("paligemma.lm_head.", "paligemma.language_model.lm_head.")
        key = key.replace("action_time_mlp_", "time_mlp_")  # openpi's pi0 name
        weights[key] = value
    save_file(weights, str(dest / "model.safetensors"))
    stats_file = next(lerobot_dir.glob("policy_preprocessor_step_*_normalizer_processor.safetensors"))
    stats = load_file(str(stats_file))
    norm = {name: {s: stats[f"{feat}.{s}"].tolist() for s in ("mean", "std", "q01", "q99")}
            for name, feat in (("state", "observation.state"), ("actions", "action"))}
    (dest / "assets" / "tiny_robot").mkdir(parents=True)
    (dest / "assets" / "tiny_robot" / "norm_stats.json").write_text(json.dumps({"norm_stats": norm}))
    assert kind in ("pi0", "pi05")
    return dest


def lift_checkpoint(kind: str, dest: Path) -> Path:
    """The lerobot fixture re-labelled for robosuite Lift (agentview 64 px, state 8, action 7), tokenizer inside.

    The weights stay lerobot's (their padded widths, 8, fit Lift's dims); only features and stats change."""
    ck = shutil.copytree(fixture(kind) / "checkpoint", dest)
    shutil.copytree(fixture(kind) / "tokenizer", ck / "tokenizer")
    cfg = json.loads((ck / "config.json").read_text())
    cfg["input_features"] = {"observation.images.agentview": {"type": "VISUAL", "shape": [3, 64, 64]},
                             "observation.state": {"type": "STATE", "shape": [8]}}
    cfg["output_features"] = {"action": {"type": "ACTION", "shape": [7]}}
    (ck / "config.json").write_text(json.dumps(cfg))
    g = torch.Generator().manual_seed(0)
    stats = {}
    for feature, dim in (("observation.state", 8), ("action", 7)):
        stats.update({f"{feature}.mean": torch.zeros(dim), f"{feature}.std": torch.ones(dim),
                      f"{feature}.min": -torch.ones(dim), f"{feature}.max": torch.ones(dim),
                      f"{feature}.q01": -torch.ones(dim) + 0.01 * torch.rand(dim, generator=g),
                      f"{feature}.q99": torch.ones(dim)})
    for f in ck.glob("*normalizer_processor.safetensors"):
        save_file(stats, str(f))
    return ck


# ------------------------------------------------------------------ lerobot run live
def lerobot_env() -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    if EXTRA_PATH:
        env["PYTHONPATH"] = EXTRA_PATH
    return env


@lru_cache(maxsize=1)
def _lerobot_probe() -> tuple[int, str]:
    probe = subprocess.run([LEROBOT_PYTHON, "-c", "import transformers, lerobot"], env=lerobot_env(), capture_output=True,
                           text=True)
    return probe.returncode, probe.stderr


def run_reference_script(script: str, out: Path, *args: str) -> Path:
    """Run scripts/<script> with lerobot's Python into out (skips when that Python cannot import
    transformers beside lerobot: set VLA_LEROBOT_PYTHONPATH, see test_pretrained_lerobot_parity.py)."""
    returncode, stderr = _lerobot_probe()
    if returncode:
        pytest.skip(f"{LEROBOT_PYTHON} cannot import transformers beside lerobot (set VLA_LEROBOT_PYTHONPATH, "
                    f"see test_pretrained_lerobot_parity.py's docstring): {stderr.strip().splitlines()[-1:]}")
    run = subprocess.run([LEROBOT_PYTHON, str(REPO / "scripts" / script), str(out), *args], env=lerobot_env(),
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    return out


def assert_actions_match(policy, root: Path, atol: float = 1e-5) -> tuple[dict, dict]:
    """The policy's action chunk for the reference inputs and initial noise is the reference's; (batch, ref)."""
    batch, ref = reference_batch(root)
    actions = policy.predict_action_chunk(batch, noise=ref["noise"])
    assert actions.shape == ref["actions"].shape
    assert (actions - ref["actions"]).abs().max() < atol
    return batch, ref


# ------------------------------------------------------------------ robosuite Lift, vla eval / rl / train
def act_and_sample_on_lift(kind: str, tmp_path: Path, lift_obs):
    """Load the kind's Lift checkpoint the way `vla rl / eval` do, predict a chunk on two Lift observations
    and step the env with it; then a Flow-SDE chain in the env's 7 action dims whose log-prob, recomputed
    with gradients, matches and reaches the weights. Returns (policy, batch, sample, generator)."""
    from vla.policy.observation import observations_to_batch
    from vla.policy.sampling import chain_log_prob, sample_chain

    env, obs = lift_obs
    policy = load_policy(lift_checkpoint(kind, tmp_path / "ck"))  # the path `vla rl/eval` take
    batch = observations_to_batch([obs, obs], policy.config.cameras)
    chunk = policy.predict_action_chunk(batch)
    assert chunk.shape == (2, policy.config.chunk_size, 7) and chunk.isfinite().all()
    env.step(chunk[0, 0].numpy())
    g = torch.Generator().manual_seed(0)
    sample = sample_chain(policy, batch, mode="sde", sde_mode="joint", noise_level=0.5, generator=g)
    assert sample.chain.shape == (2, policy.config.num_inference_steps + 1, policy.config.chunk_size, 7)
    lp = chain_log_prob(policy, batch, sample.chain, sample.step_mask, mode="sde", noise_level=0.5)
    assert torch.allclose(lp, sample.log_prob, rtol=1e-4, atol=1e-3)
    lp.sum().backward()
    assert policy.action_out_proj.weight.grad.abs().sum() > 0
    return policy, batch, sample, g


def check_vla_eval_runs(kind: str, tmp_path: Path) -> None:
    """`vla eval` on one short Lift episode with the kind's Lift checkpoint."""
    from vla.config import EnvConfig, EvalConfig
    from vla.eval.evaluate import run_eval

    ck = lift_checkpoint(kind, tmp_path / "ck")
    cfg = EvalConfig(policy=str(ck), output_dir=str(tmp_path / "eval"), n_episodes=1, n_envs=1, n_videos=0,
                     env=EnvConfig(max_episode_steps=6), num_threads=1)
    run_eval(cfg, progress=False)
    info = json.loads((tmp_path / "eval" / "eval_info.json").read_text())
    assert len(info["per_episode"]) == 1 and "pc_success" in info["aggregated"]


def run_rl_on_lift(kind: str, tmp_path: Path, algo: str):
    """One `vla rl` iteration on six-step Lift episodes from the kind's Lift checkpoint; (checkpoint, saved policy)."""
    from vla.config import RLConfig
    from vla.rl.trainer import train_rl

    ck = lift_checkpoint(kind, tmp_path / "ck")
    cfg = RLConfig(algo=algo, policy=str(ck), output_dir=str(tmp_path / "rl"), iterations=1, n_groups=1,
                   group_size=2, n_envs=2, epochs=1, minibatch_size=4, dynamic_sampling=False, kl_coef=0.01)
    cfg.env.max_episode_steps = 6
    cfg.eval.n_episodes = 0
    train_rl(cfg, progress=False)
    record = json.loads((tmp_path / "rl" / "history.json").read_text())["history"][0]
    assert record["env_steps"] == 12 and record["optimizer_steps"] >= 1
    assert torch.isfinite(torch.tensor([record["old_log_prob"], record["entropy"]])).all()
    return ck, load_policy(tmp_path / "rl" / "checkpoints" / "last" / "policy")


def train_from_checkpoint(kind: str, tmp_path: Path):
    """Two `vla train --policy.init=<the kind's Lift checkpoint> --policy.train_expert_only=true` steps on a
    random dataset; (trained policy, source policy)."""
    pytest.importorskip("pyarrow")
    from tests.data.helpers import random_episodes, write_dataset
    from vla.config import TrainConfig
    from vla.policy.config import PolicyConfig
    from vla.train.sft import train

    data = write_dataset(tmp_path / "ds", random_episodes(seed=1, lengths=(6, 6)))
    ck = lift_checkpoint(kind, tmp_path / "ck")
    cfg = TrainConfig(dataset=str(data), output_dir=str(tmp_path / "run"), steps=2, batch_size=2, warmup_steps=1,
                      save_every=0, image_shift=0, num_threads=1,
                      policy=PolicyConfig(init=str(ck), train_expert_only=True))
    train(cfg, progress=False)
    return load_policy(tmp_path / "run" / "policy"), load_policy(ck)
