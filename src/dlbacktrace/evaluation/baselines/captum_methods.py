"""Methods Captum implements, configured as their authors recommend.

Every function takes a :class:`~.prepared.Prepared` model, the target per row and options, and
returns attributions shaped like ``prep.x``; each is wrapped in a :class:`~.method.MapMethod`,
which knows whether the map is signed. Sampling methods draw from a local, seeded random
state: Captum samples from torch's global generator, so those calls run inside
``torch.random.fork_rng`` (the caller's random stream is left untouched).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from dlbacktrace.engine.state import seeded
from dlbacktrace.evaluation.baselines.masks import default_mask
from dlbacktrace.evaluation.baselines.prepared import TOKEN_KEY, MethodError, Prepared, prepare
from dlbacktrace.evaluation.baselines.unshare import unshare_modules


def _captum() -> Any:
    try:
        import captum.attr as attr
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MethodError(
            "this method needs Captum: pip install 'dlbacktrace[baselines]'"
        ) from exc
    return attr


def _baseline(prep: Prepared, baseline: Any) -> torch.Tensor:
    """Reference input for IG / DeepLift: zeros (black image, the mean of standardised
    columns), a given tensor/float, or for text the embedding of ``baseline_token_id``."""
    if isinstance(baseline, torch.Tensor):
        return baseline.to(prep.x).expand_as(prep.x)
    if isinstance(baseline, (int, float)):
        return torch.full_like(prep.x, float(baseline))
    return torch.zeros_like(prep.x)


def _token_baseline(prep: Prepared, token_id: int | None) -> torch.Tensor:
    if token_id is None:
        return torch.zeros_like(prep.x)
    ids = torch.full_like(prep.token_kwargs[TOKEN_KEY], int(token_id))
    with torch.no_grad():
        return prep.embedding(ids).detach()


def reference(prep: Prepared, options: dict[str, Any]) -> torch.Tensor:
    if prep.kind == "tokens":
        return _token_baseline(prep, options.get("baseline_token_id", _pad_id(prep)))
    return _baseline(prep, options.get("baseline"))


def _pad_id(prep: Prepared) -> int | None:
    config = getattr(prep.model, "config", None)
    for module in prep.model.modules():
        config = config or getattr(module, "config", None)
    pad = getattr(config, "pad_token_id", None)
    return int(pad) if pad is not None else None


def saliency(prep: Prepared, target: torch.Tensor, **options: Any) -> torch.Tensor:
    """|∂f/∂x| (Simonyan et al.).

    Parameters
    ----------
    prep, target
        The prepared model and inputs, and the explained class per row.
    **options
        Unused.
    """
    a = _captum().Saliency(prep.forward).attribute(
        prep.x, target=target, abs=True, additional_forward_args=prep.extra or None
    )
    return a.detach()


def input_x_gradient(prep: Prepared, target: torch.Tensor, **options: Any) -> torch.Tensor:
    """Gradient × input (Shrikumar et al.): the first-order contribution of each element.

    Parameters
    ----------
    prep, target
        The prepared model and inputs, and the explained class per row.
    **options
        Unused.
    """
    a = _captum().InputXGradient(prep.forward).attribute(
        prep.x, target=target, additional_forward_args=prep.extra or None
    )
    return a.detach()


def integrated_gradients(
    prep: Prepared, target: torch.Tensor, **options: Any
) -> torch.Tensor:
    """IG (Sundararajan et al.): Gauss-Legendre path, ``n_steps`` (default 50).

    Parameters
    ----------
    prep, target
        The prepared model and inputs, and the explained class per row.
    **options
        ``n_steps``, ``baseline`` (float inputs) or ``baseline_token_id`` (text),
        ``internal_batch_size``.
    """
    a = _captum().IntegratedGradients(prep.forward).attribute(
        prep.x,
        baselines=reference(prep, options),
        target=target,
        additional_forward_args=prep.extra or None,
        n_steps=int(options.get("n_steps", 50)),
        internal_batch_size=options.get("internal_batch_size"),
    )
    return a.detach()


def smoothgrad(prep: Prepared, target: torch.Tensor, **options: Any) -> torch.Tensor:
    """SmoothGrad (Smilkov et al.): mean |gradient| over ``n_samples`` (default 25) noisy
    copies, noise σ = ``noise_level`` (default 0.15) × the input's value range.

    Parameters
    ----------
    prep, target
        The prepared model and inputs, and the explained class per row.
    **options
        ``n_samples``, ``noise_level``, ``seed``, ``internal_batch_size``.
    """
    x = prep.x
    span = (x.amax() - x.amin()).item() or 1.0
    sigma = float(options.get("noise_level", 0.15)) * span
    tunnel = _captum().NoiseTunnel(_captum().Saliency(prep.forward))
    with seeded(int(options.get("seed", 0)), prep.x.device):
        a = tunnel.attribute(
            x,
            nt_type="smoothgrad",
            nt_samples=int(options.get("n_samples", 25)),
            nt_samples_batch_size=options.get("internal_batch_size"),
            stdevs=sigma,
            target=target,
            abs=True,
            additional_forward_args=prep.extra or None,
        )
    return a.detach()


def deeplift(prep: Prepared, target: torch.Tensor, **options: Any) -> torch.Tensor:
    """DeepLift (Shrikumar et al., Rescale rule) against the same reference as IG.

    Parameters
    ----------
    prep, target
        The prepared model and inputs, and the explained class per row.
    **options
        ``baseline`` (float inputs) or ``baseline_token_id`` (text).
    """
    model = _forward_module(prep)
    if prep.kind == "tensor":  # one module per call (e.g. ResNet's reused ReLU)
        unshared = unshare_modules(prep.model)
        if unshared is not prep.model:
            model = _Forward(prepare(unshared, prep.x, **prep.model_kwargs))
    try:
        a = _captum().DeepLift(model).attribute(
            prep.x,
            baselines=reference(prep, options),
            target=target,
            additional_forward_args=prep.extra or None,
        )
    except (AssertionError, RuntimeError) as exc:
        raise MethodError(f"DeepLift failed on this model: {exc}") from exc
    return a.detach()


class _Forward(nn.Module):
    """A module around ``prep.forward`` (DeepLift / LRP hook modules, so they need one)."""

    def __init__(self, prep: Prepared) -> None:
        super().__init__()
        self.inner = prep.model
        self._forward = prep.forward

    def forward(self, x: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        return self._forward(x, *extra)


def _forward_module(prep: Prepared) -> nn.Module:
    return _Forward(prep)


def _last_conv(model: nn.Module) -> nn.Module:
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Conv1d, nn.Conv3d))]
    if not convs:
        raise MethodError(
            "grad-cam needs a convolutional layer and the model has none; pass layer= to choose one"
        )
    return convs[-1]


def grad_cam(prep: Prepared, target: torch.Tensor, **options: Any) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al.) at the last conv layer (``layer=`` overrides: a module or its
    name), ReLU'd and upsampled bilinearly to the input size, the same on every channel.

    Parameters
    ----------
    prep, target
        The prepared model and inputs, and the explained class per row.
    **options
        ``layer``: a module or its name.
    """
    if prep.kind != "tensor" or prep.x.dim() != 4:
        raise MethodError("grad-cam applies to image inputs [B, C, H, W] of a CNN")
    layer = options.get("layer")
    if isinstance(layer, str):
        layer = dict(prep.model.named_modules()).get(layer)
        if layer is None:
            raise MethodError(f"no module named {options['layer']!r} in the model")
    layer = layer or _last_conv(prep.model)
    attr = _captum()
    cam = attr.LayerGradCam(prep.forward, layer).attribute(
        prep.x, target=target, relu_attributions=True
    )
    up = attr.LayerAttribution.interpolate(cam, tuple(prep.x.shape[-2:]), "bilinear")
    return up.detach().expand_as(prep.x).clone()


