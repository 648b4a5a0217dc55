"""The emission distributions p(x_t | z_t, h_{t-1}) and the diagonal Gaussian of z_t."""
