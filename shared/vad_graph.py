"""The Silero VAD v6 graph, rewritten at load time to score many streams in one call, fast.

Two rewrites of the shipped ONNX graph (``faster_whisper/assets/silero_vad_v6.onnx``), each
checking the graph has the shape it expects and raising ``ValueError`` when it does not, rather
than producing a model that mixes streams or computes something else:

* :func:`patch_for_batching`: dim 0 becomes a batch of independent streams. The shipped
  graph's dim 0 is *time*: the encoder turns ``input[N, 576]`` into ``[N, 128, 1]`` and a
  ``/Transpose`` with perm ``[0, 2, 1]`` feeds the LSTM ``[seq=N, batch=1, 128]``, so N
  windows are one stream's consecutive windows and the state inputs are fixed at
  ``[1, 1, 128]``. The patch sets that Transpose to perm ``[2, 0, 1]`` (LSTM input
  ``[seq=1, batch=N, 128]``) and relaxes the state shapes to ``[1, B, 128]``; everything
  downstream (Squeeze axis 1, Transpose [1, 2, 0], Conv1d, Reshape [-1]) already maps the
  LSTM batch to output dim 0.
* :func:`fold_encoder`: the encoder (an STFT as a 256-tap convolution, then four 3-tap
  convolutions over 4, 4, 2 and 1 time steps) as matrix products over the whole batch.
  onnxruntime runs a Conv one batch row at a time, each a matrix product with 1 to 4 output
  columns; here every time step of every stream is a row of one product per layer (the
  STFT's frames cut from the padded window, each layer's taps side by side), the same
  weights, the same sums. It costs a third to a quarter of the time at 32-128 streams and
  less at one, and the probabilities agree with the shipped graph's to ~1e-6
  (``tests/unit/shared/test_vad_graph.py``, and ``test_vad.py`` on real speech).
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

__all__ = ["HIDDEN", "fold_encoder", "patch_for_batching"]

HIDDEN = 128  # LSTM state size
_BIG = 2**62  # a Slice end past any dim ("to the end")


def _dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param if d.HasField("dim_param") else d.dim_value for d in value.type.tensor_type.shape.dim]


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def patch_for_batching(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return a copy of the Silero v6 graph where dim 0 is a batch of independent streams.

    Checks the graph has the expected shape (encoder -> Transpose[0,2,1] -> LSTM(h, c) ->
    Squeeze(axis 1) -> ... ) and raises ``ValueError`` if it does not.
    """
    patched = onnx.ModelProto()
    patched.CopyFrom(model)
    graph = patched.graph
    producers = {out: node for node in graph.node for out in node.output}
    inits = {t.name: t for t in graph.initializer}

    lstms = [n for n in graph.node if n.op_type == "LSTM"]
    if len(lstms) != 1:
        raise ValueError(f"expected one LSTM node, found {len(lstms)}")
    lstm = lstms[0]
    if len(lstm.input) < 7 or lstm.input[5] != "h" or lstm.input[6] != "c":
        raise ValueError(f"LSTM initial state is not fed by graph inputs h/c: {list(lstm.input)}")
    if list(lstm.output[1:3]) != ["hn", "cn"]:
        raise ValueError(f"LSTM final state is not the graph outputs hn/cn: {list(lstm.output)}")
    attrs = _attrs(lstm)
    if attrs.get("layout", 0) != 0 or attrs.get("direction", b"forward") not in (b"forward", "forward"):
        raise ValueError(f"unexpected LSTM attributes {attrs}")

    transpose = producers.get(lstm.input[0])
    if transpose is None or transpose.op_type != "Transpose":
        raise ValueError("LSTM input is not produced by a Transpose")
    perm = next((a for a in transpose.attribute if a.name == "perm"), None)
    if perm is None or list(perm.ints) != [0, 2, 1]:
        raise ValueError(f"{transpose.name}: expected perm [0, 2, 1], found {perm and list(perm.ints)}")

    # The LSTM output Y [seq, dirs, batch, H] must reach the probabilities through a
    # Squeeze of axis 1 and a Transpose that puts the LSTM batch back on dim 0.
    squeeze = next((n for n in graph.node if lstm.output[0] in n.input), None)
    if squeeze is None or squeeze.op_type != "Squeeze" or len(squeeze.input) < 2:
        raise ValueError("LSTM output is not followed by Squeeze(axes)")
    axes = inits.get(squeeze.input[1])
    if axes is None or numpy_helper.to_array(axes).tolist() not in ([1], 1):
        raise ValueError("LSTM output Squeeze does not drop axis 1")

    perm.ints[:] = [2, 0, 1]  # [N, 1, 128] -> [1, N, 128]: seq 1, batch N

    for value in list(graph.input) + list(graph.output):
        if value.name in ("h", "c", "hn", "cn"):
            if _dims(value) != [1, 1, HIDDEN]:
                raise ValueError(f"{value.name}: expected shape [1, 1, {HIDDEN}], found {_dims(value)}")
            dim = value.type.tensor_type.shape.dim[1]
            dim.Clear()
            dim.dim_param = "streams"
    # Stored intermediate shapes describe the old layout (e.g. [1, 128, N]); drop them
    # and let onnxruntime infer the new ones.
    del graph.value_info[:]
    onnx.checker.check_model(patched)
    return patched


