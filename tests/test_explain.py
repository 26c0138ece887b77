"""explain: the lecture's numbers for the lecture's network, misfits diagnosed, and every number
agreeing with the engine (shapes of a real forward pass, the summary's counts)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import convscope as cs
from convscope import shapes
from convscope.explain import explain, explain_size, volume


def lecture_net() -> cs.Sequential:
    """32×32×3 -> CONV six 5×5×3 -> RELU -> CONV ten 5×5×6 -> RELU -> POOL -> FC 10."""
    return cs.Sequential(cs.Conv2D(3, 6, 5), cs.ReLU(), cs.Conv2D(6, 10, 5), cs.ReLU(),
                         cs.MaxPool2D(2), cs.Flatten(), cs.Linear(None, 10),
                         input_shape=(3, 32, 32), seed=0)


def test_lecture_network_numbers() -> None:
    net = lecture_net()
    ex = net.explain()
    text = str(ex)
    first = text.splitlines()[1]
    assert first == ("[0] CONV: 6 filters 5×5×3, stride 1, pad 0: (32 − 5 + 2·0) / 1 + 1 = 28 → "
                     "28×28×6; weights 5·5·3·6 = 450, biases 6 (456 parameters)")
    assert "[1] RELU: max(0, x) on each of the 4,704 numbers: 28×28×6 → 28×28×6" in text
    assert ("CONV: 10 filters 5×5×6, stride 1, pad 0: (28 − 5 + 2·0) / 1 + 1 = 24 → 24×24×10; "
            "weights 5·5·6·10 = 1500, biases 10") in text
    assert "POOL: max 2×2, stride 2, pad 0: (24 − 2 + 2·0) / 2 + 1 = 12 → 12×12×10" in text
    assert "FC: 1,440 → 10: weights 1440·10 = 14400, biases 10" in text
    assert "im2col: the patches as a 75 × 784 matrix" in text
    assert [s.kind for s in ex.steps] == ["CONV", "RELU", "CONV", "RELU", "POOL", "FLATTEN", "FC"]
    assert [s.params for s in ex.steps] == [456, 0, 1510, 0, 0, 0, 14410]
    assert ex.steps[0].output_shape == (6, 28, 28) and ex.steps[2].output_shape == (10, 24, 24)
    assert not ex.misfits
    summary = net.summary()
    assert (ex.total_params, ex.total_macs, ex.activation_bytes) == (
        summary.total_params, summary.total_macs, summary.activation_bytes)
    assert f"total: {summary.total_params:,} parameters = 456 + 1,510 + 14,410" in text


def test_stride_three_does_not_fit_bare_numbers() -> None:
    table = explain_size(7, 3)
    lines = str(table).splitlines()
    assert lines[1] == "stride 1: (7 − 3 + 2·0) / 1 + 1 = 5 → 5×5"
    assert lines[2] == "stride 2: (7 − 3 + 2·0) / 2 + 1 = 3 → 3×3"
    assert lines[3].startswith("stride 3: (7 − 3 + 2·0) / 3 + 1 = 2.33 → 2×2 (floored): "
                               "stride 3 does not fit: the last column and the last row of the "
                               "input are never seen; stride 1 or 2 fits, or pad by 1")
    assert "(7 − 3 + 2·1) / 1 + 1 = 7" in lines[4]  # same padding keeps 7
    assert not table.fits
    assert explain_size(7, 3, stride=2).fits


def test_stride_three_in_a_network_and_strict() -> None:
    net = cs.Sequential(cs.Conv2D(1, 1, 3, stride=3), input_shape=(1, 7, 7), seed=0)
    ex = net.explain()
    assert [s.index for s in ex.misfits] == [0]
    assert "the last column and the last row of the input are never seen" in str(ex)
    assert "does not fit: layer 0" in str(ex)
    with pytest.raises(cs.ShapeError, match=r"layer 0 .*2\.33: stride 3 does not fit.*pad by 1"):
        net.explain(strict=True)
    # the same layer with a fitting stride is explained without complaint, strict or not
    assert not cs.Sequential(cs.Conv2D(1, 1, 3, stride=2), input_shape=(1, 7, 7)).explain(strict=True).misfits


def test_only_padding_left_over_and_gaps() -> None:
    ex = cs.Sequential(cs.Conv2D(3, 8, 3, stride=2, padding=1), input_shape=(3, 8, 8)).explain()
    assert "only padding is left over, every input pixel is seen" in str(ex)
    gap = explain_size(8, 2, stride=3)
    assert gap.fits and "1 column in every 3 lies between windows, never seen" in str(gap)


def test_same_padding_is_named() -> None:
    net = cs.Sequential(cs.Conv2D(3, 4, 3, padding=1), cs.Conv2D(4, 4, 5, padding="same"),
                        cs.Conv2D(4, 4, 3, padding=2), input_shape=(3, 16, 16))
    lines = [s.text.splitlines()[0] for s in net.explain().steps]
    assert "pad 1 (same: P = (F − 1) / 2 = (3 − 1) / 2 = 1 keeps 16×16)" in lines[0]
    assert "pad 2 (same: P = (F − 1) / 2 = (5 − 1) / 2 = 2 keeps 16×16)" in lines[1]
    assert "same" not in lines[2]  # pad 2 with a 3×3 filter grows the map: not 'same'
    assert "→ 18×18×4" in lines[2]


def test_fit_error_layer_explained_on_another_input() -> None:
    net = cs.Sequential(cs.Conv2D(1, 2, 3, stride=3, fit="error"), input_shape=(1, 9, 9))
    ex = net.explain((1, 7, 7))
    assert ex.steps[0].output_shape == (2, 2, 2) and not ex.steps[0].fits
    assert "fit='error', so it raises on this input" in str(ex)


def test_bad_inputs_have_clear_errors() -> None:
    net = lecture_net()
    with pytest.raises(cs.ShapeError, match=r"layer 0: .*input has 1 channels"):
        net.explain((1, 32, 32))
    with pytest.raises(cs.ShapeError, match="no input_shape"):
        explain(cs.Sequential(cs.ReLU()))
    with pytest.raises(ValueError, match="stride must be a positive int, got 0"):
        explain_size(7, 3, stride=0)
    with pytest.raises(cs.ShapeError, match="smaller than the filter"):
        explain_size(3, 5)


def test_volumes_are_height_width_depth() -> None:
    assert volume((3, 30, 40)) == "30×40×3" and volume((1440,)) == "1,440"
    net = cs.Sequential(cs.Conv2D(3, 4, (3, 5), stride=(1, 2)), input_shape=(3, 30, 41))
    text = str(net.explain())
    assert "CONV: 4 filters 3×5×3, stride 1×2" in text
    assert "height (30 − 3 + 2·0) / 1 + 1 = 28, width (41 − 5 + 2·0) / 2 + 1 = 19 → 28×19×4" in text


def test_other_layers_are_described() -> None:
    net = cs.Sequential(cs.Conv2D(3, 16, 3, padding=1), cs.BatchNorm2D(), cs.LeakyReLU(0.1),
                        cs.AvgPool2D(3, stride=2, ceil_mode=True), cs.Dropout(0.3),
                        cs.GlobalAvgPool2D(), cs.Flatten(), cs.Linear(None, 5), cs.Tanh(),
                        input_shape=(3, 20, 20))
    text = str(net.explain())
    assert "BATCHNORM" in text and "2·16 = 32 parameters" in text
    assert "LEAKY RELU: x if x > 0 else 0.1·x" in text
    assert "POOL: average 3×3, stride 2" in text and "ceil_mode keeps a last partial window" in text
    assert "DROPOUT: p = 0.3" in text
    assert "POOL: global average of each 10×10 map: 10×10×16 → 1×1×16" in text
    assert "TANH" in text


def _covered_tail(n: int, k: int, s: int, p: int, d: int, out: int) -> int:
    """Brute force: input cells after the last window's reach, from the real output size."""
    last = (out - 1) * s - p + d * (k - 1)  # index of the last input cell the last window touches
    return max(0, n - 1 - last)


