"""The recipe search that runs on a lent accelerator, and the two steps around it that run here.

    python -m training.accelerator.prepare       # here: the ELPV non-test split as arrays, the wheels it lacks
    python -m training.accelerator.search ...    # there: Keras on JAX, 5-fold out-of-fold search within a budget
    python -m training.accelerator.bring_back    # here: weights -> ONNX (TensorFlow path, parity checked), card

The accelerator has JAX and PyTorch, no TensorFlow, no pydantic and no package registry, so `search` and
everything it imports use Keras, NumPy and scikit-learn only (tests/training/accelerator checks it with those
imports blocked). docs/accelerator.md says how to run it and what it costs.
"""
