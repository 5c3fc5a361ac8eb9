"""Object-based checkpoint keys and the ``_CHECKPOINTABLE_OBJECT_GRAPH`` record.

A checkpoint names each value by the path of edge names from the root object to its owner, as
TensorFlow does (``layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE``), and stores the graph
of objects itself (a serialized ``TrackableObjectGraph``) so that TensorFlow's readers and ours can
match saved values to live objects by walking both graphs from the root.

Live objects take part by defining ``_trackable_children(for_restore=False)`` returning
``[(edge name, child)]``; a ``Variable`` is a leaf carrying one value. For restore, objects may
list extra alias edges (e.g. a legacy optimizer's ``iter``) that are matched but never written.
"""

from __future__ import annotations

import functools
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from fastckpt.checkpoint import proto
from fastckpt.errors import CorruptCheckpointError
from fastckpt.variables import Variable

__all__ = ["GRAPH_KEY", "VALUE_ATTR", "SavedNode", "TrackableList", "escape", "build_graph",
           "encode_graph", "decode_graph", "match_graph"]

GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
VALUE_ATTR = "VARIABLE_VALUE"
MAX_NODES = 1_000_000


@dataclass
class SavedNode:
    children: List[Tuple[int, str]] = field(default_factory=list)          # (node id, edge name)
    attributes: List[Tuple[str, str, str]] = field(default_factory=list)   # (name, full_name, key)
    slot_variables: List[Tuple[int, str, int]] = field(default_factory=list)  # (orig, slot, slot node)


class TrackableList:
    """A list of objects tracked under edges ``"0"``, ``"1"``, ... (tf.keras' ``ListWrapper``)."""

    def __init__(self, items):
        self.items = list(items)

    def _trackable_children(self, for_restore: bool = False):
        return [(str(i), item) for i, item in enumerate(self.items)]


def escape(name: str) -> str:
    """Edge names inside a key: ``.`` -> ``..`` and ``/`` -> ``.S`` (TensorFlow's escaping)."""
    return name.replace(".", "..").replace("/", ".S")


def _children(obj, for_restore: bool = False) -> List[Tuple[str, Any]]:
    fn = getattr(obj, "_trackable_children", None)
    return list(fn(for_restore=for_restore)) if fn is not None else []


def build_graph(root) -> Tuple[List[SavedNode], List[Tuple[str, Variable]]]:
    """Breadth-first walk from ``root``; each object is named by the first path that reaches it.

    Returns the graph nodes (node 0 is the root) and ``[(checkpoint key, variable)]`` in walk order.
    """
    ids: Dict[int, int] = {id(root): 0}
    objs: List[Any] = [root]
    paths: List[Tuple[str, ...]] = [()]
    queue = deque([0])
    nodes: List[SavedNode] = [SavedNode()]
    values: List[Tuple[str, Variable]] = []
    while queue:
        nid = queue.popleft()
        obj = objs[nid]
        if isinstance(obj, Variable):
            key = "/".join(escape(p) for p in paths[nid]) + "/.ATTRIBUTES/" + VALUE_ATTR
            nodes[nid].attributes.append((VALUE_ATTR, obj.path, key))
            values.append((key, obj))
            continue
        for name, child in _children(obj):
            cid = ids.get(id(child))
            if cid is None:
                cid = len(objs)
                ids[id(child)] = cid
                objs.append(child)
                paths.append(paths[nid] + (name,))
                nodes.append(SavedNode())
                queue.append(cid)
            nodes[nid].children.append((cid, name))
    return nodes, values


def encode_graph(nodes: List[SavedNode]) -> bytes:
    # A model saved every epoch has the same graph every time: encode each structure once.
    return _encode_structure(tuple((tuple(n.children), tuple(n.attributes), tuple(n.slot_variables))
                                   for n in nodes))


@functools.lru_cache(maxsize=32)
def _encode_structure(structure) -> bytes:
    out = bytearray()
    for children, attributes, slot_variables in structure:
        body = bytearray()
        for cid, name in children:
            body += proto.field_bytes(1, proto.field_varint(1, cid) + proto.field_bytes(2, name))
        for name, full_name, key in attributes:
            body += proto.field_bytes(2, proto.field_bytes(1, name) + proto.field_bytes(2, full_name)
                                      + proto.field_bytes(3, key))
        for orig, slot, slot_node in slot_variables:
            body += proto.field_bytes(3, proto.field_varint(1, orig) + proto.field_bytes(2, slot)
                                      + proto.field_varint(3, slot_node))
        out += proto.field_bytes(1, bytes(body))
    return bytes(out)