@settings(max_examples=max(10, settings.default.max_examples // 2))
@given(n=st.integers(3, 14), k=st.integers(1, 4), s=st.integers(1, 4), p=st.integers(0, 2),
       d=st.integers(1, 2), pool=st.booleans())
def test_every_number_agrees_with_the_engine(n: int, k: int, s: int, p: int, d: int, pool: bool) -> None:
    if d * (k - 1) + 1 > n + 2 * p or (pool and (p > k // 2 or d > 1)):
        return
    layer = cs.MaxPool2D(k, stride=s, padding=p) if pool else cs.Conv2D(2, 3, k, stride=s, padding=p,
                                                                         dilation=d)
    net = cs.Sequential(layer, cs.Flatten(), cs.Linear(None, 2), input_shape=(2, n, n), seed=0)
    ex = net.explain()
    y = layer.forward(np.zeros((1, 2, n, n), np.float32))
    assert ex.steps[0].output_shape == tuple(y.shape[1:])
    summary = net.summary()
    assert [st_.params for st_ in ex.steps] == [r.params for r in summary.rows]
    assert [st_.macs for st_ in ex.steps] == [r.macs for r in summary.rows]
    try:
        shapes.conv_output_size(n, k, s, p, d, fit="error")
        whole = True
    except cs.ShapeError:
        whole = False
    assert ex.steps[0].fits == whole
    text = ex.steps[0].text
    assert shapes.size_formula(n, k, s, (p, p), d, always_pad=True).replace(" - ", " − ") in text
    tail = _covered_tail(n, k, s, p, d if not pool else 1, y.shape[-1])
    assert shapes.unseen(n, k, s, (p, p), d if not pool else 1) == tail
    if not whole:
        assert bool(re.search("of the input (is|are) never seen", text)) == (tail > 0)
        with pytest.raises(cs.ShapeError, match="does not fit"):
            net.explain(strict=True)


# ---------------------------------------------------------------------------------------------
# the command line: convscope explain / shapes


def test_cli_explain_and_shapes(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    from convscope.cli import main

    assert main(["explain"]) == 0
    out = capsys.readouterr().out
    assert "[0] CONV: 6 filters 5×5×3, stride 1, pad 0: (32 − 5 + 2·0) / 1 + 1 = 28 → 28×28×6" in out
    assert "weights 5·5·6·10 = 1500, biases 10" in out
    assert main(["shapes", "--input", "7", "--filter", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" → ")[1][:3] for line in lines[1:4]] == ["5×5", "3×3", "2×2"]
    assert main(["explain", "--input", "7", "--filter", "3", "--stride", "3", "--strict"]) == 1
    captured = capsys.readouterr()
    assert "2.33" in captured.out and "a stride does not fit" in captured.err
    arch = tmp_path / "net.json"
    arch.write_text('{"input_shape": [1, 7, 7], "layers": [{"type": "conv", "filters": 2, '
                    '"size": 3, "stride": 3}, {"type": "fc", "units": "classes"}]}')
    assert main(["explain", str(arch)]) == 0
    assert "stride 3 does not fit: the last column and the last row" in capsys.readouterr().out
    assert main(["explain", str(arch), "--strict"]) == 1
    assert "error: layer 0 Conv2D(1, 2, kernel_size=3x3, stride=3): (7 − 3 + 2·0) / 3 + 1 = 2.33" \
        in capsys.readouterr().err
    assert main(["explain", "lenet5", "--input", "1x28x28"]) == 0
    assert "pad 2 (same: P = (F − 1) / 2 = (5 − 1) / 2 = 2 keeps 28×28)" in capsys.readouterr().out
    assert main(["shapes", "--input", "7", "--filter", "3", "--pad", "x"]) == 1
    assert "--pad must be a whole number >= 0 or 'same', got 'x'" in capsys.readouterr().err
    assert main(["explain", "--input", "7"]) == 1
    assert "add --filter F" in capsys.readouterr().err
