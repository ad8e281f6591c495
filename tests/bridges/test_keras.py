"""Keras 3 models (torch backend): built, trained briefly, saved as .keras and legacy .h5,
reloaded and explained — predictions, conservation, determinism and the NHWC layout.

The .h5 files are written by Keras 3's own legacy HDF5 writer (TensorFlow is not installed).
KERAS_BACKEND is set only while keras is imported and then restored, so other test files and
subprocesses they start see the environment unchanged.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from dlbacktrace import Backtrace, InputError

_previous = os.environ.get("KERAS_BACKEND")
os.environ["KERAS_BACKEND"] = "torch"
try:
    keras = pytest.importorskip("keras")
finally:
    if _previous is None:
        del os.environ["KERAS_BACKEND"]
    else:
        os.environ["KERAS_BACKEND"] = _previous

from dlbacktrace.bridges.keras import (  # noqa: E402
    KerasBacktrace,
    KerasModelError,
    explain_keras,
)

L = keras.layers


def _init(seed: int):
    return keras.initializers.GlorotUniform(seed=seed)


def _digits():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return (X / 16.0).reshape(-1, 8, 8, 1).astype("float32"), y


def _cnn():
    inp = keras.Input((8, 8, 1), name="pixels")
    x = L.Conv2D(6, 3, padding="same", kernel_initializer=_init(1), name="conv")(inp)
    x = L.BatchNormalization(name="bn")(x)
    x = L.Activation("relu")(x)
    x = L.MaxPooling2D(2)(x)
    x = L.Dropout(0.25, seed=3)(x)
    x = L.Flatten()(x)
    out = L.Dense(10, kernel_initializer=_init(2), name="dense")(x)
    return keras.Model(inp, out)


def _two_inputs():
    img = keras.Input((8, 8, 1), name="image")
    tab = keras.Input((5,), name="table")
    a = L.Conv2D(4, 3, padding="same", activation="relu", kernel_initializer=_init(4))(img)
    b = L.Conv2D(4, 3, padding="same", kernel_initializer=_init(5))(a)
    x = L.Add()([a, b])  # residual
    x = L.GlobalAveragePooling2D()(x)
    t = L.Dense(4, activation="tanh", kernel_initializer=_init(6))(tab)
    x = L.Concatenate()([x, t])
    out = L.Dense(3, kernel_initializer=_init(7))(x)
    return keras.Model([img, tab], out)


def _train(model, inputs, y):
    model.compile(optimizer=keras.optimizers.Adam(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(inputs, y, epochs=2, batch_size=64, shuffle=False, verbose=0)
    return model


@pytest.fixture(scope="module")
def cnn_files(tmp_path_factory):
    X, y = _digits()
    model = _train(_cnn(), X[:512], y[:512])
    folder = tmp_path_factory.mktemp("keras")
    paths = {"keras": folder / "cnn.keras", "h5": folder / "cnn.h5"}
    model.save(paths["keras"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save(paths["h5"])  # Keras 3's legacy HDF5 writer
    return model, paths, X[1500:1506]


@pytest.fixture(scope="module")
def two_input_files(tmp_path_factory):
    X, y = _digits()
    tab = np.random.default_rng(0).normal(size=(len(X), 5)).astype("float32")
    y3 = y % 3
    model = _train(_two_inputs(), [X[:256], tab[:256]], y3[:256])
    folder = tmp_path_factory.mktemp("keras2")
    path = folder / "two.keras"
    model.save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save(folder / "two.h5")
    return model, path, folder / "two.h5", (X[1600:1604], tab[1600:1604])


def _close(a, b, tol=1e-5):
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    scale = max(float(b.abs().max()), 1e-12)
    assert float((a - b).abs().max()) <= tol * scale, float((a - b).abs().max()) / scale


@pytest.fixture(scope="module")
def cnn_explainers(cnn_files):
    """One explainer per file kind: each captures once, every test below reuses it."""
    _, paths, _ = cnn_files
    return {kind: KerasBacktrace(path) for kind, path in paths.items()}


@pytest.mark.parametrize("kind", ["keras", "h5"])
def test_cnn_reloaded_predicts_and_conserves(cnn_files, cnn_explainers, kind):
    model, _, x = cnn_files
    kb = cnn_explainers[kind]
    assert kb.input_names == ["pixels"]
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(kb.predict(x).numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(kb.predict(x).numpy(), kb.model.predict(x, verbose=0),
                               rtol=1e-6, atol=1e-7)
    exp = kb.explain(x)
    assert exp.input_names == ["pixels"]
    assert exp.relevance.shape == x.shape  # NHWC in, NHWC out
    np.testing.assert_array_equal(exp.target.numpy(), expected.argmax(1))
    assert exp.conservation_error < 1e-5
    assert bool((exp.relevance >= 0).all())
    contrast = kb.explain(x, mode="contrast", target=3)
    assert contrast.conservation_error < 1e-5
    assert torch.equal(contrast.total, contrast.positive + contrast.negative)
    assert torch.equal(contrast.positive - contrast.negative, contrast.relevance)
    assert torch.equal(kb.explain(x).relevance, exp.relevance)  # bit-identical reruns
    # the .keras and the legacy .h5 file hold the same model: the same relevance, bit for bit
    assert torch.equal(cnn_explainers["keras"].explain(x).relevance, exp.relevance)


def test_fresh_load_is_bit_identical(cnn_files, cnn_explainers):
    _, paths, x = cnn_files
    fresh = explain_keras(paths["keras"], x, mode="contrast")
    assert torch.equal(fresh.relevance, cnn_explainers["keras"].explain(x, mode="contrast")
                       .relevance)


class _SameModelNCHW(nn.Module):
    """The Keras CNN rewritten by hand in torch, channels-first, with the op sequence Keras'
    torch backend produces (conv, bias add, BN as sub/mul/add, relu, max-pool, Dense)."""

    def __init__(self, model) -> None:
        super().__init__()
        conv, bn, dense = (model.get_layer(n) for n in ("conv", "bn", "dense"))
        k, cb = (torch.from_numpy(np.asarray(w)) for w in conv.get_weights())
        self.kernel = k.permute(3, 2, 0, 1).contiguous()  # HWIO -> OIHW
        self.conv_bias = cb.view(1, -1, 1, 1)
        gamma, beta, mean, var = (torch.from_numpy(np.asarray(w)) for w in bn.get_weights())
        self.mean = mean.view(1, -1, 1, 1)
        self.scale = (gamma * torch.rsqrt(var + bn.epsilon)).view(1, -1, 1, 1)
        self.beta = beta.view(1, -1, 1, 1)
        w, b = (torch.from_numpy(np.asarray(v)) for v in dense.get_weights())
        self.w, self.b = w, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Keras adds the conv bias channels-last, after permuting the conv output back; the
        # engine fuses a bias add only directly after the affine op, so mirror that order.
        h = torch.nn.functional.conv2d(x, self.kernel, padding=1).permute(0, 2, 3, 1)
        h = (h + self.conv_bias.view(-1)).permute(0, 3, 1, 2)
        h = torch.relu((h - self.mean) * self.scale + self.beta)
        h = torch.nn.functional.max_pool2d(h, 2)
        h = h.permute(0, 2, 3, 1).reshape(x.shape[0], -1)  # Keras flattens channels-last
        return torch.matmul(h, self.w) + self.b


def test_nhwc_relevance_matches_nchw_torch_model(cnn_files, cnn_explainers):
    model, _, x = cnn_files
    ref_model = _SameModelNCHW(model)
    x_nchw = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    with torch.no_grad():
        np.testing.assert_allclose(ref_model(x_nchw).numpy(), model.predict(x, verbose=0),
                                   rtol=1e-5, atol=1e-5)
    for mode in ("default", "contrast"):
        ref = Backtrace(ref_model).explain(x_nchw, mode=mode, target=4)
        got = cnn_explainers["keras"].explain(x, mode=mode, target=4)
        _close(got.relevance, ref.relevance.permute(0, 2, 3, 1))


def test_two_inputs_with_residual_add(two_input_files):
    model, path, h5_path, (img, tab) = two_input_files
    kb = KerasBacktrace(path)
    assert kb.input_names == ["image", "table"]
    np.testing.assert_allclose(kb.predict([img, tab]).numpy(),
                               model.predict([img, tab], verbose=0), rtol=1e-5, atol=1e-6)
    exp = kb.explain({"table": tab, "image": img}, mode="contrast")
    assert exp.input_names == ["image", "table"]
    r_img, r_tab = exp.relevance
    assert r_img.shape == img.shape and r_tab.shape == tab.shape
    assert float(exp.total[0].sum()) > 0 and float(exp.total[1].sum()) > 0
    assert exp.conservation_error < 1e-5
    again = kb.explain([img, tab], mode="contrast")
    assert torch.equal(again.relevance[0], r_img) and torch.equal(again.relevance[1], r_tab)
    from_h5 = explain_keras(h5_path, [img, tab], mode="contrast")
    assert torch.equal(from_h5.relevance[0], r_img) and torch.equal(from_h5.relevance[1], r_tab)
    with pytest.raises(InputError, match="exactly"):
        kb.explain({"image": img})
    with pytest.raises(InputError, match="takes 2 inputs"):
        kb.explain([img])


# ---- bad input ---------------------------------------------------------------------------------
def test_bad_inputs_and_corrupt_files(cnn_files, cnn_explainers, tmp_path):
    _, paths, x = cnn_files
    kb = cnn_explainers["keras"]
    with pytest.raises(InputError, match="channels-last"):
        kb.explain(np.transpose(x, (0, 3, 1, 2)))  # NCHW given to an NHWC model
    with pytest.raises(InputError, match="NaN"):
        kb.explain(np.full_like(x, np.nan))
    for name, data in (("bad.keras", b"PK\x03\x04 not really a zip"),
                       ("bad.h5", b"\x89HDF\r\n\x1a\n garbage")):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(KerasModelError, match="could not load"):
            explain_keras(tmp_path / name, x)
    truncated = tmp_path / "truncated.keras"
    truncated.write_bytes(paths["keras"].read_bytes()[:200])
    with pytest.raises(KerasModelError, match="truncated"):
        KerasBacktrace(truncated)
    with pytest.raises(KerasModelError, match="not found"):
        KerasBacktrace(tmp_path / "missing.keras")
    with pytest.raises(KerasModelError, match=r"\.keras or legacy"):
        (tmp_path / "model.txt").write_text("x")
        KerasBacktrace(tmp_path / "model.txt")
    with pytest.raises(InputError, match="keras.Model"):
        KerasBacktrace(nn.Linear(2, 2))


def _run(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=120)


def _clean_env(tmp_path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env["KERAS_HOME"] = str(tmp_path)  # a fresh Keras config: default backend (tensorflow)
    return env


@pytest.mark.slow
def test_wrong_backend_is_a_clear_error(tmp_path):
    # 1. KERAS_BACKEND names another backend: refused before keras is imported;
    # then keras already imported on another backend (a stand-in module: only torch exists here)
    env = _clean_env(tmp_path)
    env["KERAS_BACKEND"] = "tensorflow"
    code = """
        import sys, types
        from dlbacktrace.bridges.keras import KerasBackendError, KerasBacktrace, explain_keras
        try:
            explain_keras("m.keras", None)
        except KerasBackendError as e:
            assert "keras" not in sys.modules
            print("ERR1", e)
        fake = types.ModuleType("keras")
        fake.backend = types.SimpleNamespace(backend=lambda: "jax")
        sys.modules["keras"] = fake
        try:
            KerasBacktrace("m.keras")
        except KerasBackendError as e:
            print("ERR3", e)
    """
    out = _run(code, env)
    assert "ERR1 KERAS_BACKEND is 'tensorflow'" in out.stdout, out.stderr
    assert "ERR3 keras is running on the 'jax' backend" in out.stdout, out.stderr
    assert out.stdout.count("Set the environment variable KERAS_BACKEND=torch") == 2
    # 2. no KERAS_BACKEND and a default config: keras tries TensorFlow and fails to import
    code = """
        from dlbacktrace.bridges.keras import KerasBackendError, KerasBacktrace
        try:
            KerasBacktrace("m.keras")
        except KerasBackendError as e:
            print("ERR", e)
    """
    out = _run(code, _clean_env(tmp_path))
    assert "ERR importing keras failed" in out.stdout, out.stderr
    assert "KERAS_BACKEND=torch" in out.stdout
