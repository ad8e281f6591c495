"""ONNX route: files exported from PyTorch in the test, converted back with onnx2torch, explained.

The explanation of the converted model must equal the explanation of the original PyTorch
model (1e-5) when the ONNX graph keeps the same operations; errors name the ONNX operator.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from dlbacktrace import Backtrace, InputError, UnsupportedOperationError

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnx2torch")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper  # noqa: E402

from dlbacktrace.bridges.onnx import (  # noqa: E402
    OnnxBacktrace,
    OnnxModelError,
    UnsupportedOnnxOperatorError,
    explain_onnx,
    load_onnx,
)


def _export(model: nn.Module, args: tuple, path, names: list[str], **kw) -> None:
    """Legacy TorchScript exporter (the dynamo exporter needs onnxscript); dynamic batch.

    Opset 17: onnx2torch has no converter for some operators' newer versions (AveragePool 19).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, args, str(path), dynamo=False, input_names=names, output_names=["y"],
            dynamic_axes={n: {0: "batch"} for n in [*names, "y"]}, opset_version=17, **kw,
        )


def _mlp() -> nn.Module:
    g = torch.Generator().manual_seed(0)
    m = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 4))
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return m.eval()


def _cnn() -> nn.Module:
    g = torch.Generator().manual_seed(1)
    m = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 4, 3, padding=1, groups=2), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
        nn.Flatten(), nn.Linear(16, 5),
    )
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.4)
        bn = m[1]
        bn.running_mean.copy_(torch.randn(6, generator=g) * 0.3)
        bn.running_var.copy_(torch.rand(6, generator=g) + 0.5)
    return m.eval()


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5) -> None:
    scale = max(float(b.abs().max()), 1e-12)
    assert float((a - b).abs().max()) <= tol * scale, float((a - b).abs().max()) / scale


def _x(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_mlp_roundtrip_equals_original(tmp_path):
    model, x = _mlp(), _x(5, 6)
    path = tmp_path / "mlp.onnx"
    _export(model, (x[:1],), path, ["features"])
    ob = OnnxBacktrace(path)
    with torch.no_grad():
        ref_out = model(x)
    ort_out = ort.InferenceSession(str(path)).run(None, {"features": x.numpy()})[0]
    np.testing.assert_allclose(ob.predict(x).numpy(), ort_out, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ob.predict(x).numpy(), ref_out.numpy(), rtol=1e-5, atol=1e-6)
    for mode in ("default", "contrast"):
        ref = Backtrace(model).explain(x, target=2, mode=mode)
        got = ob.explain(x.numpy().astype(np.float64), target=2, mode=mode)  # cast to float32
        assert got.input_names == ["features"]
        _close(got.relevance, ref.relevance)
        _close(got.total, ref.total)
        assert got.conservation_error < 1e-5
    # predicted-class target and the one-shot helper give the same map
    one_shot = explain_onnx(path, x)
    _close(one_shot.relevance, Backtrace(model).explain(x).relevance)


def test_cnn_with_batchnorm_kept_equals_original(tmp_path):
    model, x = _cnn(), _x(3, 3, 8, 8, seed=2)
    path = tmp_path / "cnn.onnx"
    # TrainingMode.PRESERVE keeps BatchNormalization a node of its own (not folded into Conv)
    _export(model, (x[:1],), path, ["image"], training=torch.onnx.TrainingMode.PRESERVE)
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert "BatchNormalization" in ops
    got = explain_onnx(path, x, mode="contrast")
    ref = Backtrace(model).explain(x, mode="contrast")
    assert torch.equal(got.target, ref.target)
    _close(got.relevance, ref.relevance)
    _close(got.positive, ref.positive)
    _close(got.negative, ref.negative)
    assert got.relevance.shape == x.shape
    assert got.conservation_error < 1e-5
    again = explain_onnx(path, x, mode="contrast")
    assert torch.equal(again.relevance, got.relevance)  # deterministic


def test_cnn_with_folded_batchnorm_equals_fused_torch_model(tmp_path):
    """The default exporter folds BN into the conv: that is the model that gets explained."""
    model, x = _cnn(), _x(2, 3, 8, 8, seed=3)
    path = tmp_path / "folded.onnx"
    _export(model, (x[:1],), path, ["image"])
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert "BatchNormalization" not in ops
    fused = nn.Sequential(
        torch.nn.utils.fusion.fuse_conv_bn_eval(model[0], model[1]), *list(model)[2:]
    ).eval()
    got = explain_onnx(path, x, target=1)
    _close(got.relevance, Backtrace(fused).explain(x, target=1).relevance)
    unfused = Backtrace(model).explain(x, target=1).relevance
    # folding moves the BN shift into the conv bias: a different (still conserving) split
    assert float((got.relevance - unfused).abs().max()) > 1e-4
    assert got.conservation_error < 1e-5


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 6)
        self.b = nn.Linear(3, 6)
        self.head = nn.Linear(6, 2)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.a(a) + self.b(b)))


