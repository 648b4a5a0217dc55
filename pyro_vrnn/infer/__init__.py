"""Inference: the guide's record, the ELBOs and particle bounds, SMC, and the evaluation of log p(x)."""
