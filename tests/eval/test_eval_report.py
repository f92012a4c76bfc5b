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
    assert info["per_episode"][1] == {"episode_ix": 1, "seed": 11, "task": "lift the red cube",
                                      "task_id": "lift the red cube", "init_state_index": None,
                                      "max_episode_steps": 0, "sum_reward": 1.0, "max_reward": 1.0, "success": False,
                                      "steps": 41, "infra_failure": False}
    assert info["protocol"]["seeds"] == [10, 14]
    table = format_table(info)
    assert "open the door" in table and "overall" in table and "60.0" in table


def test_libero_tasks_with_one_instruction_keep_their_rows_in_suite_order():
    """libero_90 has tasks that share an instruction (other kitchens): rows are per task, not per text."""
    episodes = []
    for n, index in enumerate((11, 7, 2)):
        for i in range(2):
            e = EpisodeResult(2 * n + i, 100 + i, "open the top drawer of the cabinet", success=i == 0, steps=5,
                              sum_reward=0.0, max_reward=0.0, task_id=f"libero_90/{index}", init_state_index=i,
                              max_episode_steps=400, suite="libero_90", task_index=index,
                              task_name=f"KITCHEN_SCENE{index}_open_the_top_drawer_of_the_cabinet")
            episodes.append(e)
    info = build_eval_info(episodes, eval_seconds=6.0, seed=100, video_paths=[])
    assert [t["task_id"] for t in info["per_task"]] == ["libero_90/2", "libero_90/7", "libero_90/11"]
    assert all(t["n_episodes"] == 2 and t["max_episode_steps"] == 400 for t in info["per_task"])
    assert info["per_episode"][0]["task_index"] == 11 and info["per_episode"][0]["init_state_index"] == 0
    assert info["protocol"]["seeds"] == [100, 101] and "every task" in info["protocol"]["seed_use"]
    assert "libero_90/7: open the top drawer" in format_table(info)


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
