"""``TensorBoard``: write training curves and weight histograms as TensorBoard event files.

The files are written with tensorboardX (``pip install fastckpt[tensorboard]``), a maintained
writer of TensorBoard's event format, and laid out as tf.keras lays them out, so ``tensorboard
--logdir logs`` shows the same runs and tags: ``logs/train`` and ``logs/validation``, scalars
``epoch_loss``, ``epoch_<metric>``, ``epoch_learning_rate`` (and ``batch_<name>`` with
``update_freq='batch'``), and ``<layer>/<weight>_0/histogram`` with ``histogram_freq``.

Only side files: the callback reads the logs and the weights and changes nothing in training.
"""

from __future__ import annotations

import importlib
import itertools
import json
import os
import time
import warnings
from typing import Any, Dict, Optional

import numpy as np

from fastckpt.callbacks.callback import Callback, Logs
from fastckpt.checks import is_int
from fastckpt.saving.model_config import model_to_config

__all__ = ["TensorBoard"]

_WRITER_IDS = itertools.count()
_IGNORED_KWARGS = ("write_grads", "batch_size", "embeddings_layer_names", "embeddings_data")


def _import_writer():
    try:
        return importlib.import_module("tensorboardX")
    except ImportError as e:
        raise ImportError("keras.callbacks.TensorBoard writes its event files with tensorboardX, "
                          "which is not installed: pip install 'fastckpt[tensorboard]' (or "
                          "pip install tensorboardX)") from e


def _profile_range(profile_batch) -> tuple:
    message = (f"profile_batch must be a non-negative integer or 2-tuple of positive integers. "
               f"A pair of positive integers signifies a range of batches to profile. Found: "
               f"{profile_batch!r}")
    value = profile_batch
    if isinstance(value, str):
        try:
            value = [int(p) for p in value.split(",")]
        except ValueError:
            raise ValueError(message) from None
        value = value[0] if len(value) == 1 else value
    if is_int(value):
        start = stop = int(value)
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(is_int(v) for v in value):
        start, stop = int(value[0]), int(value[1])
    else:
        raise ValueError(message)
    if start < 0 or stop < start:
        raise ValueError(message)
    return start, stop


