"""Seeing inside a network: ``summary`` (the table), ``explain`` (the lecture's walk), ``viz``
(pictures; ``canvas`` and ``charts`` under it), ``report`` (report.html), ``tree`` (walking
blocks).

Import-light on purpose: it imports no submodule, because the layers import
``convscope.inspect.explain`` and ``convscope.inspect.summary`` (which import no layer), and
anything imported here at import time would run inside ``import convscope.layers``.
"""
