"""Every baseline on an MLP, a CNN and a tiny transformer; known answers where they exist."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dlbacktrace import Backtrace, Explanation, InputError
from dlbacktrace.evaluation.baselines import (
    METHODS,
    MethodError,
    default_mask,
    explain,
    patch_mask,
    rollout_matrix,
    slic_mask,
)
from dlbacktrace.evaluation.baselines.unshare import unshare_modules
from dlbacktrace.examples.demo import DigitsCNN

pytest.importorskip("captum")


@pytest.fixture(scope="module")
def mlp():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(1))
    return model, x


@pytest.fixture(scope="module")
def cnn():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = DigitsCNN().eval()
    return model, torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(2))


@pytest.fixture(scope="module")
def tiny_transformer():
    transformers = pytest.importorskip("transformers")
    from dlbacktrace.examples.zoo import SentenceClassifier

    config = transformers.BertConfig(
        hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        vocab_size=40, max_position_embeddings=16, pad_token_id=0,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = SentenceClassifier(transformers.BertModel(config), 2).eval()
    ids = torch.randint(1, 40, (2, 6), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0
    ids[1, 4:] = 0
    return model, {"input_ids": ids, "attention_mask": mask}


def _map(exp: Explanation, tokens: bool) -> torch.Tensor:
    return exp.relevance_by_name["input_ids"] if tokens else exp.relevance


@pytest.mark.parametrize("case", ["mlp", "cnn", "tiny_transformer"])
def test_every_applicable_method_runs(case, request):
    model, inputs = request.getfixturevalue(case)
    tokens = isinstance(inputs, dict)
    bt = Backtrace(model)
    ran = []
    state = torch.get_rng_state()
    for method in METHODS:
        if not METHODS[method].applies_to(model, inputs):
            continue
        signed = METHODS[method].signed
        opts = {"backtrace": bt} if method.startswith("dlb") else {}
        if method in ("lime", "kernel-shap"):
            opts["n_samples"] = 40
        exp = explain(model, inputs, method=method, **opts)
        rel = _map(exp, tokens)
        expected = inputs["input_ids"].shape if tokens else inputs.shape
        assert tuple(rel.shape) == tuple(expected), method
        assert bool(torch.isfinite(rel).all()), method
        assert exp.mode == ("contrast" if signed else "default"), method
        if not signed:
            assert bool((rel >= 0).all()), method
        else:  # the contrast identities hold for every signed map
            i = exp.input_names.index("input_ids") if tokens else 0
            pos, neg = (exp.positive[i], exp.negative[i]) if tokens else (exp.positive,
                                                                          exp.negative)
            assert torch.allclose(pos - neg, rel, atol=1e-6), method
        assert exp.target.tolist() == exp.output.argmax(-1).tolist(), method
        ran.append(method)
    assert torch.equal(torch.get_rng_state(), state)  # sampling used local/forked generators
    assert all(not m.training for m in model.modules())
    expected_methods = {"dlb", "dlb-contrast", "saliency", "input-x-gradient",
                        "integrated-gradients", "smoothgrad", "deeplift", "lime", "kernel-shap",
                        "random"}  # fmt: skip
    extra = {"mlp": {"lrp-epsilon"}, "cnn": {"lrp-epsilon", "grad-cam"},
             "tiny_transformer": {"attention-rollout"}}[case]  # fmt: skip
    assert set(ran) == expected_methods | extra


def test_gradient_methods_on_a_linear_model_match_the_formulas():
    model = nn.Linear(5, 2).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -2.0, 3.0, 0.5, 0.0], [0.0, 1.0, 0.0, 0.0, 1.0]]))
        model.bias.zero_()
    x = torch.tensor([[1.0, 2.0, -1.0, 4.0, 3.0]], dtype=torch.float64)
    w = model.weight[0].detach()
    ixg = explain(model, x, "input-x-gradient", target=0).relevance
    assert torch.allclose(ixg, w * x)
    ig = explain(model, x, "integrated-gradients", target=0).relevance
    assert torch.allclose(ig, w * x, atol=1e-6)  # completeness: IG of a linear model is w·x
    sal = explain(model, x, "saliency", target=0).relevance
    assert torch.allclose(sal, w.abs().expand_as(x))
    dl = explain(model, x, "deeplift", target=0).relevance
    assert torch.allclose(dl, w * x, atol=1e-6)
    # LRP-epsilon on a bias-free ReLU network is gradient x input (epsilon -> 0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        relu_net = nn.Sequential(nn.Linear(5, 7, bias=False), nn.ReLU(),
                                 nn.Linear(7, 2, bias=False)).double()
    lrp = explain(relu_net, x, "lrp-epsilon", target=0).relevance
    assert torch.allclose(lrp, explain(relu_net, x, "input-x-gradient", target=0).relevance,
                          atol=1e-6)
    shap = explain(model, x, "kernel-shap", target=0, n_samples=200).relevance
    assert torch.allclose(shap, w * x, atol=1e-3)  # Shapley values of a linear model: w·(x−0)


def test_dlb_methods_equal_the_engine(mlp):
    model, x = mlp
    bt = Backtrace(model)
    ours = explain(model, x, "dlb-contrast", target=1, backtrace=bt)
    direct = bt.explain(x, target=1, mode="contrast")
    assert torch.equal(ours.relevance, direct.relevance)
    assert torch.equal(explain(model, x, "dlb", backtrace=bt).relevance, bt.explain(x).relevance)


def test_sampling_methods_are_seeded(cnn):
    model, x = cnn
    for method in ("lime", "kernel-shap", "smoothgrad", "random"):
        opts = {"n_samples": 30} if method != "random" else {}
        a = explain(model, x[:1], method, seed=5, **opts).relevance
        b = explain(model, x[:1], method, seed=5, **opts).relevance
        c = explain(model, x[:1], method, seed=6, **opts).relevance
        assert torch.equal(a, b), method
        assert not torch.equal(a, c), method


def test_grad_cam_finds_the_last_conv_and_accepts_a_layer(cnn):
    model, x = cnn
    auto = explain(model, x, "grad-cam", target=2).relevance
    named = explain(model, x, "grad-cam", target=2, layer="features.4").relevance
    assert torch.equal(auto, named)  # features.4 is DigitsCNN's last conv
    first = explain(model, x, "grad-cam", target=2, layer="features.0").relevance
    assert not torch.equal(auto, first)
    with pytest.raises(MethodError, match="no module named"):
        explain(model, x, "grad-cam", layer="nope")


def test_inapplicable_methods_fail_clearly(mlp):
    model, x = mlp
    with pytest.raises(MethodError, match="image inputs"):
        explain(model, x, "grad-cam")
    with pytest.raises(MethodError, match="transformers"):
        explain(model, x, "attention-rollout")
    with pytest.raises(MethodError, match="unknown method"):
        explain(model, x, "shapley-magic")
    gelu = nn.Sequential(nn.Linear(6, 4), nn.GELU(), nn.Linear(4, 2))
    with pytest.raises(MethodError, match="GELU"):
        explain(gelu, x, "lrp-epsilon")


def test_rollout_matrix_hand_computed():
    # one layer, one head, 2 tokens: A = [[1, 0], [0.5, 0.5]]; A + I = [[2, 0], [0.5, 1.5]]
    att = torch.tensor([[[[1.0, 0.0], [0.5, 0.5]]]])
    roll = rollout_matrix((att,))
    assert torch.allclose(roll[0], torch.tensor([[1.0, 0.0], [0.25, 0.75]]))
    two = rollout_matrix((att, att))
    assert torch.allclose(two[0], roll[0] @ roll[0])
    assert torch.allclose(two.sum(-1), torch.ones(1, 2))


def test_attention_rollout_respects_padding_and_restores_attention(tiny_transformer):
    model, inputs = tiny_transformer
    before = model.encoder.config._attn_implementation
    rel = explain(model, inputs, "attention-rollout").relevance_by_name["input_ids"]
    assert model.encoder.config._attn_implementation == before
    assert bool((rel[1, 4:] == 0).all())
    assert float(rel[0].sum()) == pytest.approx(1.0, abs=1e-5)  # mean of stochastic rows
    cls = explain(model, inputs, "attention-rollout", position="cls").relevance_by_name
    assert not torch.equal(cls["input_ids"], rel)


def test_feature_masks():
    img = torch.rand(2, 3, 8, 8)
    m = patch_mask(img, 4)
    assert m.shape == img.shape and int(m.max()) == 3
    assert torch.equal(m[:, 0], m[:, 2])  # shared over channels
    assert int(default_mask(img).max()) == 63  # small images: pixels
    assert default_mask(torch.rand(3, 7)).tolist()[0] == list(range(7))
    big = torch.zeros(1, 3, 48, 48)
    big[:, 0, :24] = 1.0  # four coloured quadrants with a ramp: several superpixels
    big[:, 1, :, :24] = 1.0
    big[:, 2] = torch.linspace(0, 1, 48)
    sp = default_mask(big)  # superpixels
    assert sp.shape == big.shape and 5 <= int(sp.max()) + 1 <= 80


def test_bad_inputs():
    model = nn.Linear(3, 2)
    with pytest.raises(InputError, match="input_ids"):
        explain(model, {"x": torch.ones(1, 3)}, "saliency")
    with pytest.raises(ValueError, match="NaN"):
        explain(model, torch.tensor([[float("nan"), 0.0, 1.0]]), "saliency")
    with pytest.raises(ValueError, match="out of range"):
        explain(model, torch.ones(1, 3), "saliency", target=5)


def test_superpixels_fall_back_to_patches_when_slic_finds_one_segment():
    # uniform noise: SLIC merges everything into one segment
    images = torch.rand((2, 3, 48, 48), generator=torch.Generator().manual_seed(0))
    images[1] = 0.5
    images[1, 0, :24] = 1.0  # the second image has structure
    ids = slic_mask(images)
    assert torch.equal(ids[0, 0], patch_mask(images[:1], 6)[0, 0])  # 8x8 grid of patches
    assert int(ids[1].max()) >= 1 and not torch.equal(ids[1, 0], ids[0, 0])  # SLIC kept


class _ReusedReLU(nn.Module):
    """A residual block calling one in-place ReLU twice, as torchvision's ResNets do."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 3)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu(self.a(x))
        return self.b(self.relu(h + x))


def test_deeplift_handles_a_reused_activation_and_keeps_the_model():
    torch.manual_seed(0)
    model = _ReusedReLU().eval()
    x = torch.randn(5, 4)
    exp = explain(model, x, "deeplift", target=1)
    # DeepLift's summation to delta: Σ attributions = f(x) − f(0) for the Rescale rule
    with torch.no_grad():
        delta = model(x)[:, 1] - model(torch.zeros_like(x))[:, 1]
    assert torch.allclose(_map(exp, False).sum(1), delta, atol=1e-5)
    assert model.relu.inplace and [n for n, _ in model.named_modules()] == ["", "a", "b", "relu"]
    plain = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    assert unshare_modules(plain) is plain  # nothing reused: the model itself