class TensorBoard(Callback):
    """Logs ``fit``'s metrics and weights for TensorBoard.

    Args:
        log_dir: where to write; runs go to ``log_dir/train`` and ``log_dir/validation``.
        histogram_freq: every this many epochs, a histogram of every weight (0: never).
        write_graph: write the model's config (TensorBoard's Keras "conceptual graph"). No
            TensorFlow op graph is written: fastckpt has none.
        write_images: also write each weight histogrammed as an image (needs Pillow).
        write_steps_per_second: log training speed (``epoch_steps_per_second`` and, with
            per-batch logging, ``batch_steps_per_second``).
        update_freq: ``'epoch'``; ``'batch'`` or an integer N: also write ``batch_<name>``
            every N training batches (the running means of the epoch so far, as in tf.keras),
            stepped by the number of batches since ``fit`` started.
        profile_batch: accepted and checked as in tf.keras; fastckpt has no TensorFlow
            profiler, so a non-zero value only warns.
        embeddings_freq: every this many epochs, save the weights beside a
            ``projector_config.pbtxt`` naming every ``Embedding`` layer's table.
        embeddings_metadata: a metadata file path, or a dict of layer name -> path.

    With ``update_freq='epoch'`` (the default) the callback listens to no batch hook, so ``fit``
    still runs whole epochs natively.

    Example:
        >>> import tempfile
        >>> cb = TensorBoard(log_dir=tempfile.mkdtemp(), update_freq="batch")
        >>> cb.implements_batch_hooks("train")
        True
    """

    def __init__(self, log_dir="logs", histogram_freq: int = 0, write_graph: bool = True,
                 write_images: bool = False, write_steps_per_second: bool = False,
                 update_freq="epoch", profile_batch=0, embeddings_freq: int = 0,
                 embeddings_metadata=None, **kwargs) -> None:
        super().__init__()
        unknown = set(kwargs) - set(_IGNORED_KWARGS)
        if unknown:
            raise ValueError(f"Unrecognized arguments in `TensorBoard` Callback: {sorted(unknown)}. "
                             f"Supported kwargs are: {list(_IGNORED_KWARGS)}")
        for k in _IGNORED_KWARGS:
            if kwargs.get(k):
                warnings.warn(f"TensorBoard: `{k}` is ignored (as in tf.keras 2.x)", stacklevel=2)
        self._tbx = _import_writer()
        if not isinstance(log_dir, (str, os.PathLike)):
            raise TypeError(f"TensorBoard: expected log_dir to be a path, got {log_dir!r:.80}")
        for name, value in (("histogram_freq", histogram_freq), ("embeddings_freq", embeddings_freq)):
            if not is_int(value) or value < 0:
                raise ValueError(f"TensorBoard: expected {name} to be an integer >= 0, got {value!r}")
        if update_freq == "batch":
            update_freq = 1
        elif update_freq != "epoch" and not (is_int(update_freq) and update_freq > 0):
            raise ValueError(f"TensorBoard: expected update_freq to be 'epoch', 'batch' or a "
                             f"positive integer, got {update_freq!r}")
        if embeddings_metadata is not None and not isinstance(embeddings_metadata, (str, dict)):
            raise TypeError(f"TensorBoard: expected embeddings_metadata to be a path or a dict "
                            f"of layer name -> path, got {embeddings_metadata!r:.80}")
        self.log_dir = os.fspath(log_dir)
        self.histogram_freq = int(histogram_freq)
        self.write_graph = bool(write_graph)
        self.write_images = bool(write_images)
        self.write_steps_per_second = bool(write_steps_per_second)
        self.update_freq = update_freq
        self.profile_batch = profile_batch
        self._start_batch, self._stop_batch = _profile_range(profile_batch)
        if self._stop_batch > 0:
            warnings.warn("TensorBoard: profile_batch is ignored: fastckpt has no TensorFlow "
                          "profiler", stacklevel=2)
        self.embeddings_freq = int(embeddings_freq)
        self.embeddings_metadata = embeddings_metadata
        self._writers: Dict[str, Any] = {}
        self._train_step = 0
        self._batch_start = 0.0
        self._epoch_start = 0.0
        self._epoch_iterations = 0
        self._warned_images = False

    # --- writers -------------------------------------------------------------------------------
    def _writer(self, run: str):
        writer = self._writers.get(run)
        if writer is None:
            # A suffix per writer, as TensorFlow's own: two writers opened in the same second
            # (two fits) would otherwise share one file name, and the second would truncate it.
            # Zero-padded, so files of one second sort (and are read back) in opening order.
            suffix = f".{os.getpid()}.{next(_WRITER_IDS):08d}.v2"
            writer = self._tbx.SummaryWriter(os.path.join(self.log_dir, run), filename_suffix=suffix)
            self._writers[run] = writer
        return writer

    def _close_writers(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers = {}

    def _scalars(self, run: str, prefix: str, logs: Dict[str, Any], step: int) -> None:
        writer = self._writer(run)
        for name, value in logs.items():
            try:
                value = float(np.mean(value))
            except (TypeError, ValueError):
                continue  # not a number (e.g. predict outputs)
            writer.add_scalar(prefix + name, value, global_step=step)

    # --- hooks ---------------------------------------------------------------------------------
    def implements_batch_hooks(self, kind: str) -> bool:
        super().implements_batch_hooks(kind)  # checks kind
        return kind == "train" and self.update_freq != "epoch"

    def set_model(self, model: Any) -> None:
        super().set_model(model)
        self._close_writers()
        if self.write_graph:
            self._write_model_config()
        if self.embeddings_freq:
            self._configure_embeddings()

    def on_train_begin(self, logs: Logs = None) -> None:
        self._train_step = 0

    def on_train_end(self, logs: Logs = None) -> None:
        self._close_writers()

    def on_train_batch_begin(self, batch: int, logs: Logs = None) -> None:
        if self.write_steps_per_second:
            self._batch_start = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: Logs = None) -> None:
        self._train_step += 1
        step = self._train_step
        if self.update_freq == "epoch" or step % self.update_freq:
            return
        if self.write_steps_per_second:
            elapsed = time.perf_counter() - self._batch_start
            if elapsed > 0:
                self._writer("train").add_scalar("batch_steps_per_second", 1.0 / elapsed,
                                                 global_step=step)
        if isinstance(logs, dict):
            self._scalars("train", "batch_", logs, step)

    def on_epoch_begin(self, epoch: int, logs: Logs = None) -> None:
        if self.write_steps_per_second:
            self._epoch_iterations = self._iterations()
            self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: Logs = None) -> None:
        train_logs = {k: v for k, v in (logs or {}).items() if not k.startswith("val_")}
        val_logs = {k[4:]: v for k, v in (logs or {}).items() if k.startswith("val_")}
        lr = self._learning_rate()
        if lr is not None and "learning_rate" not in train_logs:
            train_logs["learning_rate"] = lr
        if self.write_steps_per_second:
            elapsed = time.perf_counter() - self._epoch_start
            if elapsed > 0:
                train_logs["steps_per_second"] = (self._iterations() - self._epoch_iterations) / elapsed
        if train_logs:
            self._scalars("train", "epoch_", train_logs, epoch)
        if val_logs:
            self._scalars("validation", "epoch_", val_logs, epoch)
        if self.histogram_freq and epoch % self.histogram_freq == 0:
            self._log_weights(epoch)
        if self.embeddings_freq and epoch % self.embeddings_freq == 0:
            self.model.save_weights(os.path.join(self.log_dir, "train",
                                                 f"keras_embedding.ckpt-{epoch}"))
        for writer in self._writers.values():
            writer.flush()  # readable by a running TensorBoard after every epoch

    def on_test_end(self, logs: Logs = None) -> None:
        # tf.keras also logs every evaluation against the optimizer's step count.
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is None or not logs or not hasattr(optimizer, "iterations"):
            return
        step = self._iterations()
        writer = self._writer("validation")
        for name, value in logs.items():
            try:
                value = float(np.mean(value))
            except (TypeError, ValueError):
                continue
            writer.add_scalar(f"evaluation_{name}_vs_iterations", value, global_step=step)

    # --- helpers ---------------------------------------------------------------------------------
    def _iterations(self) -> int:
        optimizer = getattr(self.model, "optimizer", None)
        iterations = getattr(optimizer, "iterations", None)
        if iterations is None:
            return 0
        value = getattr(iterations, "value", iterations)
        return int(np.asarray(value))

    def _learning_rate(self) -> Optional[float]:
        optimizer = getattr(self.model, "optimizer", None)
        lr = getattr(optimizer, "learning_rate", None)
        if lr is None:
            return None
        if callable(lr):  # a schedule: its value at the current step
            lr = lr(self._iterations())
        try:
            return float(np.asarray(getattr(lr, "value", lr)))
        except (TypeError, ValueError):
            return None

    def _log_weights(self, epoch: int) -> None:
        writer = self._writer("train")
        for layer in getattr(self.model, "layers", []):
            for weight in layer.weights:
                name = weight.name.replace(":", "_")
                value = np.asarray(weight.numpy() if hasattr(weight, "numpy") else weight)
                writer.add_histogram(name + "/histogram", value.astype(np.float64, copy=False),
                                     global_step=epoch)
                if self.write_images:
                    self._log_image(writer, name + "/image", value, epoch)

    def _log_image(self, writer, tag: str, value: np.ndarray, epoch: int) -> None:
        """As tf.keras: a 1-D weight as one row, a 2-D one with its longer axis across."""
        w = np.squeeze(value)
        if w.ndim == 1:
            img = w.reshape(1, -1, 1)
        elif w.ndim == 2:
            img = (w.T if w.shape[0] > w.shape[1] else w)[:, :, None]
        else:
            return
        try:
            writer.add_image(tag, img.astype(np.float32), global_step=epoch, dataformats="HWC")
        except ImportError:  # tensorboardX encodes PNGs with Pillow
            if not self._warned_images:
                warnings.warn("TensorBoard: write_images needs Pillow (pip install pillow); "
                              "no images written", stacklevel=2)
                self._warned_images = True

    def _write_model_config(self) -> None:
        """The model's Keras config under the tag ``keras`` (TensorBoard's graph plugin draws it)."""
        try:
            config = model_to_config(self.model)
        except (NotImplementedError, ValueError, TypeError, AttributeError):
            return  # a model without a Keras config (tf.keras skips subclassed models too)
        summary_pb2 = importlib.import_module("tensorboardX.proto.summary_pb2")
        tensor_pb2 = importlib.import_module("tensorboardX.proto.tensor_pb2")
        types_pb2 = importlib.import_module("tensorboardX.proto.types_pb2")
        shape_pb2 = importlib.import_module("tensorboardX.proto.tensor_shape_pb2")
        metadata = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="graph_keras_model",
                                                               content=b"1"))
        tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING,
                                        string_val=[json.dumps(config).encode("utf-8")],
                                        tensor_shape=shape_pb2.TensorShapeProto())
        summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(
            tag="keras", metadata=metadata, tensor=tensor)])
        self._writer("train")._get_file_writer().add_summary(summary, global_step=0)

    def _configure_embeddings(self) -> None:
        """``projector_config.pbtxt`` naming each ``Embedding`` layer's table in the weights
        saved every ``embeddings_freq`` epochs."""
        metadata = self.embeddings_metadata
        remaining = dict(metadata) if isinstance(metadata, dict) else {}
        entries = []
        with_weights = [layer for layer in getattr(self.model, "layers", []) if layer.weights]
        for i, layer in enumerate(with_weights):
            if type(layer).__name__ != "Embedding":
                continue
            entry = f'embeddings {{\n  tensor_name: "layer_with_weights-{i}/embeddings/.ATTRIBUTES/VARIABLE_VALUE"\n'
            path = metadata if isinstance(metadata, str) else remaining.pop(layer.name, None)
            if path is not None:
                entry += f"  metadata_path: {json.dumps(str(path))}\n"
            entries.append(entry + "}\n")
        if remaining:
            raise ValueError(f"Unrecognized `Embedding` layer names passed to `keras.callbacks."
                             f"TensorBoard` `embeddings_metadata` argument: {sorted(remaining)}")
        os.makedirs(self.log_dir, exist_ok=True)
        with open(os.path.join(self.log_dir, "projector_config.pbtxt"), "w", encoding="utf-8") as f:
            f.write("".join(entries))
