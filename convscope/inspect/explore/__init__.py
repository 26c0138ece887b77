"""The explorer: one self-contained HTML page of a model, from the sliding filter to the label.

``convscope explore MODEL|RUN [IMAGE ...]`` writes it; ``convscope serve`` serves it with an
upload and a drawing canvas; ``convscope train`` writes it into the run folder.  From Python::

    from convscope.inspect.explore import load_target, write_explorer
    write_explorer(load_target("runs/x"))            # runs/x/explore.html

The page's data is computed by the engine (collect.py), its geometry (geometry.py) is the
lecture's arithmetic, and the page (static/) only draws it.  No matplotlib, no network.
"""

from __future__ import annotations

from .build import EXPLORE, explorer_data, explorer_html, floats, pick_probes, run_record
from .collect import image_record, model_record, randomized_copy, saliency_maps
from .geometry import receptive_field, window_of
from .source import (Target, build_explorer, load_target, probe_images, write_explorer,
                     write_run_explorer)

__all__ = ["EXPLORE", "explorer_data", "explorer_html", "floats", "pick_probes", "run_record",
           "image_record", "model_record", "randomized_copy", "saliency_maps",
           "receptive_field", "window_of", "Target", "build_explorer", "load_target",
           "probe_images", "write_explorer", "write_run_explorer"]
