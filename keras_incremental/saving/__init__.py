"""What the package writes and reads: the stage checkpoint and the run state
in it, the untrusted-file readers, atomic file writes, and the TensorFlow
Serving export."""
