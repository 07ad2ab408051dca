import keras
import numpy as np

from keras_incremental.optimizers.gradients import gradient_function


def model_and_data():
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, name="hidden"),
            keras.layers.BatchNormalization(name="norm"),
            keras.layers.Dropout(0.5, seed=1),
            keras.layers.Dense(3),
        ]
    )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 4)).astype("float32")
    y = rng.integers(0, 3, size=16)
    return model, x, y


def test_gradients_match_a_finite_difference():
    model, x, y = model_and_data()

    def loss_fn(x, y):
        logits = model(x, training=False)
        return keras.ops.mean(
            keras.losses.sparse_categorical_crossentropy(
                y, logits, from_logits=True
            )
        )

    kernel = model.layers[-1].kernel
    loss, grads = gradient_function(loss_fn, [kernel])(x, y)
    grad = keras.ops.convert_to_numpy(grads[0])
    assert grad.shape == (8, 3)
    value = kernel.numpy()
    step = 1e-2
    moved = value.copy()
    moved[0, 0] += step
    kernel.assign(moved)
    later = float(keras.ops.convert_to_numpy(loss_fn(x, y)))
    estimate = (later - float(keras.ops.convert_to_numpy(loss))) / step
    np.testing.assert_allclose(grad[0, 0], estimate, rtol=0.05, atol=1e-3)


def test_unread_variables_get_zeros_and_state_is_updated():
    model, x, y = model_and_data()
    unused = keras.Variable(np.ones((2,), "float32"))
    trainable = model.trainable_variables
    trained = {id(v) for v in trainable}
    state = [v for v in model.variables if id(v) not in trained]

    def loss_fn(x, y):
        logits = model(x, training=True)
        return keras.ops.mean(
            keras.losses.sparse_categorical_crossentropy(
                y, logits, from_logits=True
            )
        )

    step = gradient_function(loss_fn, [*trainable, unused], state=state)
    mean = model.get_layer("norm").moving_mean.numpy().copy()
    _, first = step(x, y)
    _, second = step(x, y)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(first[-1]), 0)
    # Batch-norm statistics move and each call draws a new dropout mask,
    # on every backend.
    assert not np.allclose(model.get_layer("norm").moving_mean.numpy(), mean)
    assert not np.allclose(
        keras.ops.convert_to_numpy(first[0]),
        keras.ops.convert_to_numpy(second[0]),
    )
