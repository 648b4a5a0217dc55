"""pyro-vrnn: the Variational RNN (Chung et al., NIPS 2015) in Pyro.

The library holds what the model and guide programs stand on: the networks (`networks`), the
emission distributions (`distributions`), the data (`data`), the training loop (`train`), the
evaluation (`evaluate`) and the pictures (`plots`). The programs themselves live in the top-level
packages `models/` (p(x, z)) and `guides/` (q(z | x)).
"""

__version__ = "0.1.0"
