"""Reproductions of the experiments of Lei, Jalal, Dhillon and Dimakis (NeurIPS 2019).

- `mnist`: denoising and inpainting with the shipped MNIST generator,
  the l_inf and l_1 LPs against gradient descent, LP + gradient descent and the encoder.
"""
