import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))

from scaling_ablation import SETTINGS, monodepth2_config, parse_md2_overrides


def test_md2_set_parses_yaml_values_of_monodepth2_keys():
    assert parse_md2_overrides(["frame_interval=2", "smoothness_order=2", "automask=false"]) == {
        "frame_interval": 2, "smoothness_order": 2, "automask": False}


@pytest.mark.parametrize("item", ["frame_intervall=2", "frame_interval", "=2"])
def test_md2_set_rejects_unknown_keys_and_missing_values(item):
    with pytest.raises(SystemExit, match="--md2-set"):
        parse_md2_overrides([item])


def test_md2_set_reaches_the_monodepth2_run_config(tmp_path):
    setting = {**SETTINGS["smoke"], "monodepth2": {**SETTINGS["smoke"]["monodepth2"],
                                                   **parse_md2_overrides(["frame_interval=2"])}}
    config = monodepth2_config("bv1", 0, setting, tmp_path)
    assert config["model"]["frame_interval"] == 2
    assert SETTINGS["smoke"]["monodepth2"]["frame_interval"] == 1  # the setting itself is untouched
