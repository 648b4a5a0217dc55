"""The five models of Table 1 (PAPER.md), each a model program, its guide and its network's shape.

| name          | latent | prior                    | emission          |
| rnn-gauss     | none   | -                        | Gaussian          |
| rnn-gmm       | none   | -                        | Gaussian mixture  |
| vrnn-i-gauss  | z_t    | N(0, I)                  | Gaussian          |
| vrnn-gauss    | z_t    | conditional on h_{t-1}   | Gaussian          |
| vrnn-gmm      | z_t    | conditional on h_{t-1}   | Gaussian mixture  |
"""
from collections import namedtuple

from guides import empty_guide, filtering_guide
from models.rnn import rnn_model
from models.vrnn import vrnn_model
from pyro_vrnn.networks import VRNN

ModelSpec = namedtuple("ModelSpec", ["model", "guide", "latent", "conditional_prior", "emission"])

MODELS = {
    "rnn-gauss": ModelSpec(rnn_model, empty_guide, False, False, "gauss"),
    "rnn-gmm": ModelSpec(rnn_model, empty_guide, False, False, "gmm"),
    "vrnn-i-gauss": ModelSpec(vrnn_model, filtering_guide, True, False, "gauss"),
    "vrnn-gauss": ModelSpec(vrnn_model, filtering_guide, True, True, "gauss"),
    "vrnn-gmm": ModelSpec(vrnn_model, filtering_guide, True, True, "gmm"),
}


def build(config, kind, x_dim):
    """(model, guide, network) for config.model on data of this kind and dimension."""
    spec = MODELS[config.model]
    vrnn = VRNN(config, kind, x_dim, spec.latent, spec.conditional_prior, spec.emission)
    return spec.model, spec.guide, vrnn


__all__ = ["MODELS", "build", "vrnn_model", "rnn_model"]
