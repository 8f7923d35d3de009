"""Configs saved by earlier versions (a run's ``config.yaml``) name their classes at the old
import paths: ``mkd.MKD`` and ``mkd.baselines.*``. They still load and build the same models."""
import re

import pytest
from detectron2.config import LazyConfig, instantiate

from mkd import MKD, FeatureDistillation, MGDDistiller, MimicDistiller, MKDDistiller
from mkd.modeling.distillers import FGDDistiller
from tests.helpers import REPO

#: New target (as LazyConfig.save writes it now) -> the path an earlier version wrote.
OLD_PATHS = {
    "mkd.FeatureDistillation": "mkd.MKD",
    "mkd.MimicDistiller": "mkd.baselines.MimicDistiller",
    "mkd.FGDDistiller": "mkd.baselines.FGDDistiller",
    "mkd.MGDDistiller": "mkd.baselines.MGDDistiller",
}
DISTILLERS = {"mkd": MKDDistiller, "mimic": MimicDistiller, "fgd": FGDDistiller,
              "mgd": MGDDistiller}


@pytest.mark.parametrize("method", list(DISTILLERS))
def test_a_config_saved_at_the_old_import_paths_builds_the_same_model(tmp_path, method):
    cfg = LazyConfig.load(str(REPO / "configs" / "shapes" / f"{method}.py"))
    saved = tmp_path / "config.yaml"
    LazyConfig.save(cfg, str(saved))
    text = saved.read_text()
    assert "_target_: mkd.FeatureDistillation" in text  # what this version writes
    for new, old in OLD_PATHS.items():
        text = re.sub(rf"_target_: {re.escape(new)}(?=[,}}\n])", f"_target_: {old}", text)
    assert "_target_: mkd.MKD\n" in text
    if method != "mkd":
        assert f"_target_: mkd.baselines.{DISTILLERS[method].__name__}," in text
    saved.write_text(text)

    old = LazyConfig.load(str(saved))
    old.model.teacher_weights = old.model.student_weights = None
    model = instantiate(old.model)
    assert isinstance(model, MKD) and isinstance(model, FeatureDistillation)
    assert type(model.distiller) is DISTILLERS[method]
