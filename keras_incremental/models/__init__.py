"""Operations on a whole Keras model: finding and growing its head, adopting
a plain classifier, transferring weights, freezing, and the checks of what a
growable model may look like."""
