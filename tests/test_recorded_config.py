"""A run's config.json is read as what the run did: keys added since it was recorded are filled
in only where their absence has one known meaning (experiments.base.KEYS_ADDED_LATER)."""

from __future__ import annotations

import json

import pytest

from experiments.base import KEYS_ADDED_LATER, base_config
from runtime.config import to_json
from runtime.errors import UsageError
from runtime.workdir import check_workdir, run_config


def recorded_without(keys, tmp_path):
    """A run directory whose config.json is today's base config less the dotted `keys`."""
    recorded = json.loads(to_json(base_config()))
    for dotted in keys:
        *sections, leaf = dotted.split(".")
        node = recorded
        for section in sections:
            node = node[section]
        del node[leaf]
    (tmp_path / "config.json").write_text(json.dumps(recorded))
    return tmp_path


def test_every_key_added_later_is_a_key_of_the_base_config_with_its_default_type():
    today = base_config()
    for dotted, before in KEYS_ADDED_LATER.items():
        default = today
        for part in dotted.split("."):
            default = default[part]
        assert type(before) is type(default), dotted


def test_a_run_older_than_keys_with_a_known_earlier_meaning_reads_and_resumes_as_itself(tmp_path):
    old_run = recorded_without(KEYS_ADDED_LATER, tmp_path)
    today = to_json(base_config())
    assert run_config(str(old_run)).to_dict() == json.loads(today)
    check_workdir(str(old_run), today)  # resuming it is not "a different config"


def test_a_run_older_than_a_key_whose_default_changed_is_refused(tmp_path):
    old_run = recorded_without(["data.mqar.answers"], tmp_path)
    with pytest.raises(UsageError, match="predates config key data.mqar.answers"):
        run_config(str(old_run))
