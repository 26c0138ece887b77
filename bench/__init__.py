"""convscope against PyTorch on the CPU, side by side in one process: ``python -m bench``.

Not a test: a measurement.  Every figure is the median of interleaved repetitions (convscope and
PyTorch alternate, so a noisy neighbour slows both) after warm-up, with the min-max range, and
both libraries on the same number of threads.  ``--quick`` runs in under a minute; ``--json``
writes every figure.  See :mod:`bench.run` for the cases and the targets.
"""
