"""The seed CNN: exact architecture, and how it is compiled."""

from __future__ import annotations

import pytest

SEED_LAYERS = [
    ("InputLayer", {}),
    ("Rescaling", {}),
    *[
        layer
        for filters in (512, 256, 128)
        for layer in (
            ("Conv2D", {"filters": filters, "kernel_size": (3, 3)}),
            ("BatchNormalization", {}),
            ("Activation", {"activation": "relu"}),
            ("MaxPooling2D", {"pool_size": (3, 3)}),
            ("Dropout", {"rate": 0.1}),
        )
    ],
    ("Flatten", {}),
    ("Dense", {"units": 1, "activation": "sigmoid"}),
]


@pytest.mark.slow
def test_make_model_builds_the_seed_architecture_with_its_exact_parameter_count() -> None:
    from training.model import SEED_PARAMETERS, make_model

    model = make_model()

    assert model.count_params() == SEED_PARAMETERS == 1_484_161
    assert tuple(model.input_shape) == (None, 100, 100, 1)
    assert tuple(model.output_shape) == (None, 1)
    assert [type(layer).__name__ for layer in model.layers] == [name for name, _ in SEED_LAYERS]
    for layer, (name, expected) in zip(model.layers, SEED_LAYERS, strict=True):
        config = layer.get_config()
        got = {key: tuple(v) if isinstance(v, list) else v for key, v in config.items() if key in expected}
        assert got == expected, f"{name} {layer.name}"
    assert model.layers[1].get_config()["scale"] == pytest.approx(1 / 255)


def test_make_model_takes_smaller_filter_counts_for_experiments() -> None:
    from training.model import make_model

    model = make_model(filters=(8, 8, 8))

    conv = [layer for layer in model.layers if type(layer).__name__ == "Conv2D"]
    assert [layer.filters for layer in conv] == [8, 8, 8]
    assert tuple(model.output_shape) == (None, 1)


def test_compile_model_uses_adam_binary_cross_entropy_accuracy_and_auc() -> None:
    import keras

    from training.model import compile_model, make_model

    model = compile_model(make_model(filters=(4, 4, 4)), learning_rate=3e-4)

    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert float(model.optimizer.learning_rate) == pytest.approx(3e-4)
    assert model.loss == "binary_crossentropy"
    accuracy, auc = model.get_compile_config()["metrics"]
    assert accuracy == "accuracy"
    assert (auc["class_name"], auc["config"]["name"], auc["config"]["curve"]) == ("AUC", "auc", "ROC")
