"""Calibration methods: min-max keeps outliers, percentile and entropy clip them."""
import torch

from slimformer.quantize.calibrate import Observer, qparams


def test_methods_give_different_ranges_with_outliers():
    torch.manual_seed(0)
    obs = Observer(keep=50_000)
    for _ in range(4):
        x = torch.randn(10_000)
        x[:3] = torch.tensor([40.0, -35.0, 60.0])  # rare outliers
        obs.update(x)
    mm = obs.range("minmax")
    pc = obs.range("percentile", 99.9)
    en = obs.range("entropy")
    assert mm[1] == 60.0 and mm[0] == -35.0
    assert pc[1] < 10 and pc[0] > -10
    assert en[1] < mm[1] and en != pc
    # clipping buys resolution for the bulk of the values
    assert qparams(*pc)[0] < qparams(*mm)[0]


def test_qparams_cover_zero():
    s, z = qparams(0.5, 2.0)
    assert z == 0 and abs(s - 2.0 / 255) < 1e-9
    s, z = qparams(-1.0, 1.0)
    assert 120 <= z <= 135
