"""What the explorer shows, computed by the engine: every layer's output, the weights, saliency.

Everything here is plain data for the page: arrays travel as base64 of little-endian float32
(``f32``) or uint8 (``u8``) with their shape, so the page holds the engine's exact float32 numbers
at 4 bytes each and two builds from the same inputs are byte-identical.

* :func:`model_record`: per layer its name, kind, shapes, parameter formula, mult-adds, the lecture's
  sentence, window geometry and (for a layer computing w·x + b per window) weights and bias.
* :func:`image_record`: one image through the model layer by layer (``layer.forward`` in eval
  mode, the same calls as ``model.forward``), the class probabilities, the saliency map
  |∂ score / ∂ input| (max over channels) and Grad-CAM on the last filtered layer, both from the
  engine's own backward pass.
* :func:`randomized_copy`: the model with every parameter array redrawn (same mean and spread):
  the "model randomisation" sanity check of Adebayo et al. (2018).  A saliency method whose map
  barely changes on it is showing the image's edges, not what the model learnt.
"""

from __future__ import annotations

import base64
import copy
from typing import Any, Sequence

import numpy as np

from ...ops.loss import softmax
from ...runtime import no_grad
from ..explain import explain
from .geometry import conv_of, dependency, dependency_table, window_of

__all__ = ["f32", "u8", "top_layers", "model_record", "forward_all", "image_record",
           "saliency_maps", "randomized_copy", "rank_correlation"]

Shape = tuple[int, ...]


def f32(a: Any) -> dict[str, Any]:
    """An array as ``{"shape": [...], "f32": base64}`` (little-endian float32)."""
    arr = np.ascontiguousarray(np.asarray(a), dtype="<f4")
    return {"shape": list(arr.shape), "f32": base64.b64encode(arr.tobytes()).decode("ascii")}


def u8(a: Any) -> dict[str, Any]:
    """A uint8 array as ``{"shape": [...], "u8": base64}``."""
    arr = np.ascontiguousarray(np.asarray(a), dtype=np.uint8)
    return {"shape": list(arr.shape), "u8": base64.b64encode(arr.tobytes()).decode("ascii")}


def top_layers(model: Any) -> list[Any]:
    """The model's layers as numbered in ``summary()``: its children, else ``model.layers``."""
    kids = model.children() if hasattr(model, "children") else []
    if kids:
        return [layer for _, layer in kids]
    return list(getattr(model, "layers", []))


def _texts(model: Any) -> dict[int, str]:
    """Layer index -> the lecture's sentence from explain(), where it can be had."""
    try:
        return {int(s.index): str(s.text) for s in explain(model).steps}
    except Exception:  # noqa: BLE001 - a layer explain does not know must not stop the page
        return {}


def model_record(model: Any) -> dict[str, Any]:
    """The model part of the page's data (see the module docstring)."""
    shape = tuple(model.input_shape)
    texts = _texts(model)
    layers = []
    for i, layer in enumerate(top_layers(model)):
        out = tuple(int(s) for s in layer.output_shape(shape))
        rec: dict[str, Any] = {
            "index": i, "name": repr(layer), "kind": getattr(layer, "kind_name", None)
            or type(layer).__name__.lower(), "in_shape": list(shape), "shape": list(out),
            "params": int(layer.param_count()), "formula": layer.param_formula(),
            "macs": int(layer.macs(shape)), "text": texts.get(i, ""),
            "dep": dependency(layer, shape, out), "window": window_of(layer), "table": None,
            "shows_filters": bool(getattr(layer, "shows_filters", False)),
            "identity": bool(getattr(layer, "identity_at_inference", False)), "conv": None}
        if rec["dep"] == "table":  # a container: its children's map, row by row, column by column
            rows, cols = dependency_table(layer, shape)
            rec["table"] = {"rows": [list(r) if r else None for r in rows],
                            "cols": [list(r) if r else None for r in cols]}
        conv = conv_of(layer)
        if conv is not None:
            bias = layer.params.get("bias")
            conv["weight"] = f32(layer.params["weight"])
            conv["bias"] = None if bias is None else f32(bias)
            rec["conv"] = conv
        layers.append(rec)
        shape = out
    return {"input_shape": list(model.input_shape), "layers": layers,
            "total_params": int(sum(r["params"] for r in layers)),
            "total_macs": int(sum(r["macs"] for r in layers))}


def forward_all(model: Any, x: np.ndarray, keep: bool = False) -> list[np.ndarray]:
    """Each layer's output for a batch ``x`` (the model's float input), in eval mode.

    ``keep`` leaves the layers' caches in place for a backward pass (:func:`saliency_maps`).
    """
    was = model.training
    model.eval()
    outs = []
    try:
        if keep:
            for layer in top_layers(model):
                x = layer.forward(x)
                outs.append(x)
        else:
            with no_grad():
                for layer in top_layers(model):
                    x = layer.forward(x)
                    outs.append(x)
    finally:
        model.train(was)
    return outs


