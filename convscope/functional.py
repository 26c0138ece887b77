"""The layers' pure array math under its old name: every public name is re-exported from
:mod:`convscope.ops`, where it lives (one module per topic)."""

from .ops.conv import conv2d_backward, conv2d_forward
from .ops.conv_reference import col2im, conv2d_backward_simple, conv2d_forward_simple, im2col
from .ops.loss import cross_entropy, log_softmax
from .ops.norm import batchnorm_backward, batchnorm_forward, batchnorm_stats
from .ops.padding import PAD_MODES, PADDING_MODES, pad2d, unpad2d
from .ops.pool import (avgpool2d_backward, avgpool2d_forward, avgpool_divisor, maxpool2d_backward,
                       maxpool2d_forward)
from .ops.windows import window

__all__ = ["PADDING_MODES", "PAD_MODES", "avgpool2d_backward", "avgpool2d_forward",
           "avgpool_divisor", "batchnorm_backward", "batchnorm_forward", "batchnorm_stats", "col2im",
           "conv2d_backward", "conv2d_backward_simple", "conv2d_forward", "conv2d_forward_simple",
           "cross_entropy", "im2col", "log_softmax", "maxpool2d_backward", "maxpool2d_forward",
           "pad2d", "unpad2d", "window"]
