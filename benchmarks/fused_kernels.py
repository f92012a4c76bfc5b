"""Benchmark the fused kernels against torch eager and torch.compile (see vla.kernels.benchmark).

    python benchmarks/fused_kernels.py --sizes tiny,pi0
"""

import sys

from vla.kernels.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