def _cam_layer(model: Any) -> int | None:
    """Grad-CAM's layer: the last shows_filters layer with a volume output, followed by the layers
    that keep its shape (its ReLU), so the maps are the rectified activations."""
    layers = top_layers(model)
    shapes = [tuple(model.input_shape)]
    for layer in layers:
        shapes.append(tuple(layer.output_shape(shapes[-1])))
    last = None
    for i, layer in enumerate(layers):
        if getattr(layer, "shows_filters", False) and len(shapes[i + 1]) == 3:
            last = i
    if last is None:
        return None
    while last + 1 < len(layers) and shapes[last + 2] == shapes[last + 1] \
            and window_of(layers[last + 1]) is None:
        last += 1
    return last


def saliency_maps(model: Any, x: np.ndarray, target: int) -> tuple[np.ndarray, np.ndarray | None,
                                                                     int | None]:
    """(saliency H×W, Grad-CAM h×w or None, Grad-CAM's layer index) for one image ``x`` (C, H, W).

    Saliency: max over channels of |∂ s_target / ∂ x|.  Grad-CAM (Selvaraju et al. 2017): with A
    the maps of the CAM layer and α_k = mean over (i, j) of ∂ s_target / ∂ A_k,
    ReLU(Σ_k α_k A_k), at that layer's resolution.  Both from ``layer.backward``; the parameter
    gradients are cleared afterwards.
    """
    layers = top_layers(model)
    cam_at = _cam_layer(model)
    outs = forward_all(model, x[None], keep=True)
    was = model.training
    model.eval()
    try:
        dy = np.zeros_like(outs[-1])
        dy[0, target] = 1
        grads: dict[int, np.ndarray] = {}
        for i in range(len(layers) - 1, -1, -1):
            grads[i] = dy
            dy = layers[i].backward(dy)
    finally:
        model.zero_grad()
        model.train(was)
    sal = np.abs(np.asarray(dy, dtype=np.float64)[0]).max(axis=0)
    cam = None
    if cam_at is not None:
        a = np.asarray(outs[cam_at], np.float64)[0]
        g = np.asarray(grads[cam_at], np.float64)[0]
        cam = np.maximum((g.mean(axis=(1, 2))[:, None, None] * a).sum(axis=0), 0)
    return sal, cam, cam_at


def randomized_copy(model: Any, seed: int = 0) -> Any:
    """A deep copy of ``model`` with every parameter array redrawn from a normal distribution of
    the same mean and standard deviation (seeded: the same copy every build)."""
    twin = copy.deepcopy(model)
    rng = np.random.default_rng(seed)
    for key, p in sorted(twin.params.items()):
        arr = np.asarray(p)
        spread = float(arr.std()) or 1.0
        p[...] = rng.normal(float(arr.mean()), spread, arr.shape).astype(arr.dtype)
    return twin


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two maps of the same shape (ties broken by position)."""
    ra = np.argsort(np.argsort(a.ravel(), kind="stable"), kind="stable").astype(np.float64)
    rb = np.argsort(np.argsort(b.ravel(), kind="stable"), kind="stable").astype(np.float64)
    ra -= ra.mean()
    rb -= rb.mean()
    den = float(np.sqrt((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / den) if den else 0.0


def image_record(model: Any, twin: Any, x: np.ndarray, pixels: np.ndarray, name: str,
                 label: int | None = None) -> dict[str, Any]:
    """One probe image for the page: ``x`` the model's float input (C, H, W), ``pixels`` the
    uint8 picture (C, H, W), ``label`` its true class if known; ``twin`` the randomised copy."""
    layers = top_layers(model)
    outs = forward_all(model, x[None])
    probs = softmax(np.asarray(outs[-1][0], np.float64).reshape(1, -1))[0]
    pred = int(np.argmax(probs))
    outputs: list[Any] = []
    for i, out in enumerate(outs):
        if getattr(layers[i], "identity_at_inference", False):
            outputs.append(None)  # the same numbers as the layer before: the page reuses them
        else:
            outputs.append(f32(out[0]))
    sal, cam, cam_at = saliency_maps(model, x, pred)
    rsal, rcam, _ = saliency_maps(twin, x, pred)
    why = {"target": pred, "cam_layer": cam_at, "saliency": f32(sal),
           "random_saliency": f32(rsal),
           "saliency_rank_correlation": round(rank_correlation(sal, rsal), 4),
           "gradcam": None if cam is None else f32(cam),
           "random_gradcam": None if rcam is None else f32(rcam),
           "gradcam_rank_correlation": None if cam is None or rcam is None
           else round(rank_correlation(cam, rcam), 4)}
    return {"name": name, "label": label, "pixels": u8(pixels), "input": f32(x),
            "outputs": outputs, "probs": [round(float(p), 6) for p in probs], "pred": pred,
            "why": why}


def image_records(model: Any, x: np.ndarray, pixels: np.ndarray, names: Sequence[str],
                  labels: Sequence[int | None] | None = None, seed: int = 0
                  ) -> list[dict[str, Any]]:
    """:func:`image_record` for a batch (``x`` float (N, C, H, W), ``pixels`` uint8)."""
    twin = randomized_copy(model, seed)
    labels = list(labels) if labels is not None else [None] * len(x)
    return [image_record(model, twin, x[i], pixels[i], names[i], labels[i]) for i in range(len(x))]
