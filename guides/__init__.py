"""Guides q(z | x): the VRNN's filtering guide, and the empty guide of models without latents."""
from guides.filtering import filtering_guide


def empty_guide(vrnn, x, mask, num_sequences=None, kl_scale=1.0, record=None):
    """The RNN baselines have no latent sites, so there is nothing to guess."""


__all__ = ["filtering_guide", "empty_guide"]
