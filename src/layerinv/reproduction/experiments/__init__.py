"""Reproductions of the experiments of Lei, Jalal, Dhillon and Dimakis (NeurIPS 2019).

One module per experiment, each exposing the registry's interface at module level (see
`layerinv.reproduction.registry`):

- `success_vs_k`: success rate against the latent size k (the paper's Figure 2);
- `noise`: recovery error against noise (Figure 1);
- `mnist`: denoising and inpainting with the shipped MNIST generators (section 5), the l_inf
  and l_1 LPs against gradient descent, LP + gradient descent and the encoder; its tasks
  (`denoise`, `inpaint`) are also the `layerinv mnist` command;
- `sensing`: compressed sensing against the number of measurements m (an extension, CSGM);
- `conv`: the shipped convolutional generator on realizable data, denoising, inpainting
  and compressed sensing, the pattern method and the l_inf LP against gradient descent
  (an extension, issue 14);
- `timing`: the timing table (Table 1), run alone for clean wall-clock times.
"""
