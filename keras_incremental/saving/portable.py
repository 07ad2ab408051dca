"""Loading an optimizer saved on another backend."""

import keras


def portable_optimizers():
    """`custom_objects` that load an optimizer saved on any backend.

    On PyTorch, `keras.optimizers.Adam()` makes an instance of a
    backend-only subclass (from the `torch_adam` module of Keras's PyTorch
    backend), and `model.save` records that module: another backend would
    load the PyTorch class and fail on its first step. These map each public
    optimizer's registered name (its class name) to the public class, which
    makes this backend's own kind.

    Returns:
        A dict from class name to public optimizer class, for the
        `custom_objects` of `keras.models.load_model`.
    """
    return {
        name: value
        for name, value in vars(keras.optimizers).items()
        if isinstance(value, type)
        and issubclass(value, keras.optimizers.Optimizer)
    }
