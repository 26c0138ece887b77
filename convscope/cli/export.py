"""``convscope export``: a trained model file as ONNX and/or a PyTorch state dict, checked first.

::

    convscope export runs/x/model.safetensors --onnx model.onnx
    convscope export runs/x/model.safetensors --torch weights.safetensors

The ONNX graph is run with onnxruntime on random inputs and compared with convscope before it is
written (skipped, with a note, when onnxruntime is missing); a disagreement writes nothing.  Class
names, the input shape and the normalisation go into the graph's metadata_props (JSON strings) and
the safetensors header.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..formats.model_file import atomic_write, load_model
from ..formats.onnx import export as onnx_export  # the module: tests replace run_onnx there
from ..formats.torch.convert import save_torch_weights
from ..train.evaluation import model_dtype
from ._common import CommandError, Formatter, add_import, say
from ._outputs import check_output

__all__ = ["add_parser", "run", "model_metadata"]

#: What onnxruntime and convscope may differ by (float32 sums in another order).
TOLERANCE = 1e-4


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "export", formatter_class=Formatter,
        help="write a model as ONNX or as a PyTorch state dict",
        description="Write a trained model file as an ONNX graph (Conv, pooling, BatchNorm, "
        "Gemm, ...; input 'input' (batch, C, H, W), output 'output', the batch axis dynamic) "
        "and/or as a PyTorch state dict in safetensors (keys as in torch.nn.Sequential: "
        "'0.weight', ...). The ONNX graph is checked with onnx.checker and, when onnxruntime is "
        "installed, run on random inputs and compared with convscope before it is written. "
        "The graph takes the normalised input; the mean and std are in its metadata.",
        epilog="examples:\n  convscope export runs/x/model.safetensors --onnx model.onnx\n"
        "  convscope export runs/x/model.safetensors --torch weights.safetensors\n"
        "in PyTorch:  model.load_state_dict(safetensors.torch.load_file('weights.safetensors'))\n"
        "needs:       pip install 'convscope[onnx]' (onnx, onnxruntime) for --onnx")
    p.add_argument("model", metavar="MODEL", help="a model file (.safetensors) from convscope train")
    p.add_argument("--onnx", metavar="OUT.onnx", help="write the ONNX graph here")
    p.add_argument("--torch", metavar="OUT.safetensors",
                   help="write the PyTorch state dict here (safetensors: no pickle)")
    p.add_argument("--opset", type=int, default=onnx_export.DEFAULT_OPSET,
                   help=f"ONNX opset, {onnx_export.MIN_OPSET} or newer (default: "
                   f"{onnx_export.DEFAULT_OPSET})")
    p.add_argument("--input-name", default="input", help="the graph input's name (default: input)")
    p.add_argument("--output-name", default="output",
                   help="the graph output's name (default: output)")
    p.add_argument("--no-check", dest="check", action="store_false",
                   help="do not compare onnxruntime's outputs with convscope's")
    add_import(p)
    return p


def model_metadata(saved: Any) -> dict[str, str]:
    """What inference needs around a saved model, as str -> str (JSON values)."""
    meta = saved.metadata or {}
    out = {"classes": json.dumps(list(saved.classes)),
           "input_shape": json.dumps(list(saved.input_shape)),
           "normalization": json.dumps(saved.normalization.to_dict() if saved.normalization
                                       else None),
           "background": json.dumps(saved.background)}
    for key in ("arch_name", "dataset", "convscope_version"):
        if meta.get(key) is not None:
            out[key] = str(meta[key])
    return out


def _check_onnx(proto: Any, saved: Any) -> str:
    """Run the graph with onnxruntime on random inputs (batch sizes 1 and 8); raise on a
    disagreement, return a one-line account."""
    try:
        import onnxruntime  # noqa: F401, PLC0415
    except ImportError:
        return "onnxruntime is not installed: outputs not compared (pip install onnxruntime)"
    rng = np.random.default_rng(0)
    data = proto.SerializeToString()
    worst = 0.0
    for n in (1, 8):
        x = rng.standard_normal((n, *saved.input_shape)).astype(np.float32)
        ours = saved.model.predict(x.astype(model_dtype(saved.model)))
        theirs = onnx_export.run_onnx(data, x)
        scale = max(1.0, float(np.abs(ours).max()))
        diff = float(np.abs(theirs - ours).max()) / scale
        worst = max(worst, diff)
        if not diff <= TOLERANCE:
            raise CommandError(f"onnxruntime's outputs differ from convscope's by {diff:.3g} "
                               f"(relative, batch of {n}); nothing written. Please report this "
                               "with the model file")
    return f"onnxruntime agrees with convscope to {worst:.1e} (relative, 9 random inputs)"


def run(args: argparse.Namespace) -> int:
    if not args.onnx and not args.torch:
        raise CommandError("say what to write: --onnx OUT.onnx and/or --torch OUT.safetensors")
    if args.torch and not str(args.torch).endswith(".safetensors"):
        raise CommandError(f"--torch {args.torch}: the state dict is written as safetensors; "
                           f"name it {Path(args.torch).with_suffix('.safetensors')}")
    inputs = [args.model, *(args.imports or ())]
    for flag, out in (("--onnx", args.onnx), ("--torch", args.torch)):
        if out:  # before anything is done: never over the model file or another model
            check_output(out, flag, inputs)
    if args.onnx and args.torch and Path(args.onnx).resolve() == Path(args.torch).resolve():
        raise CommandError(f"--onnx and --torch both name {args.onnx}; give two file names")
    saved = load_model(args.model)
    meta = model_metadata(saved)
    if args.onnx:
        proto = onnx_export.export_onnx(saved.model, None, input_shape=saved.input_shape,
                                        opset=args.opset, input_name=args.input_name,
                                        output_name=args.output_name, metadata=meta)
        note = _check_onnx(proto, saved) if args.check else "outputs not compared (--no-check)"
        atomic_write(args.onnx, proto.SerializeToString())
        print(f"wrote {args.onnx}: ONNX opset {args.opset}, {len(proto.graph.node)} nodes, "
              f"input '{args.input_name}' (batch, {', '.join(map(str, saved.input_shape))}), "
              f"output '{args.output_name}' (batch, {len(saved.classes)}); {note}")
    if args.torch:
        save_torch_weights(saved.model, args.torch, meta)
        keys = list(saved.model.state_dict())
        print(f"wrote {args.torch}: PyTorch state dict, {len(keys)} tensors ({keys[0]}, ...); "
              "load with model.load_state_dict(safetensors.torch.load_file(path))")
    if saved.normalization is not None:
        norm = saved.normalization
        say(f"note: the model takes normalised input (pixels / 255 - mean) / std, mean "
            f"{[round(v, 4) for v in norm.mean]}, std {[round(v, 4) for v in norm.std]} "
            "(also in the metadata)")
    else:
        say("note: the model takes pixels / 255, in [0, 1]")
    return 0