def _lime_kernel(prep: Prepared, n_features: int) -> Any:
    """LIME's own defaults: exponential kernel on cosine distance, width 0.25 (images, text);
    on Euclidean distance with width 0.75·sqrt(#features) for tables."""
    from captum.attr._core.lime import get_exp_kernel_similarity_function

    if prep.kind == "tensor" and prep.x.dim() == 2:
        return get_exp_kernel_similarity_function("euclidean", 0.75 * n_features**0.5)
    return get_exp_kernel_similarity_function("cosine", 0.25)


def _perturbation_inputs(prep: Prepared, options: dict[str, Any]):
    """(inputs, forward, extra, baseline, feature_mask) in the space perturbation runs in."""
    if prep.kind == "tokens":
        ids = prep.token_kwargs[TOKEN_KEY]
        token = options.get("baseline_token_id", _pad_id(prep)) or 0
        mask = options.get("feature_mask")
        mask = default_mask(ids) if mask is None else mask
        return ids, prep.forward_ids, prep.extra, int(token), mask
    mask = options.get("feature_mask")
    if mask is None or isinstance(mask, str):
        mask = default_mask(prep.x, mask or "auto")
    return prep.x, prep.forward, (), _baseline(prep, options.get("baseline")), mask


def lime(prep: Prepared, target: torch.Tensor, **options: Any) -> torch.Tensor:
    """LIME (Ribeiro et al.): ridge surrogate on ``n_samples`` (default 200) random feature
    subsets; features are columns, tokens, patches or superpixels (``feature_mask=``).

    Parameters
    ----------
    prep, target
        The prepared model and inputs, and the explained class per row.
    **options
        ``n_samples``, ``feature_mask`` (a mask or its kind), ``baseline`` /
        ``baseline_token_id``, ``seed``, ``perturbations_per_eval``.
    """
    from captum._utils.models.linear_model import SkLearnRidge

    x, forward, extra, base, mask = _perturbation_inputs(prep, options)
    n_features = int(mask.max()) + 1
    explainer = _captum().Lime(
        forward,
        interpretable_model=SkLearnRidge(alpha=1.0),
        similarity_func=_lime_kernel(prep, n_features),
    )
    return _sampled(explainer, prep, target, options, x, extra, base, mask)


