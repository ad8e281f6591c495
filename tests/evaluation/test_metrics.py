"""Metrics on cases with known answers, and against Quantus / Captum on shared cases."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from dlbacktrace.evaluation import metrics as M

W = torch.tensor([3.0, -1.0, 2.0, 0.5], dtype=torch.float64)


def linear_forward(x: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
    """Two logits: w·x and 0 (so the target-0 logit is exactly w·x)."""
    logit = x.flatten(1) @ W.to(x.dtype)
    return torch.stack([logit, torch.zeros_like(logit)], 1)


def test_deletion_curve_hand_computed_and_insertion_lerf_identity():
    x = torch.ones(1, 4, dtype=torch.float64)
    attr = W[None] * x  # exact contributions: 3, -1, 2, 0.5
    c = M.curves(linear_forward, x, attr, torch.tensor([0]), steps=4, output="logit")
    # MoRF removes 3, 2, 0.5, -1 in that order: 4.5 -> 1.5 -> -0.5 -> -1 -> 0
    assert c.morf[0].tolist() == pytest.approx([4.5, 1.5, -0.5, -1.0, 0.0])
    assert float(c.deletion_auc[0]) == pytest.approx(0.25 * (4.5 / 2 + 1.5 - 0.5 - 1.0 + 0))
    # LeRF removes -1 first: 4.5 -> 5.5 -> 5.0 -> 3.0 -> 0
    assert c.lerf[0].tolist() == pytest.approx([4.5, 5.5, 5.0, 3.0, 0.0])
    # inserting MoRF into the empty input: 0 -> 3 -> 5 -> 5.5 -> 4.5 (LeRF reversed)
    assert c.insertion[0].tolist() == pytest.approx([0.0, 3.0, 5.0, 5.5, 4.5])
    assert float(c.insertion_auc[0]) == pytest.approx(float(c.lerf_auc[0]))
    assert float(c.abpc[0]) == pytest.approx(float(c.lerf_auc[0] - c.deletion_auc[0]))


def test_true_order_beats_random_order():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(40, generator=gen, dtype=torch.float64)
    x = torch.randn(32, 40, generator=gen, dtype=torch.float64)

    def forward(z):
        logit = z @ w
        return torch.stack([logit, -logit], 1)

    target = torch.zeros(32, dtype=torch.long)
    exact = M.curves(forward, x, w * x, target, steps=10)
    noise = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    rand = M.curves(forward, x, noise, target, steps=10)
    assert float(exact.deletion_auc.mean()) < float(rand.deletion_auc.mean()) - 0.1
    assert float(exact.abpc.mean()) > float(rand.abpc.mean()) + 0.2
    assert bool((exact.deletion_auc <= exact.lerf_auc).all())


def test_feature_groups_valid_elements_and_extra_args():
    # tokens: 5 positions, the last two are padding that must never be removed
    ids = torch.tensor([[5, 6, 7, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 0, 0]])
    seen = []

    def forward(z, m):
        seen.append((z.clone(), m.clone()))
        score = (z == 9).sum(1).to(torch.float64)  # how many tokens were replaced by 9
        return torch.stack([score, torch.zeros_like(score)], 1)

    attr = torch.tensor([[0.1, 0.5, 0.3, 9.0, 9.0]])
    c = M.curves(forward, ids, attr, torch.tensor([0]), steps=3, removal=9,
                 additional_forward_args=(mask,), valid_elements=mask.bool(), output="logit")
    assert c.morf[0].tolist() == [0, 1, 2, 3]  # only the 3 real tokens are ever replaced
    z, m = seen[0]
    assert z[1].tolist() == [5, 9, 7, 0, 0]  # highest valid score (position 1) goes first
    assert bool((m == mask).all())  # the attention mask travelled with every copy


def test_patch_feature_mask_removes_whole_groups():
    x = torch.ones(1, 1, 4, 4)
    groups = (torch.arange(4)[:, None] // 2 * 2 + torch.arange(4)[None, :] // 2).reshape(1, 1, 4, 4)
    attr = groups.to(torch.float32)  # patch 3 most relevant

    def forward(z):
        s = z.flatten(1).sum(1)
        return torch.stack([s, torch.zeros_like(s)], 1)

    c = M.curves(forward, x, attr, torch.tensor([0]), steps=4, feature_mask=groups,
                 output="logit")
    assert c.morf[0].tolist() == [16, 12, 8, 4, 0]


def test_removal_values():
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(M.removal_value(x, "zero"), torch.zeros_like(x))
    mean = M.removal_value(x, "mean")
    assert torch.allclose(mean[:, :, 0, 0], x.mean((2, 3)))
    const = torch.full((1, 1, 8, 8), 0.7)
    assert torch.allclose(M.removal_value(const, "blur"), const, atol=1e-6)
    blurred = M.removal_value(x, "blur")
    assert float(blurred.std()) < float(x.std())
    assert torch.equal(M.removal_value(x, 0.5), torch.full_like(x, 0.5))
    with pytest.raises(M.MetricError):
        M.removal_value(torch.ones(2, 3), "blur")


def test_eraser_hand_computed():
    x = torch.ones(1, 4, dtype=torch.float64)
    out = M.eraser(linear_forward, x, W[None] * x, torch.tensor([0]), bins=(0.25, 0.5),
                   output="logit")
    # top-25%: {3}; top-50%: {3, 2}. compr: mean(4.5-1.5, 4.5-(-0.5)) ; suff: only top kept
    assert float(out["comprehensiveness"][0]) == pytest.approx((3.0 + 5.0) / 2)
    assert float(out["sufficiency"][0]) == pytest.approx(((4.5 - 3.0) + (4.5 - 5.0)) / 2)


def _faithfulness_reference(forward, x, attr, target, subsets):
    """Slow loop from the definition, for one input and given subsets."""
    f0 = float(forward(x)[0, target])
    sums, drops = [], []
    for subset in subsets:
        z = x.clone()
        z[0, subset] = 0
        drops.append(float(f0 - forward(z)[0, target]))
        sums.append(float(attr[0, subset].sum()))
    return float(np.corrcoef(sums, drops)[0, 1])


def test_faithfulness_correlation_exact_and_reference():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 20, generator=gen, dtype=torch.float64)
    w = torch.randn(20, generator=gen, dtype=torch.float64)

    def lin(z):
        return torch.stack([z @ w, 0 * z[:, 0]], 1)

    target = torch.zeros(3, dtype=torch.long)
    corr = M.faithfulness_correlation(lin, x, w * x, target, n_samples=30, output="logit")
    assert corr.tolist() == pytest.approx([1.0, 1.0, 1.0])  # exact attributions: drop = sum

    net = nn.Sequential(nn.Linear(20, 8), nn.Tanh(), nn.Linear(8, 2)).double()
    attr = torch.randn(3, 20, generator=gen, dtype=torch.float64)
    ours = M.faithfulness_correlation(net, x, attr, target, n_samples=12, subset_fraction=0.2,
                                      seed=3)
    # recover the subsets our function drew (same local generator, same recipe)
    noise = torch.rand(3, 12, 20, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    order = torch.argsort(torch.argsort(noise, dim=2), dim=2)
    for b in range(3):
        subsets = [torch.nonzero(order[b, s] < 4).flatten() for s in range(12)]
        prob = lambda z: net(z).detach().softmax(-1)  # noqa: E731
        ref = _faithfulness_reference(prob, x[b : b + 1], attr[b : b + 1], 0, subsets)
        assert float(ours[b]) == pytest.approx(ref, abs=1e-9)


def test_infidelity_known_answer_and_captum():
    from captum.metrics import infidelity as captum_infidelity

    gen = torch.Generator().manual_seed(2)
    x = torch.randn(4, 4, generator=gen, dtype=torch.float64)
    target = torch.zeros(4, dtype=torch.long)
    grad = W.expand(4, 4)  # the gradient of a linear model explains every perturbation exactly
    zero = M.infidelity(linear_forward, x, grad, target, normalize=False, seed=0)
    assert float(zero.abs().max()) < 1e-20

    net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).double()
    attr = torch.randn(4, 4, generator=gen, dtype=torch.float64)
    noise = 0.2 * torch.randn(4, 10, 4, generator=gen, dtype=torch.float64)
    flat = noise.reshape(40, 4)  # Captum repeats rows with repeat_interleave

    def perturb(inputs):
        return flat, inputs - flat

    for normalize in (False, True):
        ours = M.infidelity(net, x, attr, target, perturbations=noise, normalize=normalize)
        theirs = captum_infidelity(net, perturb, x, attr, target=target, n_perturb_samples=10,
                                   normalize=normalize)
        assert ours.tolist() == pytest.approx(theirs.tolist(), rel=1e-9, abs=1e-12)


def test_sensitivity_known_answer_and_captum():
    from captum.metrics import sensitivity_max

    gen = torch.Generator().manual_seed(3)
    x = torch.rand(3, 5, generator=gen, dtype=torch.float64)
    constant = M.max_sensitivity(lambda z: W[:4].sum() * torch.ones_like(z), x, radius=0.1)
    assert constant.tolist() == [0.0, 0.0, 0.0]  # saliency of a linear model never moves

    def square(z, **_):
        return tuple(t**2 for t in z) if isinstance(z, tuple) else z**2

    noise = (torch.rand(3 * 6, 5, generator=gen, dtype=torch.float64) * 2 - 1) * 0.1
    ours = M.max_sensitivity(square, x, perturbations=noise)
    theirs = sensitivity_max(square, x, perturb_func=lambda inp, r: inp + noise,
                             n_perturb_samples=6, perturb_radius=0.1)
    assert ours.tolist() == pytest.approx(theirs.tolist(), rel=1e-9)
    # by hand for one copy: ||(x+d)^2 - x^2|| / ||x^2||
    d = noise[0]
    hand = float(((x[0] + d) ** 2 - x[0] ** 2).norm() / (x[0] ** 2).norm())
    assert float(M.sensitivities(square, x, perturbations=noise)[0, 0]) == pytest.approx(hand)
    assert bool((M.avg_sensitivity(square, x, perturbations=noise) <= ours + 1e-15).all())


def test_sparseness_and_entropy_known_answers():
    n = 16
    uniform = torch.ones(1, n)
    onehot = torch.zeros(1, n)
    onehot[0, 3] = -5.0
    assert float(M.sparseness(uniform)[0]) == pytest.approx(0.0, abs=1e-9)
    assert float(M.sparseness(onehot)[0]) == pytest.approx((n - 1) / n, abs=1e-6)
    assert float(M.entropy(uniform)[0]) == pytest.approx(math.log(n))
    assert float(M.entropy(onehot)[0]) == pytest.approx(0.0)


def test_sparseness_and_entropy_match_quantus():
    quantus = pytest.importorskip("quantus")
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 1, 6, 6))
    x = rng.random((5, 1, 6, 6))
    y = np.zeros(5, dtype=int)
    gini = quantus.Sparseness(disable_warnings=True)(model=None, x_batch=x, y_batch=y, a_batch=a)
    ent = quantus.Complexity(disable_warnings=True)(model=None, x_batch=x, y_batch=y, a_batch=a)
    ours_gini = M.sparseness(torch.from_numpy(a)).tolist()
    ours_ent = M.entropy(torch.from_numpy(a)).tolist()
    assert ours_gini == pytest.approx([float(v) for v in gini], rel=1e-6)
    assert ours_ent == pytest.approx([float(v) for v in ent], rel=1e-6)


def test_spearman_matches_scipy_with_ties():
    from scipy.stats import spearmanr

    a = torch.tensor([[0.0, 0.0, 1.0, 2.0, 2.0, 5.0], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]])
    b = torch.tensor([[0.0, 1.0, 0.0, 3.0, 2.0, 4.0], [6.0, 5.0, 4.0, 3.0, 2.0, 1.0]])
    ours = M.spearman(a, b).tolist()
    assert ours[0] == pytest.approx(spearmanr(a[0], b[0]).statistic)
    assert ours[1] == pytest.approx(-1.0)


def test_cascading_randomisation_separates_model_blind_maps():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2)).double()
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(5, 6, generator=gen, dtype=torch.float64)
    before = [p.clone() for p in net.parameters()]

    def edge_detector(model):  # ignores the model: the sanity check must flag it (sim = 1)
        return x.abs()

    def gradient(model):
        z = x.clone().requires_grad_(True)
        model(z)[:, 0].sum().backward()
        return z.grad

    blind = M.cascading_randomisation(net, edge_detector, seed=0)
    assert list(blind) == ["2", "0"]  # output layer first
    assert all(bool((v == 1).all()) for v in blind.values())
    grad = M.cascading_randomisation(net, gradient, seed=0)
    assert float(M.randomisation_score(grad).mean()) < 0.6
    assert all(torch.equal(p, q) for p, q in zip(before, net.parameters(), strict=True))


def test_determinism_and_run_variance():
    fixed = torch.arange(6.0).reshape(2, 3)
    assert M.determinism(lambda: fixed.clone()).tolist() == [1.0, 1.0]
    calls = iter(range(10))
    noisy = M.determinism(lambda: fixed + torch.tensor([[0.0], [next(calls)]]), runs=3)
    assert noisy.tolist() == [1.0, 0.0]
    assert M.run_variance(lambda s: fixed).tolist() == [0.0, 0.0]
    var = M.run_variance(lambda s: fixed + s)  # std over seeds 0,1,2 is 1 everywhere
    assert var.tolist() == pytest.approx([1.0 / 2.0, 1.0 / 5.0])


def test_conservation_and_completeness():
    from dlbacktrace import Backtrace

    net = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3))
    exp = Backtrace(net).explain(torch.randn(2, 4, generator=torch.Generator().manual_seed(0)))
    assert M.conservation_error(exp) < 1e-5
    err = M.completeness_error(torch.tensor([[1.0, 2.0]]), torch.tensor([4.0]),
                               torch.tensor([0.0]))
    assert err.tolist() == pytest.approx([0.25])


def test_cost_measures_time_and_memory():
    def allocate():
        block = torch.ones(40_000_000)  # 160 MB
        import time

        time.sleep(0.5)  # long enough for the sampler to be scheduled on a throttled machine
        return float(block[0])

    cost = M.measure(allocate)
    assert cost.result == 1.0
    assert cost.seconds >= 0.5
    assert cost.peak_memory_mb > 100


def test_cost_reads_the_kernel_peak_when_the_sampler_cannot_run():
    """A fresh process whose peak rises during the call: exact even with the sampler starved."""
    script = (
        "import torch\n"
        "from dlbacktrace.evaluation.metrics import cost as M\n"
        "def allocate():\n"
        "    block = torch.ones(50_000_000)\n"  # 200 MB, freed before the call returns
        "    return float(block[0])\n"
        "print(M.measure(allocate, interval=1000.0).peak_memory_mb)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True)
    assert 150 < float(out.stdout.strip().splitlines()[-1]) < 400


def test_every_metric_declares_its_direction():
    for name in ("deletion_auc", "insertion_auc", "lerf_auc", "abpc", "comprehensiveness",
                 "sufficiency", "faithfulness_correlation", "infidelity", "max_sensitivity",
                 "avg_sensitivity", "determinism", "run_variance", "randomisation_similarity",
                 "sparseness", "entropy", "conservation_error", "time_per_instance_ms",
                 "peak_memory_mb"):
        assert isinstance(M.METRICS[name].higher_is_better, bool)
    assert M.METRICS["abpc"].higher_is_better and not M.METRICS["deletion_auc"].higher_is_better


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(M.MetricError, match="shaped like"):
        M.curves(linear_forward, torch.ones(1, 4), torch.ones(1, 3), torch.tensor([0]))


def test_morf_curve_matches_quantus_pixel_flipping():
    quantus = pytest.importorskip("quantus")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                            nn.Linear(64, 3)).eval()
    gen = torch.Generator().manual_seed(5)
    x = torch.rand(3, 1, 4, 4, generator=gen)
    x[:, 0, 0, 0] = 0.0  # so that Quantus's "black" (the minimum) is 0 as well
    attr = torch.randn(3, 1, 4, 4, generator=gen)  # no ties
    y = net(x).argmax(-1)
    metric = quantus.PixelFlipping(features_in_step=1, perturb_baseline="black",
                                   disable_warnings=True)
    theirs = np.array(metric(model=net, x_batch=x.numpy(), y_batch=y.numpy(),
                             a_batch=attr.numpy(), softmax=True, device="cpu"))
    ours = M.curves(net, x, attr, y, steps=16)
    assert ours.morf[:, 1:].numpy() == pytest.approx(theirs, abs=1e-5)


def test_eraser_read_off_curves_on_a_decimal_grid():
    x = torch.ones(1, 10, dtype=torch.float64)
    w = torch.arange(10, dtype=torch.float64)

    def lin(z):
        return torch.stack([z @ w, 0 * z[:, 0]], 1)

    c = M.curves(lin, x, w[None] * x, torch.tensor([0]), fractions=(0.0, 0.1, 0.2, 0.5, 1.0),
                 output="logit")
    scores = c.eraser((0.1, 0.2, 0.5))
    # top-10% = {9}, top-20% = {9, 8}, top-50% = {9..5}: removed sums 9, 17, 35
    assert float(scores["comprehensiveness"][0]) == pytest.approx((9 + 17 + 35) / 3)
    assert float(scores["sufficiency"][0]) == pytest.approx((45 - 9 + 45 - 17 + 45 - 35) / 3)
    with pytest.raises(M.MetricError, match="not one of"):
        c.eraser((0.3,))