def _text(value, what: str) -> str:
    if not isinstance(value, memoryview):
        raise CorruptCheckpointError(f"{what}: expected a string field")
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError as e:
        raise CorruptCheckpointError(f"{what}: invalid UTF-8 ({e})") from None


def decode_graph(data: bytes) -> List[SavedNode]:
    what = GRAPH_KEY
    nodes: List[SavedNode] = []
    for number, _, value in proto.iter_fields(data, what):
        if number != 1:
            continue
        if len(nodes) >= MAX_NODES:
            raise CorruptCheckpointError(f"{what}: more than {MAX_NODES} nodes")
        if not isinstance(value, memoryview):
            raise CorruptCheckpointError(f"{what}: node {len(nodes)} is not a message")
        node = SavedNode()
        for fno, _, fval in proto.iter_fields(value, what):
            if not isinstance(fval, memoryview):
                continue
            if fno == 1:
                cid, name = 0, ""
                for n2, _, v2 in proto.iter_fields(fval, what):
                    if n2 == 1 and isinstance(v2, int):
                        cid = v2
                    elif n2 == 2:
                        name = _text(v2, what)
                node.children.append((cid, name))
            elif fno == 2:
                attr = {1: "", 2: "", 3: ""}
                for n2, _, v2 in proto.iter_fields(fval, what):
                    if n2 in attr:
                        attr[n2] = _text(v2, what)
                node.attributes.append((attr[1], attr[2], attr[3]))
            elif fno == 3:
                orig, slot, snode = 0, "", 0
                for n2, _, v2 in proto.iter_fields(fval, what):
                    if n2 == 1 and isinstance(v2, int):
                        orig = v2
                    elif n2 == 2:
                        slot = _text(v2, what)
                    elif n2 == 3 and isinstance(v2, int):
                        snode = v2
                node.slot_variables.append((orig, slot, snode))
        nodes.append(node)
    for nid, node in enumerate(nodes):
        for cid, _ in node.children:
            if cid >= len(nodes):
                raise CorruptCheckpointError(f"{what}: node {nid} has child {cid}, but the graph "
                                             f"has {len(nodes)} nodes")
        for orig, _, snode in node.slot_variables:
            if orig >= len(nodes) or snode >= len(nodes):
                raise CorruptCheckpointError(f"{what}: node {nid} has a slot reference outside "
                                             f"the graph ({orig}, {snode} of {len(nodes)})")
    if not nodes:
        raise CorruptCheckpointError(f"{what}: the graph has no root node")
    return nodes


def _value_key(node: SavedNode) -> Optional[str]:
    for name, _, key in node.attributes:
        if name == VALUE_ATTR:
            return key
    return None


def match_graph(root, nodes: List[SavedNode]) -> List[Tuple[Variable, str]]:
    """Pair live variables with saved keys by walking the live and saved graphs together."""
    matched: List[Tuple[Variable, str]] = []
    seen_live: Dict[int, int] = {}
    live_var_node: Dict[int, Variable] = {}
    optimizers: List[Tuple[Any, int]] = []
    queue = deque([(root, 0)])
    while queue:
        obj, nid = queue.popleft()
        if id(obj) in seen_live:
            continue
        seen_live[id(obj)] = nid
        if isinstance(obj, Variable):
            key = _value_key(nodes[nid])
            if key is not None:
                matched.append((obj, key))
                live_var_node[nid] = obj
            continue
        if hasattr(obj, "get_slot") and hasattr(obj, "slot_names"):
            optimizers.append((obj, nid))
        saved_children = {}
        for cid, name in nodes[nid].children:
            saved_children.setdefault(name, cid)
        for name, child in _children(obj, for_restore=True):
            cid = saved_children.get(name)
            if cid is not None:
                queue.append((child, cid))
    # Legacy optimizers keep slots as slot_variables references rather than as children.
    for opt, nid in optimizers:
        for orig, slot_name, snode in nodes[nid].slot_variables:
            var = live_var_node.get(orig)
            key = _value_key(nodes[snode])
            if var is None or key is None or slot_name not in opt.slot_names:
                continue
            try:
                slot = opt.get_slot(var, slot_name)
            except ValueError:
                continue
            if id(slot) not in seen_live:
                seen_live[id(slot)] = snode
                matched.append((slot, key))
    return matched
