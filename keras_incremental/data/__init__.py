"""The data path of a stage: class labels and their encoder, the targets the
compiled loss wants, and the stage data `prepare` hands to `fit`."""
