"""Read a TensorFlow frozen graph (`GraphDef` protobuf) without TensorFlow or protobuf.

The protobuf wire format is small: every field is a (number, wire type, value) triple. This reader decodes
the few messages a frozen inference graph uses (GraphDef, NodeDef, AttrValue, TensorProto,
TensorShapeProto; field numbers from TensorFlow's `.proto` files) into plain Python: each node becomes a
`Node` with its op, inputs and attributes, and `Const` tensors become numpy arrays.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# TensorFlow DataType enum -> numpy dtype (the ones a frozen float graph holds).
DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 9: np.int64, 10: np.bool_}


@dataclass
class Node:
    """One graph node: `inputs` are "name" or "name:k" (control inputs "^name" are dropped)."""

    name: str
    op: str
    inputs: list[str] = field(default_factory=list)
    attr: dict[str, Any] = field(default_factory=dict)


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _fields(data: bytes) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value): varints as int, length-delimited as bytes, fixed as raw bytes."""
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(data, i)
        elif wire == 2:
            length, i = _varint(data, i)
            value, i = data[i : i + length], i + length
        elif wire == 5:
            value, i = data[i : i + 4], i + 4
        elif wire == 1:
            value, i = data[i : i + 8], i + 8
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, wire, value


def _packed_varints(value: Any, wire: int) -> list[int]:
    if wire == 0:
        return [_signed(value)]
    out, i = [], 0
    while i < len(value):
        item, i = _varint(value, i)
        out.append(_signed(item))
    return out


def _floats(value: bytes, wire: int) -> list[float]:
    return list(struct.unpack(f"<{len(value) // 4}f", value)) if wire in (2, 5) else []


def _shape(data: bytes) -> list[int]:
    dims = []
    for number, _, value in _fields(data):
        if number == 2:  # TensorShapeProto.dim
            dims.append(next((_signed(v) for n, _, v in _fields(value) if n == 1), 0))
    return dims


def _tensor(data: bytes) -> np.ndarray:
    """TensorProto: dtype 1, shape 2, tensor_content 4, float_val 5, int_val 7, int64_val 10."""
    dtype, dims, content, values = 1, [], None, []
    for number, wire, value in _fields(data):
        if number == 1:
            dtype = value
        elif number == 2:
            dims = _shape(value)
        elif number == 4:
            content = bytes(value)
        elif number == 5:
            values += _floats(value, wire)
        elif number in (7, 10):
            values += _packed_varints(value, wire)
    if dtype not in DTYPES:
        raise ValueError(f"unsupported tensor dtype {dtype}")
    count = int(np.prod(dims)) if dims else 1
    if content is not None:
        array = np.frombuffer(content, dtype=DTYPES[dtype]).copy()
    else:  # a repeated scalar is stored once
        array = np.array(values or [0], dtype=DTYPES[dtype])
        if array.size == 1 and count != 1:
            array = np.full(count, array[0], dtype=array.dtype)
    return array.reshape(dims)


def _attr(data: bytes) -> Any:
    """AttrValue: list 1, s 2, i 3, f 4, b 5, type 6, shape 7, tensor 8."""
    for number, _, value in _fields(data):
        if number == 2:
            return bytes(value).decode()
        if number == 3:
            return _signed(value)
        if number == 4:
            return struct.unpack("<f", value)[0]
        if number == 5:
            return bool(value)
        if number == 6:
            return value
        if number == 7:
            return _shape(value)
        if number == 8:
            return _tensor(value)
        if number == 1:  # ListValue: s 2, i 3, f 4
            items: list[Any] = []
            for item_number, item_wire, item in _fields(value):
                if item_number == 2:
                    items.append(bytes(item).decode())
                elif item_number == 3:
                    items += _packed_varints(item, item_wire)
                elif item_number == 4:
                    items += _floats(item, item_wire)
            return items
    return None


def read_graph(path: Path | str) -> list[Node]:
    """The nodes of a frozen `GraphDef` file, in file order.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a GraphDef this reader understands (names the file).
    """
    path = Path(path)
    data = path.read_bytes()
    nodes = []
    try:
        for number, _, value in _fields(data):
            if number != 1:  # GraphDef.node
                continue
            node = Node(name="", op="")
            for field_number, _, item in _fields(value):
                if field_number == 1:
                    node.name = bytes(item).decode()
                elif field_number == 2:
                    node.op = bytes(item).decode()
                elif field_number == 3 and not bytes(item).startswith(b"^"):
                    node.inputs.append(bytes(item).decode())
                elif field_number == 5:  # map<string, AttrValue> entry: key 1, value 2
                    entry = dict((n, v) for n, _, v in _fields(item))
                    node.attr[bytes(entry[1]).decode()] = _attr(entry.get(2, b""))
            nodes.append(node)
    except (IndexError, KeyError, UnicodeDecodeError, struct.error) as error:
        raise ValueError(f"{path}: not a TensorFlow GraphDef ({error})") from None
    if not nodes:
        raise ValueError(f"{path}: not a TensorFlow GraphDef (no nodes)")
    return nodes
