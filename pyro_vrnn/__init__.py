"""pyro-vrnn: the Variational RNN (Chung et al., NIPS 2015) in Pyro.

The library in layers, named as Pyro names its own (each may import only those above it):

    pyro_vrnn.distributions  the emissions p(x_t | z_t, h_{t-1}) and the diagonal Gaussian of z_t
    pyro_vrnn.nn             the networks phi_x, phi_z, phi_prior, phi_enc, phi_dec, f (VRNN, SRNN)
    pyro_vrnn.models         the generative programs p(x, z)    (the checkout's models/ folder)
    pyro_vrnn.guides         the guide programs q(z | x)        (the checkout's guides/ folder)
    pyro_vrnn.infer          the guide's record, ELBOs and particle bounds, SMC, evaluation of log p(x)
    pyro_vrnn.data           one module per data source, the HDF5 schema, the cache
    pyro_vrnn.train          the config and flags, the SVI step, the loop, checkpoints, run directories,
                             and the process a run lives in (devices, torchrun, signals)
    pyro_vrnn.report         samples, the paper's figures, training curves
    pyro_vrnn.benchmarks     the plain-PyTorch yardsticks and timers of run/benchmark.py and the tests
                             (the checkout's benchmarks/ folder)
"""

__version__ = "0.1.0"
