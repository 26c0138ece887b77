"""The exceptions convscope raises (every class lives here; old import paths re-export them)."""

from __future__ import annotations


class ShapeError(ValueError):
    """A shape that does not fit: wrong channels, rank, a stride that does not fit, ...

    The message names the layer, the shape it got and the shape it needs, and where it is the
    lecture's arithmetic, the formula filled in.
    """


class ArchitectureError(ValueError):
    """An architecture that cannot be built: unknown preset, layer type or key, bad value."""


class UnsupportedLayer(TypeError):
    """A layer a format cannot express: no ONNX export, no PyTorch mapping, not registered.

    The message names the layer and the hook or registration that would make it work.
    """


class DataError(ValueError):
    """A data file or folder that is missing, truncated, corrupt or of the wrong shape."""


class ModelFileError(ValueError):
    """A model or checkpoint file that cannot be used: missing, truncated, corrupt, of another
    format version, or with weights that do not fit its architecture."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; training stopped and the last checkpoint was kept."""

    def __init__(self, message: str, step: int, epoch: int, lr: float, suggested_lr: float
                 ) -> None:
        super().__init__(message)
        self.step, self.epoch, self.lr, self.suggested_lr = step, epoch, lr, suggested_lr


class CommandError(ValueError):
    """A user error found by a subcommand: printed as one line by ``convscope``, exit status 1."""


class RunFolderError(ValueError):
    """A run folder that cannot be used now: in use by another run (the run lock), a folder of
    other files, or one that already holds a run.  The message names the folder and the way
    out (``--resume``, another ``--out``)."""
