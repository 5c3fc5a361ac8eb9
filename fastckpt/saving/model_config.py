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


def _is_model(layer) -> bool:
    return any(isinstance(layer, model_class(n)) for n in ("Sequential", "Functional"))


def _layer_config(layer, keras3: bool) -> Dict[str, Any]:
    """A layer's config; a nested model's is its own model config (inner part)."""
    if _is_model(layer):
        full = model_to_keras3_config(layer) if keras3 else model_to_config(layer)
        return full["config"]
    config = dict(layer.get_config())
    if type(layer) in BUILTIN_LAYERS.values():
        for key, module in _OBJECT_MODULES.items():
            if key in config:
                config[key] = _initializer_entry(config[key], module)
    return config


def _layer_entries(model, keras3: bool = False) -> List[Tuple[Layer, Dict[str, Any]]]:
    entries = []
    input_layer = getattr(model, "_input_layer", None)
    layers = ([input_layer] if input_layer is not None else []) + list(model.layers)
    for layer in layers:
        entries.append((layer, _layer_config(layer, keras3)))
    return entries


def _model_class_name(layer) -> str:
    return "Sequential" if isinstance(layer, model_class("Sequential")) else "Functional"


def model_to_config(model) -> Dict[str, Any]:
    """The tf_keras 2.x ``model_config`` of a ``Sequential`` or ``Functional`` model (what an
    ``.h5`` file stores)."""
    if isinstance(model, model_class("Functional")):
        return {"class_name": "Functional", "config": _functional_config(model, keras3=False)}
    _require_sequential(model)
    layers = [{"class_name": _model_class_name(layer) if _is_model(layer)
               else get_registered_name(type(layer)), "config": config}
              for layer, config in _layer_entries(model)]
    return {"class_name": "Sequential", "config": {"name": model.name, "layers": layers}}


# --- Functional configs ----------------------------------------------------------------------------
def _skips_first_node(layer) -> bool:
    """tf_keras gives a nested model made from an Input a node of its own (node 0): references to
    it in tf_keras configs count from 1."""
    if isinstance(layer, model_class("Functional")):
        return True
    return isinstance(layer, model_class("Sequential")) and layer.built


def _node_indices(model) -> Dict[Tuple[int, int], int]:
    """(layer id, node index) -> the node's index among the layer's nodes in this model."""
    out = {}
    for layer in model.layers:
        kept = 0
        for i, node in enumerate(layer._inbound_nodes):
            if id(node) in model._network_nodes:
                out[(id(layer), i)] = kept
                kept += 1
    return out


def _coordinates(model, tensors, nested, keras3: bool, conv) -> Any:
    flat = iter([[t._keras_history[0].name, conv[(id(t._keras_history[0]), t._keras_history[1])],
                  t._keras_history[2]] for t in tensors])

    def pack(x):
        if isinstance(x, dict):
            return {k: pack(x[k]) for k in sorted(x)}
        if isinstance(x, (list, tuple)):
            return [pack(v) for v in x]
        return next(flat)

    packed = pack(nested)
    if isinstance(nested, dict):
        return {k: packed[k] for k in nested}
    if not isinstance(packed, list) or (packed and isinstance(packed[0], str)):
        return packed if keras3 else [packed]
    return packed


def _keras3_tensor(t, conv) -> Dict[str, Any]:
    layer, node_index, tensor_index = t._keras_history
    return {"class_name": "__keras_tensor__",
            "config": {"shape": list(t.shape), "dtype": t.dtype,
                       "keras_history": [layer.name, conv[(id(layer), node_index)], tensor_index]}}


