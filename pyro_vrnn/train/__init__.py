"""Training: the configuration and its flags, the SVI step, the loop, checkpoints, run directories,
and the process a run lives in (devices, torchrun, signals)."""
