"""The five models of Table 1 (Chung et al. 2015; docs/paper.md): for each, its model program in two
forms, its guide and the shape of its network.

| name          | latent | prior                    | emission          |
| rnn-gauss     | none   | -                        | Gaussian          |
| rnn-gmm       | none   | -                        | Gaussian mixture  |
| vrnn-i-gauss  | z_t    | N(0, I)                  | Gaussian          |
| vrnn-gauss    | z_t    | conditional on h_{t-1}   | Gaussian          |
| vrnn-gmm      | z_t    | conditional on h_{t-1}   | Gaussian mixture  |

`model` is the program step by step, as the paper writes it (it also generates); `batched` is the
same density scored with one network call over all steps (models/vrnn.py). `--scoring` picks which
of the two training and evaluation run.
"""
from collections import namedtuple

from guides import GUIDES, empty_guide, filtering_guide
from models.rnn import rnn_model, rnn_model_batched
from models.vrnn import vrnn_model, vrnn_model_batched
from pyro_vrnn.networks import VRNN

ModelSpec = namedtuple("ModelSpec", ["model", "batched", "guide", "latent", "conditional_prior", "emission"])

MODELS = {
    "rnn-gauss": ModelSpec(rnn_model, rnn_model_batched, empty_guide, False, False, "gauss"),
    "rnn-gmm": ModelSpec(rnn_model, rnn_model_batched, empty_guide, False, False, "gmm"),
    "vrnn-i-gauss": ModelSpec(vrnn_model, vrnn_model_batched, filtering_guide, True, False, "gauss"),
    "vrnn-gauss": ModelSpec(vrnn_model, vrnn_model_batched, filtering_guide, True, True, "gauss"),
    "vrnn-gmm": ModelSpec(vrnn_model, vrnn_model_batched, filtering_guide, True, True, "gmm"),
}
SCORINGS = ("batched", "steps")


def build(config, kind, x_dim):
    """(model, guide, network) for config.model on data of this kind and dimension; the model in the
    form config.scoring names ("batched" or "steps"), the guide config.guide names (latent models)."""
    spec = MODELS[config.model]
    vrnn = VRNN(config, kind, x_dim, spec.latent, spec.conditional_prior, spec.emission)
    guide = GUIDES[config.guide] if spec.latent else spec.guide
    return (spec.batched if config.scoring == "batched" else spec.model), guide, vrnn


__all__ = ["MODELS", "SCORINGS", "build", "vrnn_model", "vrnn_model_batched", "rnn_model", "rnn_model_batched"]
