"""Bad input gets a clear one-line error naming the layer, the shape it got and the one it needs."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest

import convscope as cs


def zeros(*shape: int, dtype: Any = np.float32) -> np.ndarray:
    return np.zeros(shape, dtype)


def message(kind: type[Exception], call: Callable[[], object]) -> str:
    """The one-line message of the ``kind`` error that ``call`` raises."""
    with pytest.raises(kind) as err:
        call()
    text = str(err.value)
    assert "\n" not in text, text
    return text


def test_wrong_number_of_channels() -> None:
    text = message(cs.ShapeError, lambda: cs.Conv2D(3, 6, 5).forward(zeros(1, 4, 32, 32)))
    assert "Conv2D(3, 6" in text and "4 channels" in text and "4x32x32" in text
    assert "needs 3" in text
    text = message(cs.ShapeError, lambda: cs.BatchNorm2D(3).forward(zeros(2, 4, 2, 2)))
    assert "BatchNorm2D(3)" in text and "(4, 2, 2)" in text and "C = 3" in text


def test_input_smaller_than_the_filter() -> None:
    text = message(cs.ShapeError, lambda: cs.Conv2D(3, 6, 5).forward(zeros(1, 3, 4, 4)))
    assert "Conv2D(3, 6" in text and "input 4" in text and "filter 5" in text
    assert "at least 5" in text
    text = message(cs.ShapeError, lambda: cs.Conv2D(3, 6, (2, 5)).forward(zeros(1, 3, 4, 4)))
    assert "width" in text and "input 4" in text and "filter 5" in text
    text = message(cs.ShapeError, lambda: cs.MaxPool2D(3).forward(zeros(1, 1, 2, 2)))
    assert "MaxPool2D(3x3)" in text and "input 2" in text and "at least 3" in text


def test_kernel_larger_than_the_padded_input() -> None:
    text = message(cs.ShapeError,
                   lambda: cs.Conv2D(3, 6, 5, padding=1).forward(zeros(1, 3, 2, 2)))
    assert "padding=1" in text and "input 2 padded to 4" in text and "filter 5" in text
    assert "at least 3" in text
    text = message(cs.ShapeError,
                   lambda: cs.Conv2D(1, 1, 3, dilation=3).forward(zeros(1, 1, 6, 6)))
    assert "dilation 3 spans 7" in text and "at least 7" in text


@pytest.mark.parametrize("make, words", [
    (lambda: cs.Conv2D(3, 6, 0), ["Conv2D", "kernel_size", ">= 1", "0"]),
    (lambda: cs.Conv2D(3, 6, (3, 0)), ["Conv2D", "kernel_size", "(3, 0)"]),
    (lambda: cs.Conv2D(3, 6, 3, stride=0), ["Conv2D", "stride", ">= 1", "got 0"]),
    (lambda: cs.Conv2D(3, 6, 3, dilation=0), ["Conv2D", "dilation", "got 0"]),
    (lambda: cs.Conv2D(3, 6, 3, padding=-1), ["Conv2D", "padding", ">= 0", "-1"]),
    (lambda: cs.Conv2D(3, 6, 3, padding=((1, -1), (0, 0))), ["Conv2D", "padding", "(1, -1)"]),
    (lambda: cs.Conv2D(3, 0, 3), ["Conv2D", "out_channels", "positive", "got 0"]),
    (lambda: cs.Conv2D(0, 3, 3), ["Conv2D", "in_channels", "positive", "got 0"]),
    (lambda: cs.Conv2D(3, 6, 2.5), ["Conv2D", "kernel_size", "2.5"]),
    (lambda: cs.Conv2D(3, 6), ["Conv2D", "kernel_size is required"]),
    (lambda: cs.Conv2D(3, 6, 3, stride=2, padding="same"), ["Conv2D", "'same'", "stride 1"]),
    (lambda: cs.Conv2D(3, 6, 3, padding="full"), ["Conv2D", "'same' or 'valid'", "'full'"]),
    (lambda: cs.Conv2D(3, 6, 3, padding_mode="mirror"), ["Conv2D", "reflect", "'mirror'"]),
    (lambda: cs.Conv2D(3, 6, 3, fit="ceil"), ["fit", "'floor'", "'ceil'"]),
    (lambda: cs.MaxPool2D(0), ["MaxPool2D", "kernel_size", "got 0"]),
    (lambda: cs.MaxPool2D(2, 0), ["MaxPool2D", "stride", "got 0"]),
    (lambda: cs.AvgPool2D(2, padding=-1), ["AvgPool2D", "padding", "-1"]),
    (lambda: cs.MaxPool2D(3, padding=2), ["MaxPool2D", "padding 2", "kernel size 3", "<= 1"]),
    (lambda: cs.Linear(3, 0), ["Linear", "out_features", "got 0"]),
    (lambda: cs.Linear(0, 3), ["Linear", "in_features", "got 0"]),
    (lambda: cs.BatchNorm2D(0), ["BatchNorm2D", "num_features", "got 0"]),
    (lambda: cs.Dropout(1.5), ["Dropout", "[0, 1]", "1.5"]),
    (lambda: cs.CrossEntropyLoss(label_smoothing=-0.1), ["label_smoothing", "-0.1"]),
])
def test_non_positive_and_invalid_options(make: Callable[[], object], words: list[str]) -> None:
    text = message(ValueError, make)
    for word in words:
        assert word in text, (word, text)


def test_wrong_dtype() -> None:
    text = message(TypeError, lambda: cs.Conv2D(3, 6, 5).forward(zeros(1, 3, 8, 8, dtype=np.int64)))
    assert "Conv2D(3, 6" in text and "int64" in text and "float32" in text
    text = message(TypeError, lambda: cs.ReLU().forward(zeros(1, 3, dtype=np.uint8)))
    assert "ReLU" in text and "uint8" in text and "astype" in text
    for layer, x in [(cs.Conv2D(3, 6, 5), zeros(1, 3, 8, 8, dtype=np.float64)),
                     (cs.Linear(3, 6), zeros(2, 3, dtype=np.float64)),
                     (cs.BatchNorm2D(3), zeros(2, 3, 2, 2, dtype=np.float64))]:
        text = message(TypeError, lambda: layer.forward(x))
        assert repr(layer) in text and "float64" in text and "float32" in text
        assert "dtype=np.float64" in text  # the way to build a float64 layer
    text = message(TypeError, lambda: cs.Conv2D(3, 6, 5, dtype=np.int16))
    assert "float32 or float64" in text and "int16" in text
    text = message(TypeError, lambda: cs.Conv2D(3, 6, 5).forward([[1.0]]))
    assert "Conv2D(3, 6" in text and "list" in text and "(N, C, H, W)" in text


def test_wrong_rank() -> None:
    text = message(cs.ShapeError, lambda: cs.Conv2D(3, 6, 5).forward(zeros(3, 32, 32)))
    assert "Conv2D(3, 6" in text and "(3, 32, 32)" in text and "4-D" in text
    assert "(N, C, H, W)" in text and "x[None]" in text
    text = message(cs.ShapeError, lambda: cs.Linear(10, 6).forward(zeros(1, 10, 1, 1)))
    assert "Linear(10, 6)" in text and "(1, 10, 1, 1)" in text and "(N, 10)" in text
    assert "Flatten()" in text
    text = message(cs.ShapeError, lambda: cs.BatchNorm1D(3).forward(zeros(2, 3, 2, 2)))
    assert "BatchNorm1D(3)" in text and "(2, 3, 2, 2)" in text and "(N, C)" in text
    text = message(cs.ShapeError, lambda: cs.GlobalAvgPool2D().forward(zeros(2, 3)))
    assert "GlobalAvgPool2D" in text and "(2, 3)" in text


def test_backward_before_forward() -> None:
    for layer, dy in [(cs.Conv2D(3, 6, 5), zeros(1, 6, 4, 4)), (cs.ReLU(), zeros(2, 3)),
                      (cs.BatchNorm1D(3), zeros(2, 3))]:
        text = message(RuntimeError, lambda: layer.backward(dy))
        assert repr(layer) in text and "forward() first" in text
    conv = cs.Conv2D(3, 6, 5)
    with cs.no_grad():
        conv.forward(zeros(1, 3, 8, 8))
    assert "no_grad" in message(RuntimeError, lambda: conv.backward(zeros(1, 6, 4, 4)))
    text = message(RuntimeError, lambda: cs.CrossEntropyLoss().backward())
    assert "CrossEntropyLoss" in text and "forward() first" in text


def test_backward_with_a_gradient_of_the_wrong_shape() -> None:
    conv = cs.Conv2D(3, 6, 5)
    conv.forward(zeros(1, 3, 8, 8))
    text = message(cs.ShapeError, lambda: conv.backward(zeros(1, 6, 3, 3)))
    assert "(1, 6, 3, 3)" in text and "(1, 6, 4, 4)" in text


def test_groups_that_do_not_divide_the_channels() -> None:
    text = message(cs.ShapeError, lambda: cs.Conv2D(4, 6, 3, groups=3))
    assert "in_channels 4" in text and "groups 3" in text and "[1, 2]" in text
    text = message(ValueError, lambda: cs.Conv2D(6, 4, 3, groups=3))
    assert "out_channels 4" in text and "groups 3" in text
    text = message(cs.ShapeError,
                   lambda: cs.Sequential(cs.Conv2D(None, 6, 3, groups=3), input_shape=(4, 8, 8)))
    assert "layer 0" in text and "in_channels 4" in text


def test_linear_after_an_unflattened_conv_suggests_flatten() -> None:
    text = message(cs.ShapeError, lambda: cs.Sequential(cs.Conv2D(3, 6, 5), cs.Linear(None, 10),
                                                        input_shape=(3, 32, 32)))
    assert "layer 1" in text and "Linear" in text and "(6, 28, 28)" in text
    assert "Flatten()" in text
    net = cs.Sequential(cs.Conv2D(3, 6, 5), cs.Linear(6 * 28 * 28, 10))
    text = message(cs.ShapeError, lambda: net.forward(zeros(1, 3, 32, 32)))
    assert "layer 1" in text and "(1, 6, 28, 28)" in text and "Flatten()" in text


def test_sequential_names_the_input_it_was_built_for() -> None:
    net = cs.Sequential(cs.Conv2D(3, 6, 5), cs.Flatten(), cs.Linear(None, 10),
                        input_shape=(3, 32, 32))
    text = message(cs.ShapeError, lambda: net.forward(zeros(1, 3, 28, 28)))
    assert "layer 2" in text and "(3456,)" in text and "(4704,)" in text
    assert "built for (3, 32, 32)" in text and "got (3, 28, 28)" in text
    text = message(TypeError, lambda: cs.Sequential(cs.Conv2D(3, 6, 5), "relu"))
    assert "item 1" in text and "str" in text


def test_load_state_dict_with_a_wrong_shape_or_a_missing_key() -> None:
    net = cs.Sequential(cs.Conv2D(3, 6, 5), cs.Flatten(), cs.Linear(None, 10),
                        input_shape=(3, 32, 32), seed=0)
    before = {k: v.copy() for k, v in net.state_dict().items()}
    state = dict(before, **{"0.weight": np.zeros((6, 3, 3, 3), np.float32)})
    text = message(cs.ShapeError, lambda: net.load_state_dict(state))
    assert "'0.weight'" in text and "(6, 3, 3, 3)" in text and "(6, 3, 5, 5)" in text
    missing = {k: v for k, v in before.items() if k != "2.bias"}
    assert "missing keys ['2.bias']" in message(KeyError, lambda: net.load_state_dict(missing))
    extra = dict(before, **{"5.weight": np.zeros(3)})
    assert "unexpected keys ['5.weight']" in message(KeyError,
                                                     lambda: net.load_state_dict(extra))
    for k, v in net.state_dict().items():  # a failed load changes nothing
        np.testing.assert_array_equal(v, before[k])
    net.load_state_dict(missing, strict=False)


def test_batchnorm_training_needs_more_than_one_value_per_channel() -> None:
    text = message(cs.ShapeError, lambda: cs.BatchNorm1D(3).forward(zeros(1, 3)))
    assert "BatchNorm1D(3)" in text and "(1, 3)" in text and "more than one value" in text
    cs.BatchNorm1D(3).eval().forward(zeros(1, 3))  # evaluation uses the running statistics


def test_padding_mode_needs_a_large_enough_input() -> None:
    conv = cs.Conv2D(1, 1, 3, padding=3, padding_mode="reflect")
    text = message(cs.ShapeError, lambda: conv.forward(zeros(1, 1, 3, 3)))
    assert "reflect padding 3" in text and "at least 4" in text and "got 3" in text
    conv = cs.Conv2D(1, 1, 3, padding=4, padding_mode="circular")
    assert "at least 4" in message(cs.ShapeError, lambda: conv.forward(zeros(1, 1, 3, 3)))
    # replicate repeats the edge as often as needed (as PyTorch does)
    y = cs.Conv2D(1, 1, 3, padding=4, padding_mode="replicate").forward(zeros(1, 1, 2, 2))
    assert y.shape == (1, 1, 8, 8)


def test_dilated_max_window_of_padding_only() -> None:
    pool = cs.MaxPool2D((1, 2), stride=1, padding=(0, 1), dilation=(1, 3))
    text = message(cs.ShapeError, lambda: pool.forward(zeros(1, 1, 1, 2)))
    assert "only padding" in text and "width" in text


def test_loss_inputs() -> None:
    text = message(ValueError, lambda: cs.CrossEntropyLoss().forward(zeros(2, 3), np.array([0, 3])))
    assert "[0, 2]" in text and "3" in text
    text = message(TypeError,
                   lambda: cs.CrossEntropyLoss().forward(zeros(2, 3), np.array([0.0, 1.0])))
    assert "integers" in text and "float64" in text
    text = message(cs.ShapeError, lambda: cs.CrossEntropyLoss().forward(zeros(2, 3), np.array([0])))
    assert "(2,)" in text and "(1,)" in text
    text = message(cs.ShapeError, lambda: cs.CrossEntropyLoss().forward(zeros(2, 3, 1), [0, 1]))
    assert "(N, classes)" in text and "(2, 3, 1)" in text
    text = message(cs.ShapeError, lambda: cs.MSELoss().forward(zeros(2, 3), zeros(3, 2)))
    assert "(2, 3)" in text and "(3, 2)" in text


def test_optimiser_and_predict_options() -> None:
    net = cs.Sequential(cs.Flatten(), cs.Linear(None, 2), input_shape=(1, 2, 2))
    assert "-1" in message(ValueError, lambda: cs.SGD(net, lr=-1))
    assert "nesterov" in message(ValueError, lambda: cs.SGD(net, lr=0.1, nesterov=True))
    text = message(ValueError, lambda: cs.SGD(cs.Sequential(cs.Linear(None, 2)), lr=0.1))
    assert "no parameters" in text and "input_shape" in text
    assert "batch_size" in message(ValueError, lambda: net.predict(zeros(1, 1, 2, 2), 0))


@pytest.mark.parametrize("layer, x, name", [
    (cs.Conv2D(None, 6, 3), zeros(1, 3, 8, 8), "in_channels"),
    (cs.Linear(None, 6), zeros(1, 3), "in_features"),
    (cs.BatchNorm2D(), zeros(2, 3, 2, 2), "num_features"),
])
def test_unbuilt_layers_say_what_is_missing(layer: cs.Layer, x: np.ndarray, name: str) -> None:
    for call in (lambda: layer.forward(x), layer.param_formula):
        text = message(cs.ShapeError, call)
        assert repr(layer) in text and f"{name} is not known yet" in text
        assert "input_shape" in text
