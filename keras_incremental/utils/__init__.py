"""Small checks shared by every part: argument checks and the name patterns
of `freeze` and `learning_rates`."""
