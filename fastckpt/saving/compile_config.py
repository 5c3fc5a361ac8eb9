"""Compile configs: tf_keras' ``training_config`` (``.h5``) and Keras 3's ``compile_config``.

A compiled model is restored with the same optimizer class and hyper-parameters, the same loss
and the same metrics *by identity*: a metric given as ``'accuracy'`` is stored as ``'accuracy'``
and re-resolved against the loss on load, so it comes back named ``accuracy`` and computed as
sparse categorical accuracy (TF 2.3 lost this and printed 9 % for a 96 % model). Classes resolve
as for layers: fastckpt's built-ins and what the caller provides, never an import.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from fastckpt import losses, metrics, optimizers
from fastckpt.errors import CorruptCheckpointError, UnknownObjectError, UnsafeFileError
from fastckpt.saving.model_config import resolve_class
from fastckpt.saving.serialization import get_registered_name

__all__ = ["compile_to_config", "compile_from_config"]

# Keras optimizer options that mean nothing here (always dropped), and options that are no-ops
# at the given value (dropped then; any other value reaches the constructor, which refuses it).
_OPTIMIZER_DROP = ("jit_compile", "is_legacy_optimizer")
_OPTIMIZER_INERT = {"loss_scale_factor": None, "gradient_accumulation_steps": None, "decay": 0.0}


def _optimizer_classes() -> Dict[str, Any]:
    return {name: getattr(optimizers, name) for name in optimizers.__all__
            if isinstance(getattr(optimizers, name), type) and name != "Optimizer"}


def _loss_entry(model, dialect: str) -> Any:
    stored = (getattr(model, "_compile_config", None) or {}).get("loss")
    if isinstance(stored, str):
        return stored
    loss = model.loss
    config = dict(loss.get_config())
    if config.get("reduction") == "auto":
        config["reduction"] = "sum_over_batch_size"  # same meaning; Keras 3 rejects "auto"
    entry = {"class_name": get_registered_name(type(loss)), "config": config}
    if dialect == "keras3":
        entry = {"module": "keras.losses", **entry, "registered_name": None}
    return entry


def _metric_entries(model, dialect: str) -> List[Any]:
    # Always the resolved metric, never the bare name: tf_keras 2.21 re-resolves a stored
    # 'accuracy' as *categorical* accuracy when it loads an .h5 (the TF 2.3 tutorial's 9 %);
    # SparseCategoricalAccuracy named 'accuracy' keeps both the name and the computation.
    out = []
    for metric in model.compiled_metrics:
        entry = {"class_name": get_registered_name(type(metric)), "config": metric.get_config()}
        if dialect == "keras3":
            entry = {"module": "keras.metrics", **entry, "registered_name": None}
        out.append(entry)
    return out


def compile_to_config(model, dialect: str = "tf_keras") -> Optional[Dict[str, Any]]:
    """The compile arguments of ``model`` as a config, or None if it is not compiled.

    ``dialect='tf_keras'`` gives an ``.h5`` ``training_config`` that tf_keras 2.21 and Keras 3
    both compile from (``"Custom>Adam"`` with ``is_legacy_optimizer: false`` is the spelling
    that makes tf_keras build its new optimizer, and so restore Adam slots); ``'keras3'`` gives
    the ``compile_config`` of a ``.keras`` archive.
    """
    if dialect not in ("tf_keras", "keras3"):
        raise ValueError(f"Expected dialect 'tf_keras' or 'keras3', got {dialect!r}")
    if getattr(model, "optimizer", None) is None or getattr(model, "loss", None) is None:
        return None
    opt = model.optimizer
    opt_config = dict(opt.get_config())
    cls_name = type(opt).__name__
    if dialect == "tf_keras":
        opt_config["is_legacy_optimizer"] = False
        return {"loss": _loss_entry(model, dialect), "metrics": _metric_entries(model, dialect),
                "weighted_metrics": None, "loss_weights": None,
                "optimizer_config": {"class_name": f"Custom>{cls_name}", "config": opt_config}}
    # Keras 3 refuses tf_keras-only arguments and writes two of its own.
    for k in _OPTIMIZER_DROP:
        opt_config.pop(k, None)
    opt_config.setdefault("loss_scale_factor", None)
    opt_config.setdefault("gradient_accumulation_steps", None)
    lr = opt_config.get("learning_rate")
    if isinstance(lr, dict) and isinstance(lr.get("config"), dict) and lr["config"].get("name") is None:
        # Keras 3's schedules name their scope by default and fail on name=None.
        opt_config["learning_rate"] = {**lr, "config": {**lr["config"], "name": lr["class_name"]}}
    return {"optimizer": {"module": "keras.optimizers", "class_name": cls_name, "config": opt_config,
                          "registered_name": None},
            "loss": _loss_entry(model, dialect), "loss_weights": None,
            "metrics": _metric_entries(model, dialect), "weighted_metrics": None,
            "run_eagerly": False, "steps_per_execution": 1, "jit_compile": False}


def _optimizer_from(entry: Any, custom_objects) -> Any:
    if isinstance(entry, str):
        try:
            return optimizers.get(entry)
        except ValueError as e:
            raise UnknownObjectError(f"optimizer: {e}") from None
    if not isinstance(entry, dict):
        raise CorruptCheckpointError(f"optimizer: expected a name or config dict, got {entry!r:.120}")
    cls = _resolve(entry, "optimizer", _optimizer_classes(), custom_objects)
    config = entry.get("config", {})
    if not isinstance(config, dict):
        raise CorruptCheckpointError(f"optimizer: config must be a dict, got {config!r:.120}")
    config = {k: v for k, v in config.items() if k not in _OPTIMIZER_DROP
              and not (k in _OPTIMIZER_INERT and v == _OPTIMIZER_INERT[k])}
    if isinstance(config.get("learning_rate"), dict):
        try:
            config["learning_rate"] = optimizers.schedules.deserialize(config["learning_rate"],
                                                                       custom_objects=custom_objects)
        except (TypeError, ValueError) as e:
            raise CorruptCheckpointError(f"optimizer {cls.__name__}: learning_rate schedule: {e}"
                                         ) from None
    return _build(cls, config, "optimizer")


def _known_name(name: str, what: str, getter) -> str:
    """A string identifier is kept as given (so the restored compile config is the original one),
    once the registry knows it."""
    try:
        getter(name)
    except ValueError as e:
        raise UnknownObjectError(f"{what}: {e}") from None
    return name


def _build(cls, config: Dict[str, Any], what: str):
    try:
        return cls.from_config(config)
    except (TypeError, ValueError) as e:
        raise CorruptCheckpointError(f"{what} {cls.__name__}: could not build it from its config: "
                                     f"{e}") from None


def _loss_from(entry: Any, custom_objects) -> Any:
    if isinstance(entry, str):
        return _known_name(entry, "loss", losses.get)
    if not isinstance(entry, dict):
        raise CorruptCheckpointError(f"loss: expected a name or config dict, got {entry!r:.120}")
    if entry.get("class_name") == "function" and isinstance(entry.get("config"), str):
        return _loss_from(entry["config"], custom_objects)
    cls = _resolve(entry, "loss", losses.BUILTIN_LOSSES, custom_objects)
    # The built-in losses take tf_keras' "fn" (checked) and Keras 3's "dtype" entries themselves.
    return _build(cls, dict(entry.get("config") or {}), "loss")


def _metric_from(entry: Any, custom_objects) -> Any:
    if isinstance(entry, str):  # 'accuracy' is resolved against the loss by compile, as before
        return _known_name(entry, "metric", metrics.get)
    if not isinstance(entry, dict):
        raise CorruptCheckpointError(f"metric: expected a name or config dict, got {entry!r:.120}")
    config = dict(entry.get("config") or {}) if isinstance(entry.get("config"), dict) else {}
    if entry.get("class_name") == "function" and isinstance(entry.get("config"), str):
        return _metric_from(entry["config"], custom_objects)
    if entry.get("class_name") == "MeanMetricWrapper":
        fn = config.get("fn")
        if fn == "sparse_categorical_accuracy":  # the natively counted one
            return metrics.SparseCategoricalAccuracy(name=str(config.get("name", fn)))
        try:
            return metrics.MeanMetricWrapper.from_config(config)
        except (TypeError, ValueError) as e:
            raise UnknownObjectError(f"metric {config.get('name')!r} wraps the function "
                                     f"{fn!r:.80}: {e}") from None
    cls = _resolve(entry, "metric", metrics.BUILTIN_METRICS, custom_objects)
    return _build(cls, config, "metric")


def _flat_metrics(value: Any) -> List[Any]:
    """tf_keras nests metrics per output (``[[m]]``) or keys them by output name; one output here."""
    if value is None:
        return []
    if isinstance(value, dict):
        if len(value) != 1:
            raise NotImplementedError(f"metrics for {len(value)} outputs; fastckpt models have one")
        value = next(iter(value.values()))
    if not isinstance(value, list):
        value = [value]
    if len(value) == 1 and isinstance(value[0], list):
        value = value[0]
    if len(value) > 1000:
        raise UnsafeFileError(f"{len(value)} metrics listed; refused")
    return value


def compile_from_config(config: Dict[str, Any], custom_objects: Optional[Dict[str, Any]] = None
                        ) -> Dict[str, Any]:
    """Keyword arguments for ``model.compile`` from a tf_keras ``training_config`` or a Keras 3
    ``compile_config``. The optimizer comes back as an instance (with its hyper-parameters); the
    loss and metrics as the names or objects they were given as, so ``'accuracy'`` keeps both its
    name and its meaning. ``optimizer`` is absent when the config has none (Keras 3 omits it when
    compiled with a name)."""
    if not isinstance(config, dict):
        raise CorruptCheckpointError(f"Expected a compile config dict, got {type(config).__name__}")
    kwargs: Dict[str, Any] = {}
    opt = config.get("optimizer_config", config.get("optimizer"))
    if opt is not None:
        kwargs["optimizer"] = _optimizer_from(opt, custom_objects)
    loss = config.get("loss")
    if loss is None:
        raise CorruptCheckpointError("compile config has no loss")
    if isinstance(loss, list) and len(loss) == 1:
        loss = loss[0]
    if isinstance(loss, dict) and "class_name" not in loss and len(loss) == 1:
        loss = next(iter(loss.values()))  # {output_name: loss}
    kwargs["loss"] = _loss_from(loss, custom_objects)
    kwargs["metrics"] = [_metric_from(m, custom_objects) for m in _flat_metrics(config.get("metrics"))]
    for key in ("loss_weights", "weighted_metrics"):
        if config.get(key):
            kwargs[key] = config[key]  # compile says plainly that it does not support these
    return kwargs


def _resolve(entry, kind, builtins, custom_objects):
    return resolve_class(entry, kind, builtins, custom_objects)