def test_two_inputs_named_and_by_dict(tmp_path):
    torch.manual_seed(0)
    model = TwoInputs().eval()
    a, b = _x(4, 4, seed=5), _x(4, 3, seed=6)
    path = tmp_path / "two.onnx"
    _export(model, (a[:1], b[:1]), path, ["left", "right"])
    ob = OnnxBacktrace(path)
    ref = Backtrace(model).explain(a, b, target=0)
    got = ob.explain({"right": b, "left": a}, target=0)
    assert got.input_names == ["left", "right"]
    _close(got.relevance_by_name["left"], ref.relevance[0])
    _close(got.relevance_by_name["right"], ref.relevance[1])
    with pytest.raises(InputError, match="unknown ONNX inputs"):
        ob.explain({"left": a, "middle": b})
    with pytest.raises(InputError, match=r"takes 2 input"):
        ob.explain(a)
    with pytest.raises(InputError, match="expects shape"):
        ob.explain(a[:, :3], b)


# ---- errors ------------------------------------------------------------------------------------
def _single_op_model(op: str, domain: str = "") -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    node = helper.make_node(op, ["x"], ["y"], name=f"my_{op}", domain=domain)
    opsets = [helper.make_opsetid("", 17)]
    if domain:
        opsets.append(helper.make_opsetid(domain, 1))
    return helper.make_model(helper.make_graph([node], "g", [x], [y]), opset_imports=opsets)


def test_operator_without_converter_is_named():
    expected = r"Hardmax \(opset 17, node 'my_Hardmax'\)"
    with pytest.raises(UnsupportedOnnxOperatorError, match=expected) as e:
        load_onnx(_single_op_model("Hardmax"))
    assert e.value.operators == ["Hardmax"]
    assert isinstance(e.value, UnsupportedOperationError)


def test_operator_without_relevance_rule_is_named():
    ob = OnnxBacktrace(_single_op_model("Floor"))
    with pytest.raises(UnsupportedOnnxOperatorError, match=r"ONNX operator Floor") as e:
        ob.explain(np.ones((2, 4), np.float32))
    assert e.value.operators == ["Floor"]
    assert "aten.floor" in str(e.value)


def test_corrupt_and_missing_files(tmp_path):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"this is not an onnx model\x00\xff\x13" * 10)
    with pytest.raises(OnnxModelError, match="not"):
        load_onnx(garbage)
    good = tmp_path / "good.onnx"
    _export(_mlp(), (_x(1, 6),), good, ["features"])
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(OnnxModelError, match="truncated.onnx"):
        load_onnx(truncated)
    with pytest.raises(OnnxModelError, match="not found"):
        load_onnx(tmp_path / "missing.onnx")
    with pytest.raises(OnnxModelError, match="not in the model"):
        load_onnx(good, outputs=["nope"])
    with pytest.raises(OnnxModelError, match="expected a path"):
        load_onnx(42)
