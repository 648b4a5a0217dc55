"""Guides q(z | x): the VRNN's filtering guide (the paper's), a smoothing guide that also reads the
future of x, the SRNN's own smoothing guide, and the empty guide of models without latents."""

from pyro_vrnn.guides.filtering import filtering_guide
from pyro_vrnn.guides.smoothing import smoothing_guide
from pyro_vrnn.guides.srnn_smoothing import srnn_guide


def empty_guide(vrnn, x, mask, num_sequences=None, kl_scale=1.0, record=None):
    """The RNN baselines have no latent sites, so there is nothing to guess."""


GUIDES = {"filtering": filtering_guide, "smoothing": smoothing_guide}  # --guide: the VRNN's (the SRNN has srnn_guide)

__all__ = ["GUIDES", "filtering_guide", "smoothing_guide", "srnn_guide", "empty_guide"]
