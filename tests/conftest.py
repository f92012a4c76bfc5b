import os

# Offline and headless everywhere in the test-suite.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MUJOCO_GL", "egl")

import torch  # noqa: E402

# Triton builds its language helpers when first imported; without a GPU the kernel
# tests run them through the interpreter, which must be chosen before that import.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
