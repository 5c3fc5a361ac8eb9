"""``Functional``: a model over any graph of layers, built with ``keras.Model(inputs, outputs)``.

The graph is read from the symbolic tensors' history (``KerasTensor._keras_history``) once, when
the model is made: its nodes are put in execution order (deepest first, as tf.keras orders them)
and each tensor gets a slot. Inference, ``_forward_train`` and ``_backward`` then walk that list.

Training: gradients of a tensor that feeds several layers are summed (into buffers the model owns,
reused step after step). A layer called more than once (shared weights) keeps one private state
per call: its workspaces and the private attributes its ``forward_train`` sets (``_last_input``,
masks, ...) are swapped in and out around each call, and the weight gradients of its calls are
summed into its ``_grad_buffers()``. A model used as a layer inside this one is handled the same
way, with the state of every layer inside it.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from fastckpt.checks import unique_objects
from fastckpt.layers.base import (KerasTensor, Layer, Node, call_accepts, flatten_structure)
from fastckpt.layers.input_layer import InputLayer
from fastckpt.models.model import Model, _layer_output_shape, _print_row, print_param_counts
from fastckpt.saving.model_config import model_from_config, model_to_config
from fastckpt.saving.model_registry import register_model_class

__all__ = ["Functional"]

# Private attributes that are a layer's identity, not the state of one call.
_NOT_CALL_STATE = frozenset({"_workspace", "_grads", "_weights", "_inbound_nodes", "_trainable",
                             "_batch_input_shape", "_registered_name"})


class _Step:
    """One node of the graph, ready to run: the layer, slots in and out, call arguments."""

    __slots__ = ("node", "layer", "in_struct", "in_slots", "out_slots", "kwargs", "training",
                 "shared", "takes_mask", "fwd_takes_mask", "multi_in")

    def __init__(self, node: Node, slot_of: Dict[int, int]):
        self.node = node
        self.layer = node.layer
        self.in_struct = _map_structure(node.inputs, lambda t: slot_of[id(t)])
        self.in_slots = [slot_of[id(t)] for t in node.flat_inputs]
        self.out_slots = [slot_of[id(t)] for t in node.outputs]
        kwargs = dict(node.kwargs)
        self.training = kwargs.pop("training", None)
        kwargs.pop("mask", None)
        self.kwargs = kwargs
        self.shared = False
        self.multi_in = isinstance(node.inputs, (list, tuple, dict))
        self.fwd_takes_mask = call_accepts(self.layer.forward_train)[1]


def _map_structure(x, fn):
    if isinstance(x, dict):
        return {k: _map_structure(v, fn) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_map_structure(v, fn) for v in x]
    return fn(x)


def _layer_tree(layer) -> List[Layer]:
    """The layer and, for a model, every layer inside it (recursively)."""
    out = [layer]
    if isinstance(layer, Model):
        for sub in layer.layers:
            out.extend(_layer_tree(sub))
    return unique_objects(out)


class _CallState:
    """The private state of one call of a shared layer: per layer of its tree, the workspaces,
    the private attributes, and scratch weight gradients."""

    def __init__(self, layer):
        # Models in the tree keep only their gradient-sum buffers per call (``_acc``).
        self.tree = _layer_tree(layer)
        self.attrs: List[Dict[str, Any]] = [{} for _ in self.tree]
        self.ws: List[Dict] = [{} for _ in self.tree]
        self.grads: List[List[np.ndarray]] = [[] for _ in self.tree]
        self._home: List[tuple] = []

    def enter(self, phase: str, first: Optional[set] = None) -> None:
        self._home = []
        for i, lay in enumerate(self.tree):
            home_grads = lay._grad_buffers() if phase == "backward" else lay._grads
            self._home.append((lay._workspace, home_grads))
            d = lay.__dict__
            d.update(self.attrs[i])
            d["_workspace"] = self.ws[i]
            if isinstance(lay, Model):
                continue
            if phase == "backward":
                if id(lay) in first:
                    d["_grads"] = self.grads[i]
                else:
                    d["_grads"] = home_grads

    def exit(self, phase: str, first: Optional[set] = None) -> None:
        for i, lay in enumerate(self.tree):
            d = lay.__dict__
            ws, home_grads = self._home[i]
            if isinstance(lay, Model):
                if phase == "forward" and "_acc" in d:
                    self.attrs[i] = {"_acc": d["_acc"] if self.attrs[i] else {}}
                d["_workspace"] = ws
                continue
            if phase == "forward":
                self.attrs[i] = {k: v for k, v in d.items()
                                 if k.startswith("_") and k not in _NOT_CALL_STATE}
            else:
                if id(lay) in first:
                    self.grads[i] = d["_grads"]
                    for acc, g in zip(home_grads, self.grads[i]):
                        acc += g
                elif lay.trainable_weights:
                    first.add(id(lay))
            d["_workspace"] = ws
            d["_grads"] = home_grads if phase == "backward" else d.get("_grads", [])
        self._home = []


class Functional(Model):
    """A model whose layers form a graph, made from symbolic tensors.

    Example:
        >>> from fastckpt import keras
        >>> a = keras.Input(shape=(3,), name="a")
        >>> b = keras.Input(shape=(2,), name="b")
        >>> h = keras.layers.Dense(4, name="h")(a)
        >>> model = keras.Model([a, b], [h, keras.layers.Dense(1, name="o")(b)])
        >>> model.input_names, model.output_names, model.count_params()
        (['a', 'b'], ['h', 'o'], 19)
    """

    _is_graph_network = True

    def __init__(self, inputs=None, outputs=None, name: Optional[str] = None,
                 trainable: bool = True, **kwargs):
        if inputs is None or outputs is None:
            raise ValueError("Functional models need inputs and outputs: "
                             "keras.Model(inputs=..., outputs=...)")
        super().__init__(name=name, **kwargs)
        self._nested_inputs = inputs if not isinstance(inputs, tuple) else list(inputs)
        self._nested_outputs = outputs if not isinstance(outputs, tuple) else list(outputs)
        self.inputs = flatten_structure(inputs)
        self.outputs = flatten_structure(outputs)
        for what, tensors in (("inputs", self.inputs), ("outputs", self.outputs)):
            for t in tensors:
                if not isinstance(t, KerasTensor):
                    raise TypeError(f"Model {self.name!r}: all {what} must be symbolic tensors "
                                    f"(from keras.Input or a layer called on one), got "
                                    f"{type(t).__name__}: {t!r:.80}")
        for t in self.inputs:
            if t._input_layer is None:
                raise ValueError(f"Model {self.name!r}: input {t.name!r} is not the output of "
                                 f"keras.Input(...); a Functional model's inputs must be Input "
                                 f"tensors")
        if len({id(t) for t in self.inputs}) != len(self.inputs):
            raise ValueError(f"Model {self.name!r}: the same Input is given twice in inputs")
        self._build_graph()
        if len(self.inputs) == 1:  # Sequential([functional, ...]) starts from its input shape
            self._batch_input_shape = tuple(self.inputs[0].shape)
        self._trainable = True
        if not trainable:
            self.trainable = False
        self._acc: Dict[tuple, np.ndarray] = {}

    # --- the graph ---------------------------------------------------------------------------------
    def _build_graph(self) -> None:
        finished, in_progress, order, layer_index = set(), set(), [], {}

        def visit(tensor):
            layer, node_index, _ = tensor._keras_history
            node = layer._inbound_nodes[node_index]
            if id(node) in finished:
                return
            if id(node) in in_progress:
                raise ValueError(f"Tensor {tensor!r} from layer {layer.name!r} is part of a cycle")
            layer_index.setdefault(id(layer), len(layer_index))
            in_progress.add(id(node))
            if not node.is_input:
                for t in node.flat_inputs:
                    visit(t)
            in_progress.discard(id(node))
            finished.add(id(node))
            order.append(node)

        for t in self.outputs:
            visit(t)
        node_depth: Dict[int, int] = {}
        layer_depth: Dict[int, int] = {}
        layers_by_id: Dict[int, Layer] = {}
        nodes_by_id = {id(n): n for n in order}
        for node in reversed(order):
            depth = node_depth.setdefault(id(node), 0)
            depth = max(depth, layer_depth.get(id(node.layer), 0))
            layer_depth[id(node.layer)] = depth
            layers_by_id[id(node.layer)] = node.layer
            node_depth[id(node)] = depth
            if not node.is_input:
                for parent in node.parent_nodes:
                    node_depth[id(parent)] = max(depth + 1, node_depth.get(id(parent), 0))
        for t in self.inputs:
            layer = t._keras_history[0]
            if id(layer) not in layer_depth:
                layer_depth[id(layer)] = 0
                layer_index[id(layer)] = -1
                layers_by_id[id(layer)] = layer
                node_depth[id(layer._inbound_nodes[0])] = 0
                nodes_by_id[id(layer._inbound_nodes[0])] = layer._inbound_nodes[0]
        depths = sorted(set(layer_depth.values()), reverse=True)
        layers = []
        for d in depths:
            at = [layers_by_id[i] for i, dd in layer_depth.items() if dd == d]
            at.sort(key=lambda lay: layer_index[id(lay)])
            layers.extend(at)
        nodes_by_depth: Dict[int, List[Node]] = {}
        for nid, d in node_depth.items():
            nodes_by_depth.setdefault(d, []).append(nodes_by_id[nid])
        self._nodes_by_depth = nodes_by_depth
        self._network_nodes = {id(n) for n in nodes_by_id.values()}

        # Execution order, and a check that every tensor can be computed from the inputs.
        input_ids = {id(t) for t in self.inputs}
        computable = set(input_ids)
        done_layers: List[str] = []
        exec_nodes: List[Node] = []
        for d in sorted(nodes_by_depth, reverse=True):
            for node in nodes_by_depth[d]:
                if node.is_input:
                    if id(node.outputs[0]) not in input_ids:
                        raise ValueError(
                            f"Graph disconnected: cannot obtain value for tensor "
                            f"{node.outputs[0]!r} at layer {node.layer.name!r}: it is an Input "
                            f"that is not in the model's inputs. The following previous layers "
                            f"were accessed without issue: {done_layers}")
                    continue
                for t in node.flat_inputs:
                    if id(t) not in computable:
                        raise ValueError(
                            f"Graph disconnected: cannot obtain value for tensor {t!r} at layer "
                            f"{node.layer.name!r}. The following previous layers were accessed "
                            f"without issue: {done_layers}")
                computable.update(id(t) for t in node.outputs)
                done_layers.append(node.layer.name)
                exec_nodes.append(node)
        names = [lay.name for lay in layers]
        for n in names:
            if names.count(n) != 1:
                raise ValueError(f'The name "{n}" is used {names.count(n)} times in the model. '
                                 f'All layer names should be unique.')
        self._layers = layers
        self._input_layers = [t._keras_history[0] for t in self.inputs]
        self._output_coordinates = [t._keras_history for t in self.outputs]

        slot_of: Dict[int, int] = {}
        for t in self.inputs:
            slot_of[id(t)] = len(slot_of)
        for node in exec_nodes:
            for t in node.outputs:
                slot_of.setdefault(id(t), len(slot_of))
        self._n_slots = len(slot_of)
        self._input_slots = [slot_of[id(t)] for t in self.inputs]
        self._output_slots = [slot_of[id(t)] for t in self.outputs]
        steps = [_Step(node, slot_of) for node in exec_nodes]
        uses: Dict[int, int] = {}
        for st in steps:
            for lay in _layer_tree(st.layer):
                uses[id(lay)] = uses.get(id(lay), 0) + 1
        for st in steps:
            st.shared = any(uses[id(lay)] > 1 for lay in _layer_tree(st.layer))
        self._states = {id(st): _CallState(st.layer) for st in steps if st.shared}
        self._steps = steps
        consumers: Dict[int, int] = {}
        for st in steps:
            for s in st.in_slots:
                consumers[s] = consumers.get(s, 0) + 1
        self._consumers = consumers

    # --- Keras API ---------------------------------------------------------------------------------
    @property
    def layers(self) -> List[Layer]:
        return list(self._layers)

    @property
    def built(self) -> bool:
        return True

    @built.setter
    def built(self, value) -> None:
        pass

    def _ensure_built(self, input_shape) -> None:
        return None

    def build(self, input_shape=None) -> None:
        return None

    @property
    def _multi_input(self) -> bool:
        return len(self.inputs) > 1

    @property
    def input_names(self) -> List[str]:
        return [lay.name for lay in self._input_layers]

    @property
    def output_names(self) -> List[str]:
        names, seen, counts = [], set(), {}
        for layer, _, _ in self._output_coordinates:
            proposal = layer.name
            while proposal in seen:
                n = counts.get(layer.name, 1)
                proposal = f"{layer.name}_{n}"
                counts[layer.name] = n + 1
            seen.add(proposal)
            names.append(proposal)
        return names

    @property
    def input(self):
        return self._nested_inputs

    @property
    def output(self):
        return self._nested_outputs

    @property
    def input_shape(self):
        shapes = [tuple(t.shape) for t in self.inputs]
        return shapes[0] if len(shapes) == 1 else shapes

    @property
    def output_shape(self):
        shapes = [tuple(t.shape) for t in self.outputs]
        return shapes[0] if len(shapes) == 1 else shapes

    def compute_output_shape(self, input_shape):
        shapes = input_shape if self._multi_input else [input_shape]
        batch = shapes[0][0] if shapes and len(shapes[0]) else None
        outs = [(batch,) + tuple(t.shape[1:]) for t in self.outputs]
        return outs[0] if len(outs) == 1 else outs

    def _symbolic_inputs(self, inputs):
        if isinstance(inputs, dict):
            inputs = [inputs[k] for k in self._input_keys(inputs, "inputs")]
        flat = flatten_structure(inputs)
        if len(flat) != len(self.inputs):
            raise ValueError(f"Model {self.name!r} expects {len(self.inputs)} input(s) "
                             f"{self.input_names}, but it received {len(flat)} input tensors")
        for i, (t, ref) in enumerate(zip(flat, self.inputs)):
            if not isinstance(t, KerasTensor):
                raise TypeError(f"Model {self.name!r}: cannot mix symbolic and concrete inputs")
            if len(t.shape) != len(ref.shape) or any(
                    a is not None and b is not None and a != b
                    for a, b in zip(t.shape[1:], ref.shape[1:])):
                raise ValueError(f"Input {i} of layer {self.name!r} is incompatible with the "
                                 f"layer: expected shape={ref.shape}, found shape={t.shape}")
        if len(flat) == 1:
            return flat[0], flat[0].shape
        return flat, [t.shape for t in flat]

    def get_layer(self, name: Optional[str] = None, index: Optional[int] = None) -> Layer:
        """A layer by name or by position in ``layers``."""
        if index is not None and name is not None:
            raise ValueError(f"Provide only a layer name or a layer index. Received: "
                             f"index={index}, name={name}.")
        if index is not None:
            if len(self._layers) <= index:
                raise ValueError(f"Was asked to retrieve layer at index {index} but model only "
                                 f"has {len(self._layers)} layers.")
            return self._layers[index]
        if name is not None:
            for layer in self._layers:
                if layer.name == name:
                    return layer
            raise ValueError(f"No such layer: {name}. Existing layers are: "
                             f"{[lay.name for lay in self._layers]}.")
        raise ValueError("Provide either a layer name or layer index at `get_layer`.")

    # --- inputs --------------------------------------------------------------------------------------
    def _input_keys(self, data: dict, what: str) -> List[str]:
        """The dict keys to read, in ``self.inputs`` order: the keys of a model built from a dict,
        else the Input names."""
        if isinstance(self._nested_inputs, dict):
            keys = sorted(self._nested_inputs)
        else:
            keys = self.input_names
        missing = [k for k in keys if k not in data]
        if missing:
            raise ValueError(f"Model {self.name!r}: missing data for input(s) {missing} in {what}; "
                             f"the model expects the keys {keys}, got {sorted(map(str, data))}")
        extra = [k for k in data if k not in keys]
        if extra:
            warnings.warn(f"Input dict contained keys {extra} which did not match any model "
                          f"input. They will be ignored by the model.", stacklevel=3)
        return keys

    def _flatten_data(self, inputs, what: str = "inputs") -> List[np.ndarray]:
        """Model inputs (one array, a list or a dict by input name) as checked arrays in
        ``self.inputs`` order: floats as float32, integer inputs kept integer."""
        if isinstance(inputs, dict):
            items = [inputs[k] for k in self._input_keys(inputs, what)]
        elif isinstance(inputs, (list, tuple)) and len(self.inputs) > 1:
            items = list(inputs)
        elif isinstance(inputs, (list, tuple)) and len(inputs) == 1 and not np.isscalar(inputs[0]) \
                and np.ndim(inputs[0]) >= 1 and isinstance(inputs[0], np.ndarray):
            items = list(inputs)
        else:
            items = [inputs]
        if len(items) != len(self.inputs):
            raise ValueError(f"Model {self.name!r} expects {len(self.inputs)} input(s) "
                             f"{self.input_names}, but it received {len(items)} input arrays")
        out = []
        for i, (x, ref) in enumerate(zip(items, self.inputs)):
            name = self.input_names[i]
            arr = np.asarray(x)
            if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number)
                                           or arr.dtype == bool):
                raise TypeError(f"Model {self.name!r}: expected input {name!r} to be a numeric "
                                f"array, got dtype {arr.dtype}")
            want = ref.shape
            if arr.ndim != len(want) or any(e is not None and g != e
                                            for g, e in zip(arr.shape[1:], want[1:])):
                raise ValueError(f"Input {i} ({name!r}) of model {self.name!r} is incompatible: "
                                 f"expected shape {want}, got {arr.shape}")
            if np.dtype(ref.dtype).kind in "iub":
                arr = np.ascontiguousarray(arr)
            else:
                arr = np.ascontiguousarray(arr, dtype=np.float32)
            out.append(arr)
        return out

    # --- running the graph -------------------------------------------------------------------------
    def _gather(self, struct, values):
        if isinstance(struct, dict):
            return {k: self._gather(v, values) for k, v in struct.items()}
        if isinstance(struct, list):
            return [self._gather(v, values) for v in struct]
        return values[struct]

    def _gather_mask(self, step, masks):
        if not any(masks[s] is not None for s in step.in_slots):
            return None
        return self._gather(step.in_struct, masks)

    def _pack_outputs(self, outs: List[Any]):
        it = iter(outs)

        def pack(x):
            if isinstance(x, dict):
                return {k: pack(x[k]) for k in sorted(x)}
            if isinstance(x, (list, tuple)):
                return [pack(v) for v in x]
            return next(it)

        packed = pack(self._nested_outputs)
        if isinstance(self._nested_outputs, dict):
            return {k: packed[k] for k in self._nested_outputs}
        return packed

    def call(self, inputs, training=None, mask=None):
        """Run the graph on concrete inputs (inference unless ``training``)."""
        xs = self._flatten_data(inputs)
        outs = self._run(xs, bool(training), mask)
        return self._pack_outputs(outs)

    def _run(self, xs: List[np.ndarray], training: bool, mask=None) -> List[np.ndarray]:
        values: List[Any] = [None] * self._n_slots
        masks: List[Any] = [None] * self._n_slots
        for s, x in zip(self._input_slots, xs):
            values[s] = x
        if mask is not None:
            for s, m in zip(self._input_slots, flatten_structure(mask)):
                masks[s] = m
        for st in self._steps:
            layer = st.layer
            x = self._gather(st.in_struct, values)
            m = self._gather_mask(st, masks)
            tr = training if st.training is None else st.training
            y = layer(x, training=tr, mask=m, **st.kwargs) if m is not None else \
                layer(x, training=tr, **st.kwargs)
            self._store(st, x, m, y, values, masks)
        return [values[s] for s in self._output_slots]

    def _store(self, st, x, m, y, values, masks) -> None:
        ys = list(y) if isinstance(y, (list, tuple)) and len(st.out_slots) > 1 else [y]
        for s, v in zip(st.out_slots, ys):
            values[s] = v
        layer = st.layer
        if type(layer).compute_mask is not Layer.compute_mask or (m is not None
                                                                 and layer.supports_masking):
            out_mask = layer.compute_mask(x, m)
            ms = list(out_mask) if isinstance(out_mask, (list, tuple)) and \
                len(st.out_slots) > 1 else [out_mask]
            for s, v in zip(st.out_slots, ms):
                masks[s] = v

    # --- the graph protocol the Trainer drives -------------------------------------------------------
    def _output_layers(self) -> List[Optional[Layer]]:
        """The layer producing each output, where the loss may take over its activation: the
        output is that layer's only output, the layer runs once in this model, and nothing else
        reads the output."""
        out = []
        producers = {s: st for st in self._steps for s in st.out_slots}
        for s in self._output_slots:
            st = producers.get(s)
            ok = (st is not None and len(st.out_slots) == 1 and not st.shared
                  and self._consumers.get(s, 0) == 0 and self._output_slots.count(s) == 1)
            out.append(st.layer if ok else None)
        return out

    def _logits_steps(self, logits_layers) -> set:
        if not logits_layers:
            return set()
        allowed = {id(lay) for lay in self._output_layers() if lay is not None}
        wanted = {id(lay) for lay in logits_layers if id(lay) in allowed}
        return {id(st) for st in self._steps if id(st.layer) in wanted
                and any(s in self._output_slots for s in st.out_slots)}

    def _forward_train(self, inputs: List[np.ndarray], training: bool,
                       logits_layers: Sequence[Layer] = ()) -> List[np.ndarray]:
        if len(inputs) != len(self.inputs):
            raise ValueError(f"Model {self.name!r} expects {len(self.inputs)} input(s) "
                             f"{self.input_names}, got {len(inputs)}")
        logits = self._logits_steps(logits_layers)
        values: List[Any] = [None] * self._n_slots
        masks: List[Any] = [None] * self._n_slots
        for s, x in zip(self._input_slots, inputs):
            values[s] = x
        for st in self._steps:
            layer = st.layer
            x = self._gather(st.in_struct, values)
            m = self._gather_mask(st, masks)
            tr = training if st.training is None else bool(st.training)
            kw = {"logits": True} if id(st) in logits else {}
            if m is not None and st.fwd_takes_mask:
                kw["mask"] = m
            state = self._states.get(id(st))
            if state is not None:
                state.enter("forward")
                try:
                    y = layer.forward_train(x, tr, **kw)
                finally:
                    state.exit("forward")
            else:
                y = layer.forward_train(x, tr, **kw)
            self._store(st, x, m, y, values, masks)
        self._output_masks = [masks[s] for s in self._output_slots]
        return [values[s] for s in self._output_slots]

    def _needs_grad(self, need_input_grads: bool) -> List[bool]:
        need = [False] * self._n_slots
        for s in self._input_slots:
            need[s] = need_input_grads
        for st in self._steps:
            flag = bool(st.layer.trainable_weights) or any(need[s] for s in st.in_slots)
            for s in st.out_slots:
                need[s] = flag
        return need

    def _add_grad(self, grads, owned, slot: int, g) -> None:
        if g is None:
            return
        cur = grads[slot]
        if cur is None:
            # Kernels take C-contiguous float32; a Python layer may return views (np.split).
            grads[slot] = g if (g.dtype == np.float32 and g.flags.c_contiguous) else \
                np.ascontiguousarray(g, np.float32)
        elif owned[slot]:
            cur += g
        else:
            key = (slot, cur.shape)
            buf = self._acc.get(key)
            if buf is None:
                buf = self._acc[key] = np.empty(cur.shape, np.float32)
            np.add(cur, g, out=buf)
            grads[slot] = buf
            owned[slot] = True

    def _backward(self, grads: List[np.ndarray], logits_layers: Sequence[Layer] = (),
                  need_input_grads: bool = False,
                  layer_done=None) -> Optional[List[np.ndarray]]:
        # ``layer_done(layer)``: see Model._backward; called once the last call of a layer (its
        # first in execution order) has been back-propagated, or skipped.
        if len(grads) != len(self.outputs):
            raise ValueError(f"Model {self.name!r} has {len(self.outputs)} outputs, got "
                             f"{len(grads)} gradients")
        logits = self._logits_steps(logits_layers)
        need = self._needs_grad(need_input_grads)
        tgrads: List[Any] = [None] * self._n_slots
        owned = [False] * self._n_slots
        for s, g in zip(self._output_slots, grads):
            self._add_grad(tgrads, owned, s, g)
        written: set = set()
        uses: Dict[int, int] = {}
        if layer_done is not None:
            for st in self._steps:
                uses[id(st.layer)] = uses.get(id(st.layer), 0) + 1

        def used(layer) -> None:
            if layer_done is not None:
                uses[id(layer)] -= 1
                if not uses[id(layer)]:
                    layer_done(layer)

        for st in reversed(self._steps):
            layer = st.layer
            gouts = [tgrads[s] for s in st.out_slots]
            if all(g is None for g in gouts):
                used(layer)
                continue
            need_in = any(need[s] for s in st.in_slots)
            if not need_in and not layer.trainable_weights:
                used(layer)
                continue
            if len(gouts) == 1:
                g = gouts[0]
            else:  # an output nothing used gets a zero gradient
                batch = next(gi for gi in gouts if gi is not None).shape[0]
                g = [gi if gi is not None else np.zeros((batch,) + tuple(t.shape[1:]), np.float32)
                     for gi, t in zip(gouts, st.node.outputs)]
            kw = {"logits": True} if id(st) in logits else {}
            state = self._states.get(id(st))
            if state is not None:
                state.enter("backward", written)
                try:
                    gin = layer.backward(g, need_input_grad=need_in, **kw)
                finally:
                    state.exit("backward", written)
            else:
                gin = layer.backward(g, need_input_grad=need_in, **kw)
            used(layer)
            if not need_in or gin is None:
                continue
            gins = gin if st.multi_in or len(st.in_slots) > 1 else [gin]
            for s, gi in zip(st.in_slots, flatten_structure(gins) if isinstance(gins, dict)
                             else gins):
                if need[s]:
                    self._add_grad(tgrads, owned, s, gi)
        if not need_input_grads:
            return None
        return [tgrads[s] for s in self._input_slots]

    # --- summary -------------------------------------------------------------------------------------
    def _sequential_like(self) -> bool:
        nodes = []
        for d in self._nodes_by_depth.values():
            if len(d) > 1 or (len(d) == 1 and len(d[0].flat_inputs) > 1):
                return False
            nodes += d
        ids = {id(n) for n in nodes}
        for layer in self._layers:
            if sum(1 for n in layer._inbound_nodes if id(n) in ids) > 1:
                return False
        return True

    def summary(self, line_length: Optional[int] = None, positions=None,
                print_fn: Optional[Callable[[str], None]] = None, expand_nested: bool = False,
                show_trainable: bool = False, layer_range=None) -> None:
        """Print the layer table as tf.keras does, with "Connected to" for a graph."""
        print_fn = print_fn or print
        sequential_like = self._sequential_like()
        if sequential_like:
            line_length = line_length or 65
            positions = list(positions or [0.45, 0.85, 1.0])
            header = ["Layer (type)", "Output Shape", "Param #"]
        else:
            line_length = line_length or 98
            positions = list(positions or [0.3, 0.6, 0.70, 1.0])
            header = ["Layer (type)", "Output Shape", "Param #", "Connected to"]
        if positions[-1] <= 1:
            positions = [int(line_length * p) for p in positions]
        if show_trainable:
            line_length += 11
            positions.append(line_length)
            header.append("Trainable")
        print_fn(f'Model: "{self.name}"')
        print_fn("_" * line_length)
        _print_row(header, positions, print_fn)
        print_fn("=" * line_length)
        layers = self._layers
        for i, layer in enumerate(layers):
            fields = [f"{layer.name} ({type(layer).__name__})", _layer_output_shape(layer),
                      layer.count_params()]
            if not sequential_like:
                fields.append(self._connections(layer))
            if show_trainable:
                fields.append("Y" if layer.trainable else "N")
            _print_row(fields, positions, print_fn)
            if i != len(layers) - 1:
                print_fn(" " * line_length)
        print_fn("=" * line_length)
        print_param_counts(self, print_fn, line_length)

    def _connections(self, layer) -> List[str]:
        out = []
        for node in layer._inbound_nodes:
            if id(node) not in self._network_nodes or node.is_input:
                continue
            for t in node.flat_inputs:
                src, node_index, tensor_index = t._keras_history
                out.append(f"{src.name}[{node_index}][{tensor_index}]")
        return out

    # --- config ----------------------------------------------------------------------------------------
    def get_config(self) -> Dict[str, Any]:
        """The tf.keras Functional config: layers with their inbound nodes, input and output
        layers (``saving.model_config`` writes and reads both Keras dialects)."""
        return model_to_config(self)["config"]

    @classmethod
    def from_config(cls, config: Dict[str, Any], custom_objects=None) -> "Functional":
        """A new model (new layers, new weights) from ``get_config()``'s dict, in either Keras
        dialect."""
        return model_from_config({"class_name": "Functional", "config": config},
                                 custom_objects=custom_objects)

    # --- the plan, for the native graph trainer ------------------------------------------------------
    def _fused_plan(self) -> Dict[str, Any]:
        """The execution plan as plain data (``fastckpt.training.graph_fused`` reads it): the
        slots of the inputs and outputs, every slot's symbolic shape, and per step (in execution
        order) its layer, input and output slots, ``training`` override, other call arguments,
        whether its layer runs in several steps, ``key``, what ``_logits_steps`` returns for it,
        and whether its ``forward_train`` takes the mask (``_forward_train`` passes masks as
        ``_store`` computes them)."""
        shapes: List[Any] = [None] * self._n_slots
        for s, t in zip(self._input_slots, self.inputs):
            shapes[s] = tuple(t.shape)
        steps = []
        for st in self._steps:
            for s, t in zip(st.out_slots, st.node.outputs):
                shapes[s] = tuple(t.shape)
            steps.append({"layer": st.layer, "in": list(st.in_slots), "out": list(st.out_slots),
                          "training": st.training, "kwargs": dict(st.kwargs),
                          "shared": st.shared, "multi_in": st.multi_in, "key": id(st),
                          "fwd_takes_mask": st.fwd_takes_mask})
        return {"n_slots": self._n_slots, "inputs": list(self._input_slots),
                "outputs": list(self._output_slots), "shapes": shapes, "steps": steps}


register_model_class("Functional", Functional)
