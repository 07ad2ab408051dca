from keras_incremental.memory.selection import check_selection
from keras_incremental.strategies.strategy import Strategy


class Replay(Strategy):
    """Experience replay: exemplars of earlier classes join every stage.

    `IncrementalModel.prepare` mixes the memory's samples (a class-balanced
    budget of `memory_size`) into the stage's data, so each batch trains on
    old and new classes together.

    Args:
        selection: How exemplars are chosen: `"random"` or `"herding"`
            (closest to the class mean in the head's input features).
            Defaults to `"random"`.

    Example:

    ```python
    inc = keras_incremental.IncrementalModel(
        strategy=Replay(selection="herding"), memory_size=200
    )
    ```

    References:
        - [Rebuffi et al., 2017](https://arxiv.org/abs/1611.07725), iCaRL.
        - [Chaudhry et al., 2019](https://arxiv.org/abs/1902.10486), On Tiny
          Episodic Memories in Continual Learning.
    """

    name = "replay"
    replay = True

    def __init__(self, selection="random"):
        self.selection = check_selection(selection)

    def get_config(self):
        return {"selection": self.selection}