def _functional_config(model, keras3: bool) -> Dict[str, Any]:
    conv = _node_indices(model)
    if not keras3:  # tf_keras numbers a nested model's nodes from 1
        conv = {k: v + (1 if _skips_first_node(_layer_by_id(model, k[0])) else 0)
                for k, v in conv.items()}
    layers = []
    for layer in model.layers:
        nodes = []
        for node in layer._inbound_nodes:
            if id(node) not in model._network_nodes or node.is_input:
                continue
            if keras3:
                args = _map_tensors(node.inputs, lambda t: _keras3_tensor(t, conv))
                kwargs = {k: v for k, v in node.kwargs.items() if _jsonable(v)}
                nodes.append({"args": [args], "kwargs": kwargs})
            else:
                kwargs = {k: v for k, v in node.kwargs.items() if _jsonable(v)}
                nodes.append([[t._keras_history[0].name,
                               conv[(id(t._keras_history[0]), t._keras_history[1])],
                               t._keras_history[2], kwargs] for t in node.flat_inputs])
        config = _layer_config(layer, keras3)
        if keras3:
            entry = _keras3_entry(layer, config, _build_shape_of(layer, model))
        else:
            entry = {"class_name": _model_class_name(layer) if _is_model(layer)
                     else get_registered_name(type(layer)), "config": config}
        entry["name"] = layer.name
        entry["inbound_nodes"] = nodes
        layers.append(entry)
    config = {"name": model.name, "trainable": model.trainable, "layers": layers,
              "input_layers": _coordinates(model, model.inputs, model._nested_inputs, keras3, conv),
              "output_layers": _coordinates(model, model.outputs, model._nested_outputs, keras3,
                                            conv)}
    return config


def _layer_by_id(model, lid: int):
    return next(layer for layer in model.layers if id(layer) == lid)


def _map_tensors(x, fn):
    if isinstance(x, dict):
        return {k: _map_tensors(v, fn) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_map_tensors(v, fn) for v in x]
    return fn(x)


def _jsonable(v) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))


def _build_shape_of(layer, model):
    for node in layer._inbound_nodes:
        if id(node) in model._network_nodes and not node.is_input:
            shapes = [list(t.shape) for t in node.flat_inputs]
            return shapes[0] if not isinstance(node.inputs, (list, tuple, dict)) else shapes
    return None


def _keras3_entry(layer, config: Dict[str, Any], build_shape) -> Dict[str, Any]:
    """A layer's entry in a Keras 3 config (module, registered_name, build_config)."""
    cls = type(layer)
    if isinstance(layer, InputLayer):
        return {"module": "keras.layers", "class_name": "InputLayer",
                "config": {"batch_shape": list(layer._batch_input_shape), "dtype": layer.dtype,
                           "sparse": False, "ragged": False, "name": layer.name,
                           "optional": False},
                "registered_name": None}
    if _is_model(layer):
        full = model_to_keras3_config(layer)
        full.pop("compile_config", None)
        return full
    config = dict(config)
    config.pop("batch_input_shape", None)
    if isinstance(config.get("dtype"), str):
        config["dtype"] = dtype_policy(config["dtype"])
    builtin = cls in BUILTIN_LAYERS.values()
    entry = {"module": "keras.layers" if builtin else cls.__module__,
             "class_name": cls.__name__, "config": config,
             "registered_name": None if builtin else get_registered_name(cls)}
    if build_shape is not None:
        entry["build_config"] = {"input_shape": build_shape}
    return entry


def model_to_keras3_config(model) -> Dict[str, Any]:
    """The Keras 3 ``config.json`` body of a built model (without ``compile_config``)."""
    if isinstance(model, model_class("Functional")):
        return {"module": "keras.src.models.functional", "class_name": "Functional",
                "config": _functional_config(model, keras3=True), "registered_name": "Functional",
                "build_config": {"input_shape": None}}
    _require_sequential(model)
    if not model.built:
        raise ValueError(f"Model {model.name!r} has not been built: a .keras file needs its input "
                         f"shape. Call the model on data or give the first layer an input_shape.")
    input_shape = list(model.input_shape)
    input_layer = getattr(model, "_input_layer", None)
    input_dtype = input_layer.dtype if input_layer is not None else "float32"
    layers = [{"module": "keras.layers", "class_name": "InputLayer",
               "config": {"batch_shape": input_shape, "dtype": input_dtype, "sparse": False,
                          "ragged": False, "name": _input_name(model), "optional": False},
               "registered_name": None}]
    shape = tuple(input_shape)
    for layer, config in _layer_entries(model, keras3=True):
        if isinstance(layer, InputLayer):
            continue
        layers.append(_keras3_entry(layer, config, list(shape)))
        shape = tuple(layer._infer_output_shape(shape))
    return {"module": "keras", "class_name": "Sequential",
            "config": {"name": model.name, "trainable": True, "dtype": dtype_policy("float32"),
                       "layers": layers, "build_input_shape": input_shape},
            "registered_name": None, "build_config": {"input_shape": input_shape}}


def _input_name(model) -> str:
    input_layer = getattr(model, "_input_layer", None)
    return input_layer.name if input_layer is not None else "input_layer"


