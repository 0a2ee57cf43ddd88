"""Files in and out: key drawings become [-1, 1] tensors (``frames``), frames become videos (``video``)."""
