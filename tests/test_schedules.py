import numpy as np
import pytest

from ulmfit_lab.training.schedules import Phase, discriminative_lrs, stlr, trainable_by_epoch, unfreeze_phases


def test_discriminative_lrs_ratio_2_6_lowest_first():
    lrs = discriminative_lrs(1e-2, 5)
    assert lrs[-1] == pytest.approx(1e-2)
    np.testing.assert_allclose(lrs[1:] / lrs[:-1], 2.6)


def test_stlr_rises_for_cut_frac_then_decays_to_lr_over_ratio():
    pct = np.linspace(0, 1, 1001)
    y = stlr(pct, cut_frac=0.1, ratio=32)
    peak = int(np.argmax(y))
    assert pct[peak] == pytest.approx(0.1, abs=1e-3)
    assert y[0] == pytest.approx(1 / 32) and y[-1] == pytest.approx(1 / 32) and y[peak] == pytest.approx(1.0)
    assert np.all(np.diff(y[: peak + 1]) > 0) and np.all(np.diff(y[peak:]) < 0)


def test_stlr_matches_paper_formula():
    T, cut_frac, ratio = 1000, 0.1, 32
    cut = int(T * cut_frac)
    for t in (0, 50, 100, 400, 999):
        p = t / cut if t < cut else 1 - (t - cut) / (cut * (1 / cut_frac - 1))
        assert stlr(t / T, cut_frac, ratio) == pytest.approx((1 + p * (ratio - 1)) / ratio)


def test_gradual_unfreezing_one_more_group_per_epoch():
    assert unfreeze_phases(5, 7) == [Phase(1, 1), Phase(2, 1), Phase(3, 1), Phase(4, 1), Phase(5, 3)]
    assert trainable_by_epoch(unfreeze_phases(5, 3)) == [1, 2, 3]
    assert unfreeze_phases(5, 4, gradual=False) == [Phase(5, 4)]