def _require_sequential(model) -> None:
    if not isinstance(model, model_class("Sequential")):
        raise NotImplementedError(f"Only Sequential and Functional models can be saved as Keras "
                                  f"configs, got {type(model).__name__} (a subclassed model has "
                                  f"no config: save its weights with save_weights instead)")


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


_MODEL_CLASS_NAMES = ("Sequential", "Functional", "Model")


def _is_model_entry(entry: Dict[str, Any]) -> bool:
    names = (entry.get("class_name"), entry.get("registered_name"))
    return any(isinstance(n, str) and n.split(">")[-1] in _MODEL_CLASS_NAMES for n in names)


def _layer_spec(entry: Any, where: str, custom_objects) -> Tuple[Any, Dict[str, Any], str]:
    """``(class, constructor kwargs, where)`` of one layer entry (checked, not yet built)."""
    if not isinstance(entry, dict):
        raise CorruptCheckpointError(f"{where}: expected a dict, got {type(entry).__name__}")
    _check_not_lambda(entry, where)
    cls = resolve_class(entry, "layer", BUILTIN_LAYERS, custom_objects)
    layer_config = entry.get("config", {})
    if not isinstance(layer_config, dict):
        raise CorruptCheckpointError(f"{where}: config must be a dict, got {type(layer_config).__name__}")
    where = f"{where} ({layer_config.get('name', entry['class_name'])!s:.80})"
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
    return cls, kw, where


class _Budget:
    """Weights a config may still ask for (a file cannot back more than its size)."""

    def __init__(self, max_params: int):
        self.left = max_params

    def take(self, n: int, where: str) -> None:
        self.left -= n
        if self.left < 0:
            raise UnsafeFileError(f"{where}: the config asks for more weights than the file "
                                  f"could hold; refused")


def model_from_config(config: Dict[str, Any], custom_objects: Optional[Dict[str, Any]] = None,
                      max_params: int = limits.MAX_PARAMS, _budget: Optional[_Budget] = None,
                      _depth: int = 0):
    """Rebuild a ``Sequential`` or ``Functional`` model from a tf_keras 2.x or Keras 3 model
    config (dict, not JSON).

    Example:
        >>> from fastckpt import keras
        >>> m = keras.Sequential([keras.layers.Dense(2, input_shape=(3,))])
        >>> model_from_config(model_to_config(m)).count_params()
        8
    """
    if not isinstance(config, dict) or not isinstance(config.get("config"), dict):
        raise CorruptCheckpointError(f"Expected a model config {{'class_name': ..., 'config': "
                                     f"{{...}}}}, got {str(config)[:200]}")
    if _depth > 32:
        raise UnsafeFileError("The config nests models more than 32 levels deep; refused")
    budget = _budget or _Budget(max_params)
    class_name = config.get("class_name")
    if class_name in ("Functional", "Model"):
        return _functional_from_config(config, custom_objects, budget, _depth)
    if class_name != "Sequential":
        raise NotImplementedError(f"Only Sequential and Functional models can be loaded from a "
                                  f"Keras config, got class_name {class_name!r:.100}")
    Sequential = model_class("Sequential")
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
        if isinstance(entry, dict) and _is_model_entry(entry):
            specs.append((None, entry, where))
            continue
        cls, kw, where = _layer_spec(entry, where, custom_objects)
        if cls is InputLayer:
            if i != 0:
                raise CorruptCheckpointError(f"{where}: an InputLayer may only come first")
            input_spec = kw
            continue
        specs.append((cls, kw, where))

    shape = None
    if input_spec is not None:
        shape = tuple(input_spec.get("batch_input_shape") or ())
    elif specs and specs[0][0] is not None and specs[0][1].get("batch_input_shape"):
        shape = tuple(specs[0][1]["batch_input_shape"])
    build_shape = _build_shape(inner, config)
    _estimate_params(specs, shape or build_shape, budget.left)

    name = inner.get("name")
    if name is not None and not isinstance(name, str):
        raise CorruptCheckpointError(f"Expected a string model name, got {name!r:.80}")
    model = Sequential(name=name)
    if input_spec is not None:
        model.add(_construct(InputLayer, input_spec, "layer 0 (InputLayer)"))
    for cls, kw, where in specs:
        if cls is None:
            layer = model_from_config(kw, custom_objects, _budget=budget, _depth=_depth + 1)
        else:
            layer = _construct(cls, kw, where)
        with _building(where):  # adding builds the layer once the input shape is known
            model.add(layer)
    if not model.built and build_shape is not None:
        with _building("build_input_shape"):
            model.build(build_shape)
    return model


