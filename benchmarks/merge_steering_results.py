"""Merge several `rl_steering.py` outputs into one steering_results.json (and its plot), re-aggregated.

For seeds of one arm that ran in different --output folders (e.g. one seed continued by --extend-from
after an interruption). Refuses a merge that would hold the same (algo, seed) twice.

    python benchmarks/merge_steering_results.py outputs/bench/steering/can5_residual/steering_results.json \
        outputs/bench/steering/can5_residual_s2/steering_results.json --output benchmarks/results/x.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402  (benchmarks/common.py)
from rl_steering import aggregate, plot  # noqa: E402

from vla.atomic_io import write_json_atomic  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="+", help="steering_results.json files written by rl_steering.py")
    p.add_argument("--output", required=True, help="the merged .json; its plot is written beside it as .png")
    p.add_argument("--title", default="")
    args = p.parse_args()
    sources = [json.loads(Path(r).read_text()) for r in args.results]
    runs = [run for source in sources for run in source["runs"]]
    keys = [(r["algo"], r["seed"]) for r in runs]
    if len(set(keys)) != len(keys):
        p.error(f"the inputs repeat an (algo, seed): {sorted(keys)}")
    out = Path(args.output)
    merged = {"machine": machine(), "merged_from": {r: s["args"] for r, s in zip(args.results, sources)},
              "by_algo": aggregate(runs), "runs": runs}
    write_json_atomic(out, merged)
    plot(runs, out.with_suffix(".png"), args.title or f"steering a frozen {sources[0]['args']['task']} policy")
    print(json.dumps(merged["by_algo"], indent=1))


if __name__ == "__main__":
    main()
