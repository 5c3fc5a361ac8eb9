"""Compile configs: tf_keras' ``training_config`` (``.h5``) and Keras 3's ``compile_config``.

A compiled model is restored with the same optimizer class and hyper-parameters, the same loss
and the same metrics *by identity*: a metric given as ``'accuracy'`` is stored as ``'accuracy'``
and re-resolved against the loss on load, so it comes back named ``accuracy`` and computed as
sparse categorical accuracy (TF 2.3 lost this and printed 9 % for a 96 % model). Classes resolve
as for layers: fastckpt's built-ins and what the caller provides, never an import.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from fastckpt.checks import is_real
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


def _outputs(model):
    """``(output names, CompiledOutputs)`` of a model compiled for several outputs, else None."""
    comp = getattr(model, "_compiled", None)
    if comp is None or len(comp.losses) <= 1:
        return None
    return list(comp.names), comp


def _loss_entry(model, dialect: str) -> Any:
    multi = _outputs(model)
    if multi is not None:  # {output name: loss entry}, as tf_keras writes a dict of losses
        names, comp = multi
        return {name: None if loss is None else _one_loss_entry(loss, dialect)
                for name, loss in zip(names, comp.losses)}
    stored = (getattr(model, "_compile_config", None) or {}).get("loss")
    if isinstance(stored, str):
        return stored
    return _one_loss_entry(model.loss, dialect)


def _one_loss_entry(loss, dialect: str) -> Any:
    config = dict(loss.get_config())
    if config.get("reduction") == "auto":
        config["reduction"] = "sum_over_batch_size"  # same meaning; Keras 3 rejects "auto"
    entry = {"class_name": get_registered_name(type(loss)), "config": config}
    if dialect == "keras3":
        entry = {"module": "keras.losses", **entry, "registered_name": None}
    return entry


def _metric_entries(model, dialect: str, weighted: bool = False) -> Any:
    # Always the resolved metric, never the bare name: tf_keras 2.21 re-resolves a stored
    # 'accuracy' as *categorical* accuracy when it loads an .h5 (the TF 2.3 tutorial's 9 %);
    # SparseCategoricalAccuracy named 'accuracy' keeps both the name and the computation.
    comp = getattr(model, "_compiled", None)
    multi = _outputs(model)
    if multi is not None:  # {output name: [entries]}
        names, comp = multi
        groups = comp.weighted_metrics if weighted else comp.metrics
        return {name: [_one_metric_entry(m, dialect, prefix=f"{name}_") for m in group]
                for name, group in zip(names, groups)}
    if comp is not None:
        group = (comp.weighted_metrics if weighted else comp.metrics)[0]
    else:
        group = [] if weighted else model.compiled_metrics
    if weighted and not group:
        return None
    return [_one_metric_entry(m, dialect) for m in group]


def _one_metric_entry(metric, dialect: str, prefix: str = "") -> Dict[str, Any]:
    config = dict(metric.get_config())
    name = config.get("name")
    if prefix and isinstance(name, str) and name.startswith(prefix):
        # compile names an output's metric '<output>_<name>'; the config keeps the given name,
        # which compile prefixes again when the model is loaded (as tf_keras).
        config["name"] = name[len(prefix):]
    entry = {"class_name": get_registered_name(type(metric)), "config": config}
    if dialect == "keras3":
        entry = {"module": "keras.metrics", **entry, "registered_name": None}
    return entry


def _loss_weights(model) -> Any:
    return (getattr(model, "_compile_config", None) or {}).get("loss_weights")


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
                "weighted_metrics": _metric_entries(model, dialect, weighted=True),
                "loss_weights": _loss_weights(model),
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
            "loss": _loss_entry(model, dialect), "loss_weights": _loss_weights(model),
            "metrics": _metric_entries(model, dialect),
            "weighted_metrics": _metric_entries(model, dialect, weighted=True),
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
    """One output's metrics: tf_keras nests them (``[[m]]``) or keys them by output name."""
    if value is None:
        return []
    if isinstance(value, dict) and "class_name" not in value:
        if len(value) != 1:
            raise CorruptCheckpointError(f"expected the metrics of one output, got {len(value)}")
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
    if isinstance(loss, dict) and "class_name" not in loss:  # several outputs, by name
        _check_count(loss, "losses")
        kwargs["loss"] = {str(k): None if v is None else _loss_from(v, custom_objects)
                          for k, v in loss.items()}
    elif isinstance(loss, list):  # several outputs, in order
        _check_count(loss, "losses")
        kwargs["loss"] = [None if v is None else _loss_from(v, custom_objects) for v in loss]
    else:
        kwargs["loss"] = _loss_from(loss, custom_objects)
    for key in ("metrics", "weighted_metrics"):
        value = config.get(key)
        if not value:
            continue
        if isinstance(value, dict) and "class_name" not in value and len(value) > 1:
            _check_count(value, key)
            kwargs[key] = {str(k): [_metric_from(m, custom_objects) for m in _flat_metrics(v)]
                           for k, v in value.items()}
        elif isinstance(value, list) and len(value) > 1 and all(isinstance(v, list) for v in value):
            _check_count(value, key)
            kwargs[key] = [[_metric_from(m, custom_objects) for m in _flat_metrics(v)] for v in value]
        else:
            kwargs[key] = [_metric_from(m, custom_objects) for m in _flat_metrics(value)]
    weights = config.get("loss_weights")
    if weights is not None:
        if isinstance(weights, dict):
            _check_count(weights, "loss_weights")
            weights = {str(k): _weight(v) for k, v in weights.items()}
        elif isinstance(weights, list):
            _check_count(weights, "loss_weights")
            weights = [_weight(v) for v in weights]
        else:
            raise CorruptCheckpointError(f"loss_weights: expected a list or dict, got {weights!r:.80}")
        kwargs["loss_weights"] = weights
    return kwargs


def _weight(v) -> float:
    if not is_real(v):
        raise CorruptCheckpointError(f"loss_weights: expected numbers, got {v!r:.80}")
    return float(v)


def _check_count(value, what: str) -> None:
    if len(value) > 10000:
        raise UnsafeFileError(f"{len(value)} {what} listed; refused")


def _resolve(entry, kind, builtins, custom_objects):
    return resolve_class(entry, kind, builtins, custom_objects)
