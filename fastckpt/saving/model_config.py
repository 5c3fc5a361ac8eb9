"""Model and compile configs in the JSON dialects of tf_keras 2.x and Keras 3.

Writing: ``model_to_config`` produces the tf_keras 2.x ``model_config`` dialect (both Keras
versions load it from an ``.h5``); ``model_to_keras3_config`` the Keras 3 dialect a ``.keras``
archive needs (``module``/``registered_name``, DTypePolicy dicts, ``InputLayer.batch_shape``,
``build_config``). Reading: ``model_from_config`` accepts either dialect.

Reading is data-only. A ``class_name`` resolves to a fastckpt built-in or to a class the caller
provided (``custom_objects``, ``custom_object_scope``, ``register_keras_serializable``); a
``module`` key is never imported. Lambda layers are refused outright, because their config *is*
code. Shapes and sizes are bounded before any layer allocates weights.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Tuple

from fastckpt import initializers, ops
from fastckpt.checks import is_int, is_real
from fastckpt.errors import CorruptCheckpointError, FastckptError, UnknownObjectError, UnsafeFileError
from fastckpt.layers import Dense, Dropout, InputLayer, Layer
from fastckpt.saving import limits
from fastckpt.saving.model_registry import model_class
from fastckpt.saving.serialization import BUILTIN_LAYERS, get_registered_name, get_registered_object

__all__ = ["model_to_config", "model_to_keras3_config", "model_from_config", "resolve_class",
           "dtype_policy", "normalize_dtype", "BUILTIN_LAYERS"]

# Layers whose config holds Python code (bytecode, source or an op name to look up).
LAMBDA_LAYERS = ("Lambda", "TFOpLambda", "SlicingOpLambda", "__lambda__")
# Keys Keras adds that change nothing when they hold these values; anything else is passed on,
# so the layer itself says what it does not support.
_INERT_KEYS = {"quantization_config": None, "lora_rank": None, "lora_alpha": None,
               "optional": False, "sparse": False, "ragged": False, "autocast": True,
               "activity_regularizer": None, "input_axes": None, "output_axes": None}
_HOW_TO_PROVIDE = ("pass custom_objects={{{name!r}: {short}}} to load_model, load inside "
                   "keras.utils.custom_object_scope({{{name!r}: {short}}}), or decorate the class "
                   "with @keras.utils.register_keras_serializable()")


# --- shared helpers ---------------------------------------------------------------------------
def dtype_policy(name: str) -> Dict[str, Any]:
    """The Keras 3 spelling of a layer dtype."""
    return {"module": "keras", "class_name": "DTypePolicy", "config": {"name": name},
            "registered_name": None}


def normalize_dtype(value: Any, where: str) -> Optional[str]:
    """``'float32'``, a Keras 3 ``DTypePolicy`` dict or None -> a dtype name fastckpt accepts."""
    if value is None or isinstance(value, str):
        name = value
    elif isinstance(value, dict) and isinstance(value.get("config"), dict):
        name = value["config"].get("name")
    else:
        raise CorruptCheckpointError(f"{where}: expected a dtype name or DTypePolicy, got {value!r:.120}")
    if name is not None and name not in ("float32", "float64", "float16", "int32", "int64"):
        raise NotImplementedError(f"{where}: dtype policy {name!r} is not supported (expected "
                                  f"float32, float64 or float16)")
    return name


def resolve_class(entry: Dict[str, Any], kind: str, builtins: Dict[str, Any],
                  custom_objects: Optional[Dict[str, Any]]):
    """The class an entry names: the caller's objects first, then fastckpt's built-ins.

    Tried in order: ``registered_name`` (Keras 3 ``"Package>Name"``), ``class_name``, and the part
    after ``>`` (tf_keras writes ``"Custom>Adam"``). Nothing is imported.
    """
    class_name = entry.get("class_name")
    if not isinstance(class_name, str) or not class_name or len(class_name) > 256:
        raise CorruptCheckpointError(f"Expected a {kind} entry with a string class_name, got "
                                     f"{class_name!r:.100}")
    names = []
    registered = entry.get("registered_name")
    if isinstance(registered, str) and registered:
        names.append(registered)
    names += [class_name, class_name.split(">")[-1]]
    for n in names:
        cls = get_registered_object(n, custom_objects, builtins)
        if cls is not None:
            return cls
    shown = registered if isinstance(registered, str) and registered else class_name
    raise UnknownObjectError(
        f"Unknown {kind}: {shown!r}. fastckpt only builds classes it knows or that you provide: "
        + _HOW_TO_PROVIDE.format(name=shown, short=class_name.split(">")[-1]))


def _check_not_lambda(entry: Dict[str, Any], where: str) -> None:
    names = (entry.get("class_name"), entry.get("registered_name"))  # any JSON value
    if any(isinstance(n, str) and n.split(">")[-1] in LAMBDA_LAYERS for n in names):
        raise UnsafeFileError(
            f"{where}: the file contains a {entry.get('class_name')} layer. Lambda layers store "
            f"Python code, and fastckpt refuses to run code from a file. Rewrite it as a subclass "
            f"of keras.layers.Layer with get_config() and load it with custom_objects.")


# --- writing -------------------------------------------------------------------------------------
# Layer-config keys holding a Keras object, and the Keras 3 module each is written under.
_OBJECT_MODULES = {"kernel_initializer": "keras.initializers", "bias_initializer": "keras.initializers",
                   "kernel_regularizer": "keras.regularizers", "bias_regularizer": "keras.regularizers",
                   "activity_regularizer": "keras.regularizers",
                   "kernel_constraint": "keras.constraints", "bias_constraint": "keras.constraints"}


def _initializer_entry(value: Any, module: str = "keras.initializers") -> Any:
    if isinstance(value, dict) and "class_name" in value:
        return {"module": module, "class_name": value["class_name"],
                "config": dict(value.get("config", {})), "registered_name": None}
    return value


def _layer_entries(model) -> List[Tuple[Layer, Dict[str, Any]]]:
    entries = []
    input_layer = getattr(model, "_input_layer", None)
    layers = ([input_layer] if input_layer is not None else []) + list(model.layers)
    for layer in layers:
        config = dict(layer.get_config())
        if type(layer) in BUILTIN_LAYERS.values():
            for key, module in _OBJECT_MODULES.items():
                if key in config:
                    config[key] = _initializer_entry(config[key], module)
        entries.append((layer, config))
    return entries


def model_to_config(model) -> Dict[str, Any]:
    """The tf_keras 2.x ``model_config`` of a ``Sequential`` (what an ``.h5`` file stores)."""
    _require_sequential(model)
    layers = [{"class_name": get_registered_name(type(layer)), "config": config}
              for layer, config in _layer_entries(model)]
    return {"class_name": "Sequential", "config": {"name": model.name, "layers": layers}}


def model_to_keras3_config(model) -> Dict[str, Any]:
    """The Keras 3 ``config.json`` body of a built ``Sequential`` (without ``compile_config``)."""
    _require_sequential(model)
    if not model.built:
        raise ValueError(f"Model {model.name!r} has not been built: a .keras file needs its input "
                         f"shape. Call the model on data or give the first layer an input_shape.")
    input_shape = list(model.input_shape)
    layers = [{"module": "keras.layers", "class_name": "InputLayer",
               "config": {"batch_shape": input_shape, "dtype": "float32", "sparse": False,
                          "ragged": False, "name": _input_name(model), "optional": False},
               "registered_name": None}]
    shape = tuple(input_shape)
    for layer, config in _layer_entries(model):
        if isinstance(layer, InputLayer):
            continue
        config.pop("batch_input_shape", None)
        if isinstance(config.get("dtype"), str):
            config["dtype"] = dtype_policy(config["dtype"])
        cls = type(layer)
        builtin = cls in BUILTIN_LAYERS.values()
        layers.append({"module": "keras.layers" if builtin else cls.__module__,
                       "class_name": cls.__name__ if builtin else cls.__name__,
                       "config": config,
                       "registered_name": None if builtin else get_registered_name(cls),
                       "build_config": {"input_shape": list(shape)}})
        shape = tuple(layer.compute_output_shape(shape))
    return {"module": "keras", "class_name": "Sequential",
            "config": {"name": model.name, "trainable": True, "dtype": dtype_policy("float32"),
                       "layers": layers, "build_input_shape": input_shape},
            "registered_name": None, "build_config": {"input_shape": input_shape}}


def _input_name(model) -> str:
    input_layer = getattr(model, "_input_layer", None)
    return input_layer.name if input_layer is not None else "input_layer"


def _require_sequential(model) -> None:
    if not isinstance(model, model_class("Sequential")):
        raise NotImplementedError(f"Only Sequential models can be saved as Keras configs, got "
                                  f"{type(model).__name__}")


# --- reading -------------------------------------------------------------------------------------
def _activation(value: Any, where: str) -> Any:
    if value is None or isinstance(value, str):
        if value is not None and value not in ops.ACTIVATIONS:
            raise UnknownObjectError(f"{where}: unknown activation {value!r}; fastckpt has "
                                     f"{sorted(ops.ACTIVATIONS)}")
        return value
    # Keras 3 writes a named function as {"class_name": "function", "config": "relu", ...}.
    if isinstance(value, dict) and isinstance(value.get("config"), str):
        return _activation(value["config"], where)
    raise UnknownObjectError(f"{where}: unsupported activation {value!r:.120}; expected a name "
                             f"such as 'relu'")


def _initializer(value: Any, where: str) -> Any:
    if value is None:
        return None
    if isinstance(value, str):
        entry = {"class_name": value}
    elif isinstance(value, dict):
        entry = value
    else:
        raise CorruptCheckpointError(f"{where}: expected an initializer name or dict, got {value!r:.120}")
    inner = entry.get("config", {})
    if not isinstance(inner, dict):
        raise CorruptCheckpointError(f"{where}: initializer config must be a dict, got {inner!r:.120}")
    for key, v in inner.items():
        if key == "seed" and v is not None and (not is_int(v)
                                                or not 0 <= v < 2**64):
            raise CorruptCheckpointError(f"{where}: initializer seed must be null or an integer "
                                         f"in [0, 2**64), got {v!r:.60}")
        if key in ("mean", "stddev", "minval", "maxval", "scale") and (
                not is_real(v)):
            raise CorruptCheckpointError(f"{where}: initializer {key} must be a number, got "
                                         f"{v!r:.60}")
    try:
        init = initializers.get({"class_name": entry.get("class_name"), "config": {
            k: v for k, v in inner.items() if not (k in _INERT_KEYS and v == _INERT_KEYS[k])}})
    except ValueError as e:
        raise UnknownObjectError(f"{where}: {e}") from None
    except TypeError as e:
        raise CorruptCheckpointError(f"{where}: bad initializer config: {e}") from None
    return init


def _builtin_kwargs(cls, config: Dict[str, Any], where: str) -> Dict[str, Any]:
    kw = {k: v for k, v in config.items() if not (k in _INERT_KEYS and v == _INERT_KEYS[k])}
    if cls is InputLayer:
        if "batch_shape" in kw:  # Keras 3 spelling
            kw["batch_input_shape"] = kw.pop("batch_shape")
        for k in ("sparse", "ragged", "optional"):
            if kw.pop(k, None):
                raise NotImplementedError(f"{where}: {k} inputs are not supported")
    if "activation" in kw:
        kw["activation"] = _activation(kw["activation"], where)
    for key in ("kernel_initializer", "bias_initializer"):
        if key in kw:
            kw[key] = _initializer(kw[key], where)
    return kw


def _build_shape(config: Dict[str, Any], outer: Dict[str, Any]) -> Optional[Tuple]:
    for candidate in (config.get("build_input_shape"),
                      (outer.get("build_config") or {}).get("input_shape")
                      if isinstance(outer.get("build_config"), dict) else None):
        if candidate is not None:
            return limits.check_shape(candidate, "build_input_shape", allow_none=True)
    return None


def _estimate_params(specs, shape, max_params: int) -> None:
    """Refuse a config whose built-in layers would allocate more than ``max_params`` elements.

    Stops at the first layer whose output shape is unknown (a custom layer): its own weights are
    its own business, but the weights file still has to back them.
    """
    total = 0
    for cls, kw, _ in specs:
        if shape is None or cls not in (Dense, Dropout):
            return
        if cls is Dense:
            units = kw.get("units")
            if not is_int(units) or not 0 < units <= limits.MAX_DIM:
                raise CorruptCheckpointError(f"Dense {kw.get('name')!r}: expected a positive integer "
                                             f"for units, got {units!r:.60}")
            in_dim = shape[-1] if shape else None
            if in_dim is None:
                return
            total += in_dim * units + units
            shape = tuple(shape[:-1]) + (units,)
        if total > max_params:
            raise UnsafeFileError(f"The config asks for at least {total} weights, more than the "
                                  f"limit of {max_params} for this file; refused")


def model_from_config(config: Dict[str, Any], custom_objects: Optional[Dict[str, Any]] = None,
                      max_params: int = limits.MAX_PARAMS):
    """Rebuild a ``Sequential`` from a tf_keras 2.x or Keras 3 model config (dict, not JSON).

    Example:
        >>> from fastckpt import keras
        >>> m = keras.Sequential([keras.layers.Dense(2, input_shape=(3,))])
        >>> model_from_config(model_to_config(m)).count_params()
        8
    """
    Sequential = model_class("Sequential")
    if not isinstance(config, dict) or not isinstance(config.get("config"), dict):
        raise CorruptCheckpointError(f"Expected a model config {{'class_name': ..., 'config': "
                                     f"{{...}}}}, got {str(config)[:200]}")
    class_name = config.get("class_name")
    if class_name != "Sequential":
        raise NotImplementedError(f"Only Sequential models can be loaded from a Keras config, got "
                                  f"class_name {class_name!r:.100}")
    inner = config["config"]
    entries = inner.get("layers", [])
    if not isinstance(entries, list):
        raise CorruptCheckpointError(f"Expected 'layers' to be a list, got {type(entries).__name__}")
    if len(entries) > limits.MAX_LAYERS:
        raise UnsafeFileError(f"The config lists {len(entries)} layers, the limit is {limits.MAX_LAYERS}")

    input_spec = None
    specs = []  # (class, kwargs, where)
    for i, entry in enumerate(entries):
        where = f"layer {i}"
        if not isinstance(entry, dict):
            raise CorruptCheckpointError(f"{where}: expected a dict, got {type(entry).__name__}")
        _check_not_lambda(entry, where)
        cls = resolve_class(entry, "layer", BUILTIN_LAYERS, custom_objects)
        layer_config = entry.get("config", {})
        if not isinstance(layer_config, dict):
            raise CorruptCheckpointError(f"{where}: config must be a dict, got {type(layer_config).__name__}")
        where = f"layer {i} ({layer_config.get('name', entry['class_name'])!s:.80})"
        kw = dict(layer_config)
        if "dtype" in kw:
            kw["dtype"] = normalize_dtype(kw["dtype"], where)
        if cls in BUILTIN_LAYERS.values():
            kw = _builtin_kwargs(cls, kw, where)
        for key in ("batch_input_shape", "input_shape"):
            if kw.get(key) is not None:
                kw[key] = list(limits.check_shape(kw[key], f"{where}: {key}", allow_none=True))
        if not isinstance(kw.get("name", ""), str):
            raise CorruptCheckpointError(f"{where}: name must be a string")
        if cls is InputLayer:
            if i != 0:
                raise CorruptCheckpointError(f"{where}: an InputLayer may only come first")
            input_spec = kw
            continue
        specs.append((cls, kw, where))

    shape = None
    if input_spec is not None:
        shape = tuple(input_spec.get("batch_input_shape") or ())
    elif specs and specs[0][1].get("batch_input_shape"):
        shape = tuple(specs[0][1]["batch_input_shape"])
    build_shape = _build_shape(inner, config)
    _estimate_params(specs, shape or build_shape, max_params)

    name = inner.get("name")
    if name is not None and not isinstance(name, str):
        raise CorruptCheckpointError(f"Expected a string model name, got {name!r:.80}")
    model = Sequential(name=name)
    if input_spec is not None:
        model.add(_construct(InputLayer, input_spec, "layer 0 (InputLayer)"))
    for cls, kw, where in specs:
        layer = _construct(cls, kw, where)
        with _building(where):  # adding builds the layer once the input shape is known
            model.add(layer)
    if not model.built and build_shape is not None:
        with _building("build_input_shape"):
            model.build(build_shape)
    return model


@contextmanager
def _building(where: str) -> Iterator[None]:
    """Errors a layer raises while building from values a file gave it are the file's fault."""
    try:
        yield
    except (FastckptError, NotImplementedError):
        raise
    except (TypeError, ValueError, KeyError, IndexError, OverflowError) as e:
        raise CorruptCheckpointError(f"{where}: could not build the layer from its config: "
                                     f"{type(e).__name__}: {e}") from None
    except MemoryError:
        raise UnsafeFileError(f"{where}: building the layer from its config ran out of memory") from None


def _construct(cls, kw: Dict[str, Any], where: str):
    try:
        return cls.from_config(kw) if cls not in (InputLayer,) else cls(**kw)
    except (FastckptError, NotImplementedError):
        raise
    except (TypeError, ValueError, KeyError) as e:
        raise CorruptCheckpointError(f"{where}: could not build {cls.__name__} from its config: "
                                     f"{e}") from None

