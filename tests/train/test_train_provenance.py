"""`vla train` carries the dataset's provenance into the checkpoint: the image convention of its frames
and the LIBERO tasks whose evaluation initial states started demos (docs/LIBERO.md)."""

import json

import pytest

from tests.data.helpers import random_episodes, write_dataset
from vla.config import ConfigError, TrainConfig
from vla.data import LeRobotDataset, DatasetError
from vla.policy.config import PolicyConfig
from vla.policy.registry import load_policy
from vla.train.sft import data_provenance, policy_for_dataset

LEAKED = {"image_convention": "rot180", "init_states": "evaluation",
          "evaluation_init_state_tasks": ["libero_spatial/0"], "seed": 0}


def _dataset(tmp_path, provenance=None):
    return LeRobotDataset(write_dataset(tmp_path / "ds", random_episodes(lengths=(3,)), provenance=provenance))


def test_checkpoint_records_the_datasets_convention_and_evaluation_states(tmp_path):
    dataset = _dataset(tmp_path, LEAKED)
    assert json.loads((dataset.root / "meta/info.json").read_text())["vla_provenance"] == LEAKED
    cfg = TrainConfig(policy=PolicyConfig(depth=1, vision_layers=1))
    policy = policy_for_dataset(cfg, dataset)
    assert (policy.config.image_convention, policy.config.train_eval_init_states) == ("rot180", ["libero_spatial/0"])
    assert cfg.policy.image_convention == "rot180"  # the run's resolved config says it too
    policy.save_pretrained(tmp_path / "policy")
    loaded = load_policy(tmp_path / "policy").config
    assert (loaded.image_convention, loaded.train_eval_init_states) == ("rot180", ["libero_spatial/0"])


def test_unrecorded_provenance_stays_unknown_unless_declared(tmp_path):
    dataset = _dataset(tmp_path)  # a dataset from before provenance was recorded, or from elsewhere
    assert dataset.provenance == {}
    assert data_provenance(PolicyConfig(), dataset) == ("", None)
    assert data_provenance(PolicyConfig(image_convention="upright"), dataset) == ("upright", None)


def test_a_declaration_contradicting_the_dataset_is_refused(tmp_path):
    dataset = _dataset(tmp_path, LEAKED)
    with pytest.raises(ConfigError, match="policy.image_convention='upright', but dataset .* records its images as "
                                          "'rot180'"):
        data_provenance(PolicyConfig(image_convention="upright"), dataset)
    with pytest.raises(ValueError, match="policy.image_convention: unknown 'mirrored'"):
        PolicyConfig(image_convention="mirrored")


def test_malformed_provenance_is_named(tmp_path):
    root = write_dataset(tmp_path / "ds", random_episodes(lengths=(3,)), provenance=LEAKED)
    info = json.loads((root / "meta/info.json").read_text())
    (root / "meta/info.json").write_text(json.dumps({**info, "vla_provenance": "rot180"}))
    with pytest.raises(DatasetError, match="'vla_provenance' must be an object"):
        LeRobotDataset(root)
    (root / "meta/info.json").write_text(json.dumps({**info, "vla_provenance": {**LEAKED,
                                                                                "evaluation_init_state_tasks": 3}}))
    with pytest.raises(ConfigError, match="evaluation_init_state_tasks must be a list"):
        data_provenance(PolicyConfig(), LeRobotDataset(root))
