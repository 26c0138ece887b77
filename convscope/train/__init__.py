"""Training: the hand-written loop, with everything a long run needs around it.

Each step is the four lines of the lecture's recipe::

    model.zero_grad()
    loss = loss_fn(model.forward(x), y)            # forward, softmax cross-entropy
    model.backward(loss_fn.backward())             # backward: every dL/dw
    optimizer.step()                               # w -= lr · update(dL/dw)

Around it: a learning-rate schedule (constant, step, cosine; optional warm-up), validation each
epoch, keeping the best model, early stopping, a tqdm progress bar, a metrics log, atomic
checkpoints each epoch that :meth:`Trainer.fit` resumes from exactly, a clean stop on Ctrl-C
(a checkpoint at the current batch), and a stop with a clear message when the loss is not a
finite number.  With the same seed a run repeats exactly, resumed or not.

Run folder (``run_dir``): ``checkpoint.safetensors`` (the whole training state),
``model.safetensors`` (the best model so far, a model file), ``metrics.jsonl`` (one JSON
object per epoch), ``.convscope.lock`` (the run lock, held while a run trains there:
formats/run_folder.py).

Modules: ``config`` (TrainConfig, the optimisers), ``schedule`` (learning_rate),
``evaluation`` (evaluate, Evaluation), ``checkpoint`` (what a checkpoint holds, saving and
loading it), ``control`` (callbacks, progress bar, Ctrl-C, log lines), ``trainer`` (Trainer).
"""

from __future__ import annotations

from ..errors import TrainingDiverged
from .checkpoint import CHECKPOINT, METRICS, MODEL
from .config import OPTIMIZERS, SCHEDULES, TrainConfig
from .evaluation import Evaluation, evaluate
from .schedule import learning_rate
from .trainer import FitResult, Trainer

__all__ = ["TrainConfig", "Trainer", "FitResult", "Evaluation", "TrainingDiverged", "evaluate",
           "learning_rate", "OPTIMIZERS", "SCHEDULES", "CHECKPOINT", "MODEL", "METRICS"]
