"""The five models of Table 1 (Chung et al. 2015; docs/paper.md) and the SRNN (Fraccaro et al. 2016): for
each, its model program in two forms, its guide and the shape of its network.

| name         | latent | prior                       | emission         | network                     |
| rnn-gauss    | none   | -                           | Gaussian         | vrnn_networks.VRNN          |
| rnn-gmm      | none   | -                           | Gaussian mixture | vrnn_networks.VRNN          |
| vrnn-i-gauss | z_t    | N(0, I)                     | Gaussian         | vrnn_networks.VRNN          |
| vrnn-gauss   | z_t    | conditional on h_{t-1}      | Gaussian         | vrnn_networks.VRNN          |
| vrnn-gmm     | z_t    | conditional on h_{t-1}      | Gaussian mixture | vrnn_networks.VRNN          |
| srnn         | z_t    | conditional on z_{t-1}, d_t | Gaussian         | srnn_networks.SRNN          |
| srnn-gmm     | z_t    | conditional on z_{t-1}, d_t | Gaussian mixture | srnn_networks.SRNN          |
| cvrnn-gmm    | z_t    | conditional on h_{t-1}, w   | Gaussian mixture | text_window.ConditionalVRNN |
| crnn-gmm     | none   | -                           | Gaussian mixture | text_window.ConditionalVRNN |

The last two are conditioned on the text each line writes, through Graves's (2013) soft window w
(models/conditional.py, guides/text_filtering.py); they have one form, which serves both scorings.

The emission column is for real-valued data; binary data take Bernoulli bits and token data (characters,
chess moves) one categorical over the vocabulary, whatever the name says (heads.EmissionHead).

`model` is the program step by step, as the paper writes it (it also generates); `batched` is the
same density scored with one network call over all steps (models/vrnn.py). `--scoring` picks which
of the two training and evaluation run. `--guide` picks a VRNN's guide; the SRNN has its own smoothing
guide (guides/srnn_smoothing.py), and the RNN baselines none.
"""

from collections import namedtuple

from pyro_vrnn.guides import GUIDES, empty_guide, filtering_guide, srnn_guide
from pyro_vrnn.guides.text_filtering import conditional_empty_guide, conditional_guide
from pyro_vrnn.models.conditional import conditional_model
from pyro_vrnn.models.rnn import rnn_model, rnn_model_batched
from pyro_vrnn.models.srnn import srnn_model, srnn_model_batched
from pyro_vrnn.models.vrnn import vrnn_model, vrnn_model_batched
from pyro_vrnn.nn.srnn_networks import SRNN
from pyro_vrnn.nn.text_window import ConditionalVRNN
from pyro_vrnn.nn.vrnn_networks import VRNN

ModelSpec = namedtuple(
    "ModelSpec", ["model", "batched", "guide", "latent", "conditional_prior", "emission", "network"], defaults=[VRNN]
)

MODELS = {
    "rnn-gauss": ModelSpec(rnn_model, rnn_model_batched, empty_guide, False, False, "gauss"),
    "rnn-gmm": ModelSpec(rnn_model, rnn_model_batched, empty_guide, False, False, "gmm"),
    "vrnn-i-gauss": ModelSpec(vrnn_model, vrnn_model_batched, filtering_guide, True, False, "gauss"),
    "vrnn-gauss": ModelSpec(vrnn_model, vrnn_model_batched, filtering_guide, True, True, "gauss"),
    "vrnn-gmm": ModelSpec(vrnn_model, vrnn_model_batched, filtering_guide, True, True, "gmm"),
    "srnn": ModelSpec(srnn_model, srnn_model_batched, srnn_guide, True, True, "gauss", SRNN),
    "srnn-gmm": ModelSpec(srnn_model, srnn_model_batched, srnn_guide, True, True, "gmm", SRNN),
    "cvrnn-gmm": ModelSpec(conditional_model, conditional_model, conditional_guide, True, True, "gmm", ConditionalVRNN),
    "crnn-gmm": ModelSpec(
        conditional_model, conditional_model, conditional_empty_guide, False, False, "gmm", ConditionalVRNN
    ),
}
SCORINGS = ("batched", "steps")


def build(config, kind, x_dim, vocabulary_size=None):
    """(model, guide, network) for config.model on data of this kind and dimension (and, for kind "tokens",
    a vocabulary of this size); the model in the form config.scoring names ("batched" or "steps"); a VRNN's
    guide is the one config.guide names."""
    spec = MODELS[config.model]
    net = spec.network(config, kind, x_dim, spec.latent, spec.conditional_prior, spec.emission, vocabulary_size)
    guide = GUIDES[config.guide] if spec.network is VRNN and spec.latent else spec.guide
    return (spec.batched if config.scoring == "batched" else spec.model), guide, net


__all__ = [
    "MODELS",
    "SCORINGS",
    "build",
    "vrnn_model",
    "vrnn_model_batched",
    "rnn_model",
    "rnn_model_batched",
    "srnn_model",
    "srnn_model_batched",
]
