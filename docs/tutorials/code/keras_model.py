"""Tutorial: a Keras 3 model explained through the torch backend."""

# --8<-- [start:keras]
import os

os.environ.setdefault("KERAS_BACKEND", "torch")   # before keras is first imported
import keras
import numpy as np

from dlbacktrace.bridges.keras import KerasBacktrace

inputs = keras.Input((6, 6, 1))                     # channels-last, as in Keras
x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
x = keras.layers.Flatten()(x)
outputs = keras.layers.Dense(3)(x)
keras.Model(inputs, outputs).save("tiny.keras")

images = np.random.default_rng(0).random((2, 6, 6, 1)).astype("float32")
kb = KerasBacktrace("tiny.keras", mode="contrast")  # reusable: captures once per shape
exp = kb.explain(images)
print(exp.relevance.shape)                          # torch.Size([2, 6, 6, 1]): NHWC
# --8<-- [end:keras]
assert tuple(exp.relevance.shape) == images.shape