def _functional_from_config(config: Dict[str, Any], custom_objects, budget: _Budget, depth: int):
    """A Functional model from its config: create the layers, then call them on the tensors
    their inbound nodes name until every node is made (tf_keras' list-of-lists node format or
    Keras 3's ``{"args": ..., "kwargs": ...}``)."""
    Functional = model_class("Functional")
    inner = config["config"]
    entries = inner.get("layers")
    if not isinstance(entries, list):
        raise CorruptCheckpointError(f"Expected 'layers' to be a list, got {type(entries).__name__}")
    if len(entries) > limits.MAX_LAYERS:
        raise UnsafeFileError(f"The config lists {len(entries)} layers, the limit is {limits.MAX_LAYERS}")
    created: Dict[str, Any] = {}
    order: List[Tuple[str, Any, List[Any], str]] = []
    total_nodes = 0
    for i, entry in enumerate(entries):
        where = f"layer {i}"
        if not isinstance(entry, dict):
            raise CorruptCheckpointError(f"{where}: expected a dict, got {type(entry).__name__}")
        lname = entry.get("name", (entry.get("config") or {}).get("name")
                          if isinstance(entry.get("config"), dict) else None)
        if not isinstance(lname, str) or not lname:
            raise CorruptCheckpointError(f"{where}: expected a layer name")
        if lname in created:
            raise CorruptCheckpointError(f"{where}: layer name {lname!r} appears twice")
        if _is_model_entry(entry):
            layer = model_from_config(entry, custom_objects, _budget=budget, _depth=depth + 1)
            where = f"{where} ({lname})"
        else:
            cls, kw, where = _layer_spec(entry, where, custom_objects)
            if cls is InputLayer:
                kw.setdefault("name", lname)
            layer = _construct(cls, kw, where)
        nodes = entry.get("inbound_nodes", [])
        if not isinstance(nodes, list):
            raise CorruptCheckpointError(f"{where}: inbound_nodes must be a list")
        total_nodes += len(nodes)
        if total_nodes > 16 * limits.MAX_LAYERS:
            raise UnsafeFileError(f"The config lists more than {16 * limits.MAX_LAYERS} nodes")
        created[lname] = layer
        order.append((lname, layer, list(nodes), where))

    def tensor(ref, where, keras3):
        if not isinstance(ref, (list, tuple)) or len(ref) < 3 or not isinstance(ref[0], str) \
                or not is_int(ref[1]) or not is_int(ref[2]):
            raise CorruptCheckpointError(f"{where}: bad tensor reference {ref!r:.100}")
        layer = created.get(ref[0])
        if layer is None:
            raise CorruptCheckpointError(f"{where}: refers to unknown layer {ref[0]!r}")
        index = ref[1] - (1 if not keras3 and _skips_first_node(layer)
                          and not isinstance(layer, InputLayer) else 0)
        nodes = layer._inbound_nodes
        if index < 0 or ref[2] < 0:
            raise CorruptCheckpointError(f"{where}: bad tensor reference {ref!r:.100}")
        if index >= len(nodes):
            return None  # not made yet
        outs = nodes[index].outputs
        if ref[2] >= len(outs):
            raise CorruptCheckpointError(f"{where}: layer {ref[0]!r} has no output {ref[2]}")
        return outs[ref[2]]

    def decode_args(x, where):
        """Keras 3 node args: tensors as {"class_name": "__keras_tensor__", ...}."""
        if isinstance(x, dict) and x.get("class_name") == "__keras_tensor__":
            cfg = x.get("config")
            if not isinstance(cfg, dict):
                raise CorruptCheckpointError(f"{where}: bad __keras_tensor__ entry")
            t = tensor(cfg.get("keras_history"), where, True)
            if t is None:
                raise _NotReady()
            return t
        if isinstance(x, dict):
            return {k: decode_args(v, where) for k, v in x.items()}
        if isinstance(x, list):
            return [decode_args(v, where) for v in x]
        raise CorruptCheckpointError(f"{where}: unsupported node argument {x!r:.80}")

    def node_inputs(node, where):
        if isinstance(node, dict):  # Keras 3
            args = node.get("args")
            if not isinstance(args, list) or len(args) != 1:
                raise CorruptCheckpointError(f"{where}: expected one positional argument in a "
                                             f"node, got {args!r:.100}")
            return decode_args(args[0], where)
        if not isinstance(node, list) or not node:
            raise CorruptCheckpointError(f"{where}: bad inbound node {node!r:.100}")
        refs = node if isinstance(node[0], list) else [node]
        tensors = []
        for ref in refs:
            t = tensor(ref, where, False)
            if t is None:
                raise _NotReady()
            tensors.append(t)
        return tensors[0] if len(tensors) == 1 else tensors

    pending = {lname: list(nodes) for lname, _, nodes, _ in order}
    while any(pending.values()):
        progress = False
        for lname, layer, _, where in order:
            queue = pending[lname]
            while queue:
                try:
                    inputs = node_inputs(queue[0], where)
                except _NotReady:
                    break
                _check_budget(layer, inputs, budget, where)
                with _building(where):
                    layer(inputs)
                queue.pop(0)
                progress = True
        if not progress:
            stuck = [n for n, q in pending.items() if q]
            raise CorruptCheckpointError(f"The config's graph cannot be built: the inputs of "
                                         f"layer(s) {stuck[:10]} are never produced")

    def coords(value, what):
        if isinstance(value, dict):
            return {k: coords(v, what) for k, v in value.items()}
        if isinstance(value, list) and value and isinstance(value[0], str):
            t = tensor(value, what, True) if True else None
            if t is None:
                raise CorruptCheckpointError(f"{what}: {value!r:.80} names a node that does "
                                             f"not exist")
            return t
        if isinstance(value, list) and value:
            items = [coords(v, what) for v in value]
            return items
        raise CorruptCheckpointError(f"{what}: expected [layer name, node, tensor] entries, "
                                     f"got {value!r:.100}")

    inputs = coords(inner.get("input_layers"), "input_layers")
    outputs = _output_coords(inner.get("output_layers"), created, "output_layers",
                             is_tfk=not _is_keras3_functional(entries))
    if isinstance(inputs, list) and len(inputs) == 1:
        inputs = inputs[0]
    if isinstance(outputs, list) and len(outputs) == 1:
        outputs = outputs[0]
    name = inner.get("name")
    if name is not None and not isinstance(name, str):
        raise CorruptCheckpointError(f"Expected a string model name, got {name!r:.80}")
    with _building("model"):
        model = Functional(inputs, outputs, name=name)
    if inner.get("trainable") is False:
        model.trainable = False
    return model


