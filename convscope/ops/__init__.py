"""The layers' pure array math, NCHW, no state: each forward returns what its backward needs.

One module per topic; nothing here imports a layer.  The array module comes from the input
(NumPy or CuPy, :func:`convscope.runtime.xp_of`).

* :mod:`.layout` - channels-first or channels-last memory, arrays made in either layout
* :mod:`.padding` - pad2d/unpad2d and the one table of padding-mode names (NumPy, ONNX, torch)
* :mod:`.windows` - the F·F strided views every sliding-window layer is made of
* :mod:`.conv_reference` - the convolution to read: loops, then textbook im2col + one GEMM
* :mod:`.conv` - the convolution that runs: chunked im2col + one GEMM per chunk (fast path)
* :mod:`.pool` - max and average pooling
* :mod:`.norm` - batch normalisation
* :mod:`.loss` - log-softmax and cross-entropy
"""