class _Builder:
    """New nodes and constants for :func:`fold_encoder`, named apart from the graph's own."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._ids = itertools.count()

    def const(self, value: np.ndarray | list[int]) -> str:
        name = f"fold/const_{next(self._ids)}"
        arr = np.asarray(value, dtype=np.int64) if isinstance(value, list) else value
        self.inits.append(numpy_helper.from_array(arr, name))
        return name

    def op(self, op_type: str, inputs: list[str], **attrs: Any) -> str:
        out = f"fold/{op_type}_{next(self._ids)}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def slice(self, x: str, axis: int, start: int, end: int, step: int = 1) -> str:
        bounds = [self.const([v]) for v in (start, end, axis, step)]
        return self.op("Slice", [x, *bounds])


def _slice_bounds(node: onnx.NodeProto, inits: dict[str, np.ndarray], rank: int) -> list[tuple[int, int]]:
    """A Slice's [start, end) per axis of a rank-`rank` input with step 1 (ValueError if not)."""
    if len(node.input) < 4 or any(i not in inits for i in node.input[1:]):
        raise ValueError(f"{node.name}: expected a Slice with constant starts, ends and axes")
    starts, ends, axes = (inits[i].tolist() for i in node.input[1:4])
    steps = inits[node.input[4]].tolist() if len(node.input) > 4 else [1] * len(axes)
    if any(s != 1 for s in steps):
        raise ValueError(f"{node.name}: expected steps of 1, found {steps}")
    bounds = [(0, _BIG)] * rank
    for a, s, e in zip(axes, starts, ends, strict=True):
        bounds[a] = (s, e)
    return bounds


