"""Training infrastructure every trainer shares (torchtune's ``training/``): the batch stream, optimizer, checkpoints
and resume, the shared trainer base, stop signals, multi-process helpers, video decoding with its failure budget,
the output directory and the run's metadata and metric log."""
