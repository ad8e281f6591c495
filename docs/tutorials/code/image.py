"""Tutorial: explain an image classifier (a small CNN on scikit-learn's 8x8 digits)."""

# --8<-- [start:train]
import torch

from dlbacktrace import Backtrace
from dlbacktrace.examples.demo import load_digits_split, train_digits_cnn
from dlbacktrace.viz import save_figure

x_train, y_train, x_test, y_test = load_digits_split(seed=0)   # [N, 1, 8, 8] in [0, 1]
model = train_digits_cnn(x_train, y_train, seed=0)   # conv-bn-relu-maxpool, conv-relu, linear
images = x_test[:4]
# --8<-- [end:train]

# --8<-- [start:default]
bt = Backtrace(model)
exp = bt.explain(images)                  # target = the predicted digit of each image
print(exp.relevance.shape)                # torch.Size([4, 1, 8, 8]): one value per pixel
print(exp.target, y_test[:4])             # predicted vs true digits
fig = exp.plot(row=0)                     # heat map over the image (matplotlib Figure)
save_figure(fig, "digit_default.png")
# --8<-- [end:default]
assert exp.relevance.shape == images.shape
assert exp.conservation_error < 1e-5

# --8<-- [start:contrast]
exp = bt.explain(images, mode="contrast")  # evidence for (positive) and against (negative)
save_figure(exp.plot(row=0, kind="contrast"), "digit_contrast.png")
other = bt.explain(images, target=[3, 3, 3, 3], mode="contrast")  # why (not) a 3?
print(other.relevance.sum(dim=(1, 2, 3)))  # net evidence for "3" in each image
# --8<-- [end:contrast]
assert torch.equal(exp.relevance, exp.positive - exp.negative)

# --8<-- [start:layers]
exp = bt.explain(images, layers=["features.2", "features.5"])  # after each ReLU
print({name: tuple(r.shape) for name, r in exp.layers.items()})
# --8<-- [end:layers]
assert set(exp.layers) == {"features.2", "features.5"}