class _NotReady(Exception):
    """A node's inputs are not made yet."""


def _is_keras3_functional(entries) -> bool:
    return any(isinstance(e, dict) and e.get("inbound_nodes")
               and isinstance(e["inbound_nodes"][0], dict) for e in entries)


def _output_coords(value, created, what, is_tfk: bool):
    """Output tensors; tf_keras counts a nested model's nodes from 1."""
    if isinstance(value, dict):
        return {k: _output_coords(v, created, what, is_tfk) for k, v in value.items()}
    if isinstance(value, list) and value and isinstance(value[0], str):
        if len(value) < 3 or not is_int(value[1]) or not is_int(value[2]):
            raise CorruptCheckpointError(f"{what}: bad entry {value!r:.80}")
        layer = created.get(value[0])
        if layer is None:
            raise CorruptCheckpointError(f"{what}: refers to unknown layer {value[0]!r}")
        index = value[1] - (1 if is_tfk and _skips_first_node(layer)
                            and not isinstance(layer, InputLayer) else 0)
        nodes = layer._inbound_nodes
        if not 0 <= index < len(nodes) or not 0 <= value[2] < len(nodes[index].outputs):
            raise CorruptCheckpointError(f"{what}: {value!r:.80} names a node that does not "
                                         f"exist")
        return nodes[index].outputs[value[2]]
    if isinstance(value, list) and value:
        return [_output_coords(v, created, what, is_tfk) for v in value]
    raise CorruptCheckpointError(f"{what}: expected [layer name, node, tensor] entries, got "
                                 f"{value!r:.100}")


def _check_budget(layer, inputs, budget: _Budget, where: str) -> None:
    if type(layer) is Dense and not layer.built and not isinstance(inputs, list):
        in_dim = inputs.shape[-1] if inputs.shape else None
        if is_int(in_dim):
            if not 0 < layer.units <= limits.MAX_DIM:
                raise CorruptCheckpointError(f"{where}: expected a positive integer for units")
            budget.take(in_dim * layer.units + layer.units, where)


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

