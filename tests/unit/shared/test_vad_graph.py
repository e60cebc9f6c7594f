"""The Silero graph's load-time rewrites: each computes what the shipped graph does, for many
streams at once, and refuses a graph it does not recognise rather than mixing streams."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from shared.vad import cpu_session, default_model_path
from shared.vad_graph import HIDDEN, fold_encoder, patch_for_batching

try:
    default_model_path()
except FileNotFoundError as exc:  # faster-whisper (the cpu extra) ships the model
    pytest.skip(f"Silero VAD model unavailable: {exc}", allow_module_level=True)


@pytest.fixture(scope="module")
def shipped() -> onnx.ModelProto:
    return onnx.load(str(default_model_path()))


def run(model: onnx.ModelProto, windows: np.ndarray, h: np.ndarray, c: np.ndarray) -> list[np.ndarray]:
    session = cpu_session(model.SerializeToString(), 1)
    return session.run(None, {"input": windows, "h": h, "c": c})


def test_each_row_of_a_batch_is_its_own_stream(shipped):
    """Row i with state i through the rewritten graphs = the shipped graph on that row alone,
    for the probability and both states, at every batch size the gateway makes."""
    batched = patch_for_batching(shipped)
    folded = fold_encoder(batched)
    rng = np.random.default_rng(7)
    for n in (1, 3, 40):
        windows = (rng.standard_normal((n, 576)) * 0.1).astype(np.float32)
        h = (rng.standard_normal((1, n, HIDDEN)) * 0.3).astype(np.float32)
        c = (rng.standard_normal((1, n, HIDDEN)) * 0.3).astype(np.float32)
        alone = [run(shipped, windows[i : i + 1], h[:, i : i + 1], c[:, i : i + 1]) for i in range(n)]
        for model in (batched, folded):
            probs, hn, cn = run(model, windows, h, c)
            for i, (p1, h1, c1) in enumerate(alone):
                np.testing.assert_allclose(probs[i], p1.reshape(-1)[0], atol=1e-5, rtol=0)
                np.testing.assert_allclose(hn[0, i], h1[0, 0], atol=1e-5, rtol=0)
                np.testing.assert_allclose(cn[0, i], c1[0, 0], atol=1e-5, rtol=0)


def test_the_folded_encoder_has_no_convolution_left(shipped):
    folded = fold_encoder(patch_for_batching(shipped))
    convs = [n.name for n in folded.graph.node if n.op_type == "Conv"]
    assert convs == ["/decoder/conv1d/Conv"]  # the 1-tap decoder after the LSTM is left alone
    assert sum(n.op_type == "MatMul" for n in folded.graph.node) == 5  # the STFT and four layers


def test_patch_refuses_a_graph_it_does_not_recognise(shipped):
    patched = patch_for_batching(shipped)
    with pytest.raises(ValueError, match="perm"):
        patch_for_batching(patched)  # already patched: the Transpose is no longer [0, 2, 1]
    # the original is left untouched
    transpose = next(n for n in shipped.graph.node if n.name == "/Transpose")
    assert list(transpose.attribute[0].ints) == [0, 2, 1]


def test_fold_refuses_a_graph_it_does_not_recognise(shipped):
    with pytest.raises(ValueError, match="Transpose"):
        fold_encoder(shipped)  # not batched first: its Transpose still feeds the LSTM time-major
    folded = fold_encoder(patch_for_batching(shipped))
    with pytest.raises(ValueError):
        fold_encoder(folded)  # already folded: no STFT convolution after the Pad
    odd = patch_for_batching(shipped)
    conv = next(n for n in odd.graph.node if n.name == "/encoder/conv_layers.1/Conv")
    next(a for a in conv.attribute if a.name == "group").i = 2
    with pytest.raises(ValueError, match="group"):
        fold_encoder(odd)
