"""Writes docs/coming-from-tf-keras.md: which common tf.keras (and tf / tf.train) names fastckpt has.

The page is generated from the installed fastckpt by looking each name up, so it cannot claim a name
that is not there or miss one that is; tests/test_distribution.py regenerates it and fails when the
committed page differs. After adding or removing a public name:

    python tools/gen_compat.py            # rewrite the page
    python tools/gen_compat.py --check    # exit 1 with a diff if the page is stale

The lists below are the names of tf.keras 2.x (tf_keras) that tutorials and ordinary training code
use most; they are kept here, by hand. Names fastckpt exports beyond them are listed too.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import os
import sys
from typing import List, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGE = os.path.join(ROOT, "docs", "coming-from-tf-keras.md")

# (TensorFlow name, fastckpt module or object path, names looked up in it)
NAMESPACES: List[Tuple[str, str, Sequence[str]]] = [
    ("tf", "fastckpt", [
        "keras", "train", "losses", "metrics", "optimizers", "version", "__version__", "random",
        "data", "Variable", "constant", "GradientTape", "function", "saved_model", "config"]),
    ("tf.keras", "fastckpt.keras", [
        "Sequential", "Model", "Input", "layers", "models", "optimizers", "losses", "metrics",
        "callbacks", "datasets", "utils", "backend", "activations", "initializers", "regularizers",
        "constraints", "preprocessing", "applications", "mixed_precision"]),
    ("tf.keras.layers", "fastckpt.keras.layers", [
        "Layer", "Dense", "Dropout", "InputLayer", "Input", "Flatten", "Reshape", "Activation",
        "BatchNormalization", "LayerNormalization", "Conv1D", "Conv2D", "MaxPooling2D",
        "AveragePooling2D", "GlobalAveragePooling2D", "Embedding", "LSTM", "GRU", "SimpleRNN",
        "Bidirectional", "Concatenate", "Add", "Lambda", "ReLU", "Softmax", "Normalization",
        "Rescaling", "MultiHeadAttention"]),
    ("tf.keras.models", "fastckpt.keras.models", [
        "Model", "Sequential", "load_model", "save_model", "clone_model", "model_from_json",
        "model_from_config"]),
    ("tf.keras.Model", "fastckpt.keras.Model", [
        "compile", "fit", "evaluate", "predict", "train_on_batch", "test_on_batch", "predict_on_batch",
        "summary", "save", "save_weights", "load_weights", "get_weights", "set_weights",
        "count_params", "get_config", "from_config", "to_json", "get_layer", "layers", "weights",
        "trainable_weights", "non_trainable_weights", "trainable_variables", "variables", "metrics",
        "metrics_names", "input_shape", "output_shape", "optimizer", "stop_training", "built", "build",
        "call"]),
    ("tf.keras.Sequential", "fastckpt.keras.Sequential", ["add", "pop"]),
    ("tf.keras.layers.Layer", "fastckpt.keras.layers.Layer", [
        "build", "call", "add_weight", "get_config", "from_config", "get_weights", "set_weights",
        "compute_output_shape", "count_params", "weights", "trainable_weights",
        "non_trainable_weights", "trainable_variables", "variables", "trainable", "name", "dtype"]),
    ("tf.keras.optimizers", "fastckpt.keras.optimizers", [
        "Optimizer", "Adam", "SGD", "RMSprop", "Adagrad", "Adadelta", "Adamax", "Nadam", "AdamW",
        "Ftrl", "schedules", "get", "serialize", "deserialize"]),
    ("tf.keras.losses", "fastckpt.keras.losses", [
        "Loss", "SparseCategoricalCrossentropy", "sparse_categorical_crossentropy",
        "CategoricalCrossentropy", "categorical_crossentropy", "BinaryCrossentropy",
        "binary_crossentropy", "MeanSquaredError", "mean_squared_error", "MeanAbsoluteError",
        "Huber", "KLDivergence", "get", "serialize", "deserialize"]),
    ("tf.keras.metrics", "fastckpt.keras.metrics", [
        "Metric", "Mean", "Sum", "Accuracy", "SparseCategoricalAccuracy",
        "sparse_categorical_accuracy", "CategoricalAccuracy", "BinaryAccuracy",
        "TopKCategoricalAccuracy", "SparseTopKCategoricalAccuracy", "MeanSquaredError", "Precision",
        "Recall", "AUC", "get", "serialize", "deserialize"]),
    ("tf.keras.callbacks", "fastckpt.keras.callbacks", [
        "Callback", "CallbackList", "History", "ProgbarLogger", "ModelCheckpoint", "BackupAndRestore",
        "EarlyStopping", "CSVLogger", "LambdaCallback", "TerminateOnNaN", "ReduceLROnPlateau",
        "LearningRateScheduler", "TensorBoard", "RemoteMonitor"]),
    ("tf.keras.datasets", "fastckpt.keras.datasets", [
        "mnist", "fashion_mnist", "cifar10", "cifar100", "imdb", "reuters", "boston_housing"]),
    ("tf.keras.utils", "fastckpt.keras.utils", [
        "set_random_seed", "register_keras_serializable", "custom_object_scope", "CustomObjectScope",
        "get_registered_object", "get_registered_name", "to_categorical", "plot_model", "Sequence",
        "get_file", "normalize", "Progbar"]),
    ("tf.train", "fastckpt.train", [
        "Checkpoint", "CheckpointManager", "CheckpointReader", "CheckpointOptions", "latest_checkpoint",
        "load_checkpoint", "list_variables", "get_checkpoint_state", "checkpoints_iterator"]),
]

HEADER = """\
# Coming from tf.keras