def fold_encoder(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return a copy of a batched Silero v6 graph (:func:`patch_for_batching`'s) whose encoder
    runs as one matrix product per layer over every stream's time steps.

    Expects: input ``[B, L]`` -> Pad (reflect, ``p`` each side) -> Unsqueeze -> Conv (the STFT:
    one input channel, ``K`` taps, stride ``S``, ``K`` a multiple of ``S``, no bias) -> two
    Slices (real and imaginary channels, both dropping the same leading frames) -> Pow 2 ->
    Add -> Sqrt -> four (Conv, Relu) -> the LSTM's Transpose with perm [2, 0, 1].
    """
    folded = onnx.ModelProto()
    folded.CopyFrom(model)
    graph = folded.graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    nodes = list(graph.node)
    users: dict[str, list[onnx.NodeProto]] = {}
    for n in nodes:
        for i in n.input:
            users.setdefault(i, []).append(n)

    def only_user(name: str, op_type: str) -> onnx.NodeProto:
        found = users.get(name, [])
        if len(found) != 1 or found[0].op_type != op_type:
            raise ValueError(f"expected {name} to feed one {op_type}, found {[n.op_type for n in found]}")
        return found[0]

    source = next((v for v in graph.input if v.name == "input"), None)
    if source is None or len(_dims(source)) != 2 or not isinstance(_dims(source)[1], int):
        raise ValueError("expected a graph input 'input' of shape [B, L]")
    length = int(_dims(source)[1])
    pad = only_user("input", "Pad")
    pads = inits.get(pad.input[1]) if len(pad.input) > 1 else None
    if _attrs(pad).get("mode") != b"reflect" or pads is None or pads.tolist()[0::2] != [0, 0]:
        raise ValueError(f"{pad.name}: expected a reflect Pad of the time axis")
    before, after = pads.tolist()[1], pads.tolist()[3]
    stft = only_user(only_user(pad.output[0], "Unsqueeze").output[0], "Conv")
    basis = inits.get(stft.input[1])
    a = _attrs(stft)
    if basis is None or len(stft.input) != 2 or basis.ndim != 3 or basis.shape[1] != 1:
        raise ValueError(f"{stft.name}: expected a one-channel Conv without bias")
    taps, stride = basis.shape[2], a.get("strides", [1])[0]
    if a.get("pads", [0, 0]) != [0, 0] or a.get("dilations", [1]) != [1] or taps % stride:
        raise ValueError(f"{stft.name}: expected an unpadded Conv whose taps are a multiple of its stride")
    frames = (length + before + after - taps) // stride + 1

    halves = users.get(stft.output[0], [])
    if len(halves) != 2 or any(n.op_type != "Slice" for n in halves):
        raise ValueError(f"{stft.name}: expected its output to feed two Slices (real, imaginary)")
    bounds = [_slice_bounds(n, inits, 3) for n in halves]
    if bounds[0][0] != (0, _BIG) or bounds[0][2] != bounds[1][2] or bounds[0][2][1] < frames:
        raise ValueError("expected the real and imaginary Slices to keep the same frames of every row")
    first = bounds[0][2][0]
    squares = [only_user(n.output[0], "Pow") for n in halves]
    for sq in squares:
        if inits.get(sq.input[1]) is None or float(inits[sq.input[1]]) != 2.0:
            raise ValueError(f"{sq.name}: expected a square")
    add = only_user(squares[0].output[0], "Add")
    if set(add.input) != {sq.output[0] for sq in squares}:
        raise ValueError(f"{add.name}: expected the sum of the two squares")
    sqrt = only_user(add.output[0], "Sqrt")
    replaced = [stft, *halves, *squares, add, sqrt, *(n for n in nodes if n.output[0] == stft.input[0])]

    b = _Builder()
    # the frames the graph keeps, each `taps` samples at `stride`, as rows of blocks of `stride`
    kept = frames - first
    per = taps // stride
    span = b.slice(pad.output[0], 1, first * stride, (frames - 1) * stride + taps)
    blocks = b.op("Reshape", [span, b.const([0, kept - 1 + per, stride])])
    cut = [b.slice(blocks, 1, j, j + kept) for j in range(per)]
    rows = b.op("Concat", cut, axis=2) if per > 1 else cut[0]  # [B, frames, taps]
    spectrum = b.op("MatMul", [rows, b.const(basis[:, 0, :].T.copy())])  # [B, frames, channels]
    power = b.op("Mul", [spectrum, spectrum])
    parts = [b.slice(power, 2, *bound[1]) for bound in bounds]
    x = b.op("Sqrt", [b.op("Add", parts)])  # [B, T, C]: time-major, the batch and time are rows
    steps = kept

    node = only_user(sqrt.output[0], "Conv")
    for _ in range(4):
        weight, bias = (inits.get(i) for i in node.input[1:3]) if len(node.input) == 3 else (None, None)
        a = _attrs(node)
        if weight is None or bias is None or weight.ndim != 3 or a.get("dilations", [1]) != [1]:
            raise ValueError(f"{node.name}: expected a 1-d Conv with weights and bias")
        k, s, (p, p_end) = weight.shape[2], a.get("strides", [1])[0], a.get("pads", [0, 0])
        if p != p_end or a.get("group", 1) != 1:
            raise ValueError(f"{node.name}: expected symmetric pads, one group")
        out_steps = (steps + 2 * p - k) // s + 1
        # tap t of output step j reads input step j*s + t - p; a tap that reads only padding
        # adds nothing and is left out
        live = [t for t in range(k) if any(0 <= j * s + t - p < steps for j in range(out_steps))]
        padded = b.op("Pad", [x, b.const([0, p, 0, 0, p, 0])]) if p else x
        cols = [b.slice(padded, 1, t, t + s * (out_steps - 1) + 1, s) for t in live]
        stacked = b.op("Concat", cols, axis=2) if len(cols) > 1 else cols[0]
        w = np.concatenate([weight[:, :, t].T for t in live], axis=0).astype(np.float32)
        x = b.op("Relu", [b.op("Add", [b.op("MatMul", [stacked, b.const(w)]), b.const(bias)])])
        steps = out_steps
        relu = only_user(node.output[0], "Relu")
        replaced += [node, relu]
        nxt = users.get(relu.output[0], [])
        if len(nxt) != 1:
            raise ValueError(f"{relu.name}: expected one consumer")
        node = nxt[0]
    transpose = node
    if transpose.op_type != "Transpose" or _attrs(transpose).get("perm") != [2, 0, 1] or steps != 1:
        raise ValueError("expected the encoder to end in one time step and the batched Transpose [2, 0, 1]")
    x = b.op("Transpose", [x], perm=[1, 0, 2])  # [B, 1, H] -> [1, B, H]: the LSTM's seq 1, batch B

    lstm = only_user(transpose.output[0], "LSTM")
    lstm.input[0] = x
    replaced.append(transpose)
    end = nodes.index(transpose)  # the new nodes go where it was: after the Pad, before the LSTM
    gone = {id(n) for n in replaced}
    del graph.node[:]
    graph.node.extend([n for n in nodes[:end] if id(n) not in gone] + b.nodes + nodes[end + 1 :])
    used = {i for n in graph.node for i in n.input}
    kept_inits = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept_inits + b.inits)
    del graph.value_info[:]
    onnx.checker.check_model(folded)
    return folded
