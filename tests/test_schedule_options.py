"""The LR schedule options (STLR, one-cycle, constant) and `classifier.trainable_groups`, as functions and as
config settings that leave the stage keys of existing runs unchanged at their defaults."""

import numpy as np
import pytest
from fastai.callback.schedule import combined_cos

from ulmfit_lab.config import ClassifierConfig, ConfigError, LMFinetuneConfig, key_dict, load_config
from ulmfit_lab.training.schedules import Phase, lr_schedule, one_cycle_schedule, unfreeze_phases

LRS = np.array([1e-3 / 2.6**2, 1e-3 / 2.6, 1e-3])


def test_one_cycle_is_fastais_fit_one_cycle_lr():
    # fit_one_cycle(lr_max=LRS) with its defaults: combined_cos(0.25, lr/25, lr, lr/1e5)
    ref = combined_cos(0.25, LRS / 25.0, LRS, LRS / 1e5)
    sched = one_cycle_schedule(LRS)
    for pos in (0.0, 0.1, 0.25, 0.6, 0.999):
        np.testing.assert_allclose(sched(pos), ref(pos))
    pos = np.linspace(0, 0.999, 400)
    top = np.array([sched(p)[-1] for p in pos])
    assert pos[np.argmax(top)] == pytest.approx(0.25, abs=0.01)
    assert top[0] == pytest.approx(1e-3 / 25) and top[-1] < 1e-3 / 1e3
    np.testing.assert_allclose(sched(0.4)[1:] / sched(0.4)[:-1], 2.6)  # discriminative ratios kept


def test_constant_and_stlr_and_unknown_schedule():
    const = lr_schedule("constant", LRS)
    for pos in (0.0, 0.5, 0.99):
        np.testing.assert_allclose(const(pos), LRS)
    stlr = lr_schedule("stlr", LRS, cut_frac=0.1, ratio=32)
    np.testing.assert_allclose(stlr(0.1), LRS)
    np.testing.assert_allclose(stlr(0.0), LRS / 32)
    with pytest.raises(ValueError, match="expected one of"):
        lr_schedule("cosine", LRS)


def test_trainable_groups_caps_unfreezing():
    assert unfreeze_phases(4, 5, max_trainable=1) == [Phase(1, 5)]
    assert unfreeze_phases(4, 5, max_trainable=2) == [Phase(1, 1), Phase(2, 4)]
    assert unfreeze_phases(4, 3, gradual=False, max_trainable=2) == [Phase(2, 3)]
    assert unfreeze_phases(4, 5, max_trainable=9) == unfreeze_phases(4, 5)


def test_new_settings_stay_out_of_stage_keys_at_their_defaults():
    # runs made before the options existed keep their stage keys (and cached stages)
    assert "schedule" not in key_dict(ClassifierConfig()) and "trainable_groups" not in key_dict(ClassifierConfig())
    assert "schedule" not in key_dict(LMFinetuneConfig())
    cfg = load_config(None, ["classifier.schedule=one_cycle", "classifier.trainable_groups=1",
                             "lm_finetune.schedule=constant"])
    assert key_dict(cfg.classifier)["schedule"] == "one_cycle" and key_dict(cfg.classifier)["trainable_groups"] == 1
    assert key_dict(cfg.lm_finetune)["schedule"] == "constant"


def test_bad_schedule_settings_are_config_errors():
    with pytest.raises(ConfigError, match="classifier.schedule: expected one of 'stlr', 'one_cycle', 'constant'"):
        load_config(None, ["classifier.schedule=cosine"])
    with pytest.raises(ConfigError, match="classifier.trainable_groups: must be > 0"):
        load_config(None, ["classifier.trainable_groups=0"])