<!-- Generated by `python tools/gen_compat.py` from the code; do not edit by hand.
     tests/test_distribution.py regenerates this page and fails when it is stale. -->

fastckpt is shaped like `tf.keras`: most training scripts written for TensorFlow 2 run with their imports
changed to

```python
import fastckpt as tf
from fastckpt import keras
```

Checkpoints are TensorFlow's format: `model.save_weights("ckpt/cp.ckpt")` here is read by
`tf.train.load_checkpoint` and tf.keras `load_weights`, and the reverse. Whole models save as a directory,
Keras HDF5 (`.h5`) or Keras 3 (`.keras`); loading never runs code from the file.

The tables below list the `tf.keras` (and `tf`, `tf.train`) names that ordinary training code uses, and
whether fastckpt has each one, looked up in fastckpt {version} itself. A name that exists takes the Keras
arguments; an argument fastckpt does not implement raises `NotImplementedError` or `ValueError` naming it,
never silently does something else. Names fastckpt has beyond the list are shown under each table.

Main differences: models are `Sequential` stacks (no functional API), layers are `Dense`, `Dropout` and
your own `Layer` subclasses (a subclass that defines `grad()` trains with the same kernels), inputs are
NumPy arrays (no `tf.data`, no `GradientTape`, no `tf.function`).

**{have} of the {total} listed names exist.**
"""


def _resolve(path: str):
    module, _, rest = path.partition(".")
    obj = importlib.import_module(module)
    for part in rest.split(".") if rest else []:
        obj = getattr(obj, part)
    return obj


def _has(obj, name: str) -> bool:
    """A module's public names are its ``__all__`` (a submodule that happens to be imported, such as
    ``fastckpt.config``, is not ``tf.config``); a class's are its attributes."""
    exported = getattr(obj, "__all__", None)
    if exported is not None:
        return name in exported and hasattr(obj, name)
    return hasattr(obj, name)


def generate() -> str:
    import fastckpt
    sections = []
    have = total = 0
    for tf_name, path, names in NAMESPACES:
        obj = _resolve(path)
        rows = ["| `{}` | fastckpt |".format(tf_name), "|---|---|"]
        for name in names:
            ok = _has(obj, name)
            have += ok
            total += 1
            rows.append(f"| `{name}` | {'`' + path + '.' + name + '`' if ok else 'not available'} |")
        extra = [n for n in (getattr(obj, "__all__", None) or []) if n not in names]
        text = f"## `{tf_name}`\n\n" + "\n".join(rows) + "\n"
        if extra:
            text += "\nAlso in `{}`: {}.\n".format(path, ", ".join(f"`{n}`" for n in sorted(extra)))
        sections.append(text)
    return HEADER.format(version=fastckpt.__version__, have=have, total=total) + "\n" + "\n".join(sections)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the page instead of writing it")
    parser.add_argument("--output", default=PAGE)
    args = parser.parse_args(argv)
    text = generate()
    if args.check:
        try:
            with open(args.output, encoding="utf-8") as f:
                current = f.read()
        except FileNotFoundError:
            current = ""
        if current != text:
            sys.stdout.writelines(difflib.unified_diff(current.splitlines(True), text.splitlines(True),
                                                       args.output, "generated"))
            print(f"{args.output} is stale: run python tools/gen_compat.py", file=sys.stderr)
            return 1
        return 0
    with open(args.output, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
