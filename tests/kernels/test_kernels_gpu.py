"""bf16 on a CUDA GPU (the interpreter gets bf16 wrong): every op, outputs and gradients.

fp32 and fp64 on the GPU are covered by the other test files, whose `device`
fixture picks CUDA when it is present.
"""

import pytest
import torch
from kernel_checks import close, graph_leaves, op_cases

pytestmark = pytest.mark.gpu

OPS = sorted(op_cases("cpu"))
NOT_DIFFERENTIABLE = {"flow_sde_step", "flow_interpolate", "euler_projection"}  # inference ops
BF16 = dict(atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("op", OPS)
def test_bf16_outputs_match_reference(op):
    _, _, call = op_cases("cuda", torch.bfloat16)[op]
    for a, b in zip(call("triton"), call("reference")):
        close(a.float(), b.float(), what=op, **BF16)


@pytest.mark.parametrize("op", sorted(set(OPS) - NOT_DIFFERENTIABLE))
def test_bf16_gradients_match_reference(op):
    def run(variant):
        outs = [o for o in op_cases("cuda", torch.bfloat16, requires_grad=True)[op][2](variant) if o.requires_grad]
        leaves = graph_leaves(outs)
        torch.autograd.backward(outs, [torch.ones_like(o) for o in outs])
        return [t.grad for t in leaves]

    got, want = run("triton"), run("reference")
    assert len(got) == len(want) > 0
    for a, b in zip(got, want):
        close(a.float(), b.float(), what=op, **BF16)


def test_pi0_sized_norm_bf16():
    from vla.kernels import adaptive_norm as N

    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(32, 816, 1024, device="cuda", generator=g, dtype=torch.bfloat16)
    scale, shift = (0.1 * torch.randn(32, 1024, device="cuda", generator=g, dtype=torch.bfloat16) for _ in range(2))
    close(N.ada_rms_norm_triton(x, None, scale, shift).float(), N.ada_rms_norm_reference(x, None, scale, shift).float(),
          **BF16)
