import json

import numpy as np
import pytest

from vla.eval.report import build_eval_info, format_table, write_videos
from vla.eval.runner import EpisodeResult
from vla.eval.stats import wilson_interval


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(29, 50)
    assert lo == pytest.approx(0.4418, abs=1e-3) and hi == pytest.approx(0.7061, abs=1e-3)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)


def _episodes():
    return [EpisodeResult(i, 10 + i, "lift the red cube" if i < 3 else "open the door", success=i % 2 == 0,
                          steps=40 + i, sum_reward=float(i), max_reward=1.0) for i in range(5)]


def test_eval_info_has_lerobot_keys_per_task_and_ci():
    info = build_eval_info(_episodes(), eval_seconds=10.0, seed=10, video_paths=[])
    json.dumps(info)  # serialisable
    assert info["aggregated"]["pc_success"] == pytest.approx(60.0)
    assert info["aggregated"]["eval_ep_s"] == pytest.approx(2.0)
    tasks = {t["task"]: t for t in info["per_task"]}
    assert tasks["lift the red cube"]["n_successes"] == 2 and tasks["open the door"]["n_episodes"] == 2
    assert info["per_episode"][1] == {"episode_ix": 1, "seed": 11, "task": "lift the red cube", "sum_reward": 1.0,
                                      "max_reward": 1.0, "success": False, "steps": 41,
                                      "infra_failure": False}
    table = format_table(info)
    assert "open the door" in table and "overall" in table and "60.0" in table


def test_infra_failures_are_counted_not_scored():
    episodes = _episodes()
    episodes[1].infra_failure = True  # a failure, but the worker's fault: left out of the rate
    episodes[2].infra_failure = True  # even a success before the crash is not scored
    episodes[2].success = True
    info = build_eval_info(episodes, eval_seconds=10.0, seed=10, video_paths=[])
    agg = info["aggregated"]
    assert agg["n_episodes"] == 3 and agg["n_infra_failures"] == 2 and agg["n_successes"] == 2
    assert agg["pc_success"] == pytest.approx(200.0 / 3)
    tasks = {t["task"]: t for t in info["per_task"]}
    assert tasks["lift the red cube"]["n_episodes"] == 1 and tasks["lift the red cube"]["n_infra_failures"] == 2
    assert [e["infra_failure"] for e in info["per_episode"]] == [False, True, True, False, False]
    assert info["protocol"]["n_episodes"] == 5
    assert "infra failures" in format_table(info)


def test_videos_written_atomically(tmp_path):
    ep = _episodes()[0]
    ep.frames = [np.full((64, 64, 3), i * 10, dtype=np.uint8) for i in range(8)]
    paths = write_videos([ep], tmp_path, fps=20)
    assert len(paths) == 1 and paths[0].endswith("episode_000_success.mp4")
    assert [p.name for p in tmp_path.iterdir()] == ["episode_000_success.mp4"]
