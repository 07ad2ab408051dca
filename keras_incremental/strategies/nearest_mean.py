import numpy as np

from keras_incremental.strategies.features import feature_extractor
from keras_incremental.strategies.features import outputs
from keras_incremental.strategies.strategy import Strategy


class NearestMeanOfExemplars(Strategy):
    """Classifies by the nearest class mean of the exemplars' features.

    iCaRL's classifier: the features entering the head are L2-normalised;
    each class's mean over its exemplars (normalised again) is its
    prototype; a sample gets the class of the closest prototype. Used by
    `IncrementalModel.predict`; `model.predict` still gives the head's
    logits. While any class has no exemplar (no memory yet, or a budget
    smaller than the number of classes), the head's argmax is used.

    Example:

    ```python
    inc = keras_incremental.IncrementalModel(strategy="icarl",
                                             memory_size=200)
    labels = inc.decode(inc.predict(x_test))
    ```

    References:
        - [Rebuffi et al., 2017](https://arxiv.org/abs/1611.07725), iCaRL:
          Incremental Classifier and Representation Learning.
    """

    name = "nme"

    def predict(self, context, x):
        memory = context.memory
        if memory is None or not len(memory):
            return None
        x_mem, y_mem = memory.samples()
        classes = np.unique(y_mem)
        if classes.size < context.head.units:
            return None
        extractor = feature_extractor(context.model, context.head)
        features = _normalise(outputs(extractor, x_mem))
        means = np.stack(
            [_normalise(features[y_mem == c].mean(0)) for c in classes]
        )
        queries = _normalise(outputs(extractor, x))
        return classes[np.argmax(queries @ means.T, axis=1)]


def _normalise(features):
    norms = np.linalg.norm(features, axis=-1, keepdims=True)
    return features / np.maximum(norms, 1e-12)