def kernel_shap(prep: Prepared, target: torch.Tensor, **options: Any) -> torch.Tensor:
    """KernelSHAP (Lundberg & Lee): Shapley-kernel weighted regression on ``n_samples``
    (default 200) coalitions of the same feature groups as LIME.

    Parameters
    ----------
    prep, target
        The prepared model and inputs, and the explained class per row.
    **options
        As for :func:`lime`.
    """
    x, forward, extra, base, mask = _perturbation_inputs(prep, options)
    explainer = _captum().KernelShap(forward)
    return _sampled(explainer, prep, target, options, x, extra, base, mask)


def _sampled(explainer, prep: Prepared, target, options, x, extra, base, mask) -> torch.Tensor:
    """Run a sampling explainer (LIME, KernelSHAP) seeded, in batches of perturbations."""
    with seeded(int(options.get("seed", 0)), prep.x.device):
        a = explainer.attribute(
            x,
            target=target,
            baselines=base,
            feature_mask=mask,
            additional_forward_args=extra or None,
            n_samples=int(options.get("n_samples", 200)),
            perturbations_per_eval=int(options.get("perturbations_per_eval", 64)),
        )
    return _to_attr_space(prep, a.detach().to(torch.float32))


def _to_attr_space(prep: Prepared, a: torch.Tensor) -> torch.Tensor:
    """Token attributions [B, T] → [B, T, 1]: ``prep.reduce`` (sum over dim −1) keeps them."""
    return a[..., None] if prep.kind == "tokens" else a


def lrp_epsilon(prep: Prepared, target: torch.Tensor, **options: Any) -> torch.Tensor:
    """LRP-ε (Bach et al.) with Captum's rules, on a copy of the model (Captum attaches rule
    objects to modules). Layers Captum has no rule for raise an error naming the layer.

    Parameters
    ----------
    prep, target
        The prepared model and inputs, and the explained class per row.
    **options
        Unused.
    """
    if prep.kind != "tensor":
        raise MethodError("lrp-epsilon: Captum's LRP has no rules for embeddings/attention")
    model = copy.deepcopy(prep.model).eval()
    try:
        a = _captum().LRP(model).attribute(prep.x, target=target)
    except TypeError as exc:
        text = str(exc)
        if "has no rule" in text:
            layer = text.split("Module of type ")[-1].split(" has no rule")[0]
            raise MethodError(
                f"lrp-epsilon: Captum's LRP has no rule for layer {layer}; it supports Linear, "
                "Conv2d, pooling, BatchNorm2d, ReLU, Tanh and Dropout"
            ) from exc
        raise
    return a.detach()
