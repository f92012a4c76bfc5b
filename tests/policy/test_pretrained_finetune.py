"""Fine-tuning a loaded pi0-layout checkpoint: what trains, LoRA merged on save, bf16, checkpointing,
and `vla train --policy.init=PATH`."""

import pytest
import torch

from tests.policy.pretrained_helpers import load_for_finetuning, train_from_checkpoint
from vla.policy.registry import load_policy


def loaded(**options):
    policy, batch, _ = load_for_finetuning("pi0", **options)
    return policy, batch


def grads(policy, batch):
    torch.manual_seed(0)
    loss, _ = policy(batch, noise=torch.randn(2, 5, 8), time=torch.tensor([0.3, 0.7]))
    loss.backward()
    # The prefix stream's final norm feeds no action (only RL value heads read it): no gradient.
    return loss, {n: p.grad for n, p in policy.named_parameters() if p.requires_grad and p.grad is not None}


@pytest.mark.parametrize("option,frozen,trained", [
    ({"train_expert_only": True}, ("vision.", "transformer.vlm.", "language."), ("transformer.expert.", "action_in_proj")),
    ({"freeze_vision": True}, ("vision.",), ("transformer.vlm.", "transformer.expert.", "language.")),
])
def test_frozen_parts_get_no_gradient(option, frozen, trained):
    policy, batch = loaded(**option)
    _, g = grads(policy, batch)
    names = [n for n, _ in policy.named_parameters()]
    assert all(not p.requires_grad for n, p in policy.named_parameters() if n.startswith(frozen))
    for prefix in trained:
        assert any(n.startswith(prefix) and g[n].abs().sum() > 0 for n in g), prefix
    assert len(g) < len(names) and all(g[n].abs().sum() == 0 for n in g if n.startswith(frozen))


def test_gradient_checkpointing_gives_the_same_gradients():
    plain, batch = loaded()
    loss_a, g_a = grads(plain, batch)
    ckpt, _ = loaded(gradient_checkpointing=True)
    loss_b, g_b = grads(ckpt, batch)
    assert torch.allclose(loss_a, loss_b) and g_a.keys() == g_b.keys()
    for name in g_a:
        assert torch.allclose(g_a[name], g_b[name], atol=1e-6, rtol=1e-4), name


def test_lora_trains_adapters_and_saves_merged(tmp_path):
    pytest.importorskip("peft")
    policy, batch = loaded(lora_rank=4)
    trainable = [n for n, p in policy.named_parameters() if p.requires_grad]
    assert any("lora_A" in n for n in trainable) and not any(n.startswith("vision.") for n in trainable)
    assert not any(n.startswith("transformer.vlm.") and "lora_" not in n for n in trainable)
    opt = torch.optim.SGD([p for p in policy.parameters() if p.requires_grad], lr=0.5)
    _, g = grads(policy, batch)
    opt.step()
    policy.eval()
    noise = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(1))
    want = policy.predict_action_chunk(batch, noise=noise)
    policy.save_pretrained(tmp_path / "merged")
    again = load_policy(tmp_path / "merged")  # a plain policy: no peft needed to load it
    assert torch.allclose(again.predict_action_chunk(batch, noise=noise), want, atol=1e-5)
    base = loaded()[0].eval().predict_action_chunk(batch, noise=noise)
    assert (base - want).abs().max() > 1e-4  # the adapters did change the policy


def test_bf16_training_step_is_finite():
    policy, batch = loaded(dtype="bfloat16")
    assert policy.transformer.vlm.layers[0].self_attn.q_proj.weight.dtype == torch.bfloat16
    assert policy.transformer.vlm.layers[0].input_layernorm.weight.dtype == torch.float32
    loss, g = grads(policy, batch)
    assert torch.isfinite(loss) and all(torch.isfinite(v).all() for v in g.values())


def test_vla_train_policy_init(tmp_path):
    out, src = train_from_checkpoint("pi0", tmp_path)
    assert out.config.language == "tokens" and out.config.cameras == ["agentview"]
    assert (tmp_path / "run" / "policy" / "tokenizer" / "tokenizer.json").is_file()
    # Expert trained, VLM frozen.
    assert torch.equal(out.transformer.vlm.layers[0].mlp.up_proj.weight, src.transformer.vlm.layers[0].mlp.up_proj.weight)
    assert not torch.equal(out.transformer.expert.layers[0].mlp.up_proj.weight,
                           src.transformer.expert.layers[0].mlp.up_proj.weight)
