"""avs_depth_core.config: the one strict parser behind every config section (model, train, data, scaling)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from avs_depth_core.config import check_fields, coerce, dataclass_from_dict, section_from_dict
from avs_depth_core.models.avsnet import AVSNetConfig
from avs_depth_core.models.monodepth2 import Monodepth2Config
from avs_depth_core.scaling import ScalingConfig
from avs_depth_core.train.avsnet import DataConfig, TrainConfig


@dataclass
class Section:
    rate: float = 1.0
    count: int = 2
    flag: bool = False
    name: str = "a"
    size: tuple[int, int] = (2, 3)
    widths: list[int] = field(default_factory=lambda: [1, 2])
    path: str | None = None

    def __post_init__(self) -> None:
        check_fields(self)
        if self.count < 0:
            raise ValueError(f"count must be >= 0, got {self.count}")


def test_values_are_checked_and_normalised():
    cfg = dataclass_from_dict(Section, {"rate": 3, "size": [4, 5], "widths": (7,), "path": "x"}, "demo")
    assert cfg == Section(rate=3.0, size=(4, 5), widths=[7], path="x")
    assert isinstance(cfg.rate, float) and isinstance(cfg.size, tuple) and isinstance(cfg.widths, list)
    assert dataclass_from_dict(Section, {"rate": "1e-3"}, "demo").rate == 1e-3  # YAML 1.1 reads 1e-3 as text
    assert dataclass_from_dict(Section, {"path": None}, "demo").path is None
    assert Section(size=[1, 1]).size == (1, 1)  # direct construction is normalised too
    for values, message in [({"count": 1.5}, r"demo: count: expected int, got 1.5 \(float\)"),
                            ({"count": True}, "count: expected int"), ({"flag": 1}, "flag: expected bool"),
                            ({"rate": "fast"}, "rate: expected float, got 'fast'"), ({"name": 3}, "name: expected str"),
                            ({"size": [1, 2, 3]}, r"size: expected tuple\[int, int\]"),
                            ({"widths": [1, "2"]}, r"widths: expected list\[int\]"),
                            ({"path": 3}, r"path: expected str \| None")]:
        with pytest.raises(ValueError, match=message):
            dataclass_from_dict(Section, values, "demo")
    with pytest.raises(ValueError, match="count: expected int"):
        Section(count="2")
    assert coerce([1, 2], tuple[float, ...], "k") == (1.0, 2.0)


def test_unknown_keys_name_the_section_and_list_the_known_ones():
    with pytest.raises(ValueError, match=r"^demo: unknown key\(s\) \['colour', 'size_'\]; known keys: \['count', 'flag', "):
        dataclass_from_dict(Section, {"colour": 1, "size_": 2, "rate": 1.0}, "demo")
    with pytest.raises(ValueError, match=r"^config: unknown key\(s\) \['train.lr_'\]; known keys: \["):
        dataclass_from_dict(Section, {"lr_": 1}, "config", prefix="train.")
    with pytest.raises(ValueError, match="demo: expected a mapping of Section settings, got list"):
        dataclass_from_dict(Section, [1, 2], "demo")
    with pytest.raises(ValueError, match="^demo: count must be >= 0, got -1$"):  # the dataclass's own checks, located
        dataclass_from_dict(Section, {"count": -1}, "demo")


@pytest.mark.parametrize("parse", [
    lambda v: AVSNetConfig.from_dict(v, "m.yaml model"),
    lambda v: Monodepth2Config.from_dict(v, "m.yaml model"),
    lambda v: ScalingConfig.from_dict(v, "m.yaml model"),
    lambda v: section_from_dict(DataConfig, v, "model"),
])
def test_every_section_follows_the_same_rule(parse):
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['(model\.)?min_dpeth'\]; known keys: \[.*'max_depth'"):
        parse({"min_dpeth": 1.0})
    with pytest.raises(ValueError, match=r"max_depth: expected float, got \[3\]"):
        parse({"max_depth": [3]})


def test_loop_sections_default_and_coerce():
    assert section_from_dict(TrainConfig, None, "train") == TrainConfig()
    cfg = section_from_dict(DataConfig, {"image_size": [32, 64], "max_depth": 8}, "data")
    assert cfg.image_size == (32, 64) and cfg.max_depth == 8.0 and isinstance(cfg.max_depth, float)
    with pytest.raises(ValueError, match=r"config: train.epochs: expected int, got 'two' \(str\)"):
        section_from_dict(TrainConfig, {"epochs": "two"}, "train")
