"""layerinv: invert deep generative networks one layer at a time with linear programming.

After Lei, Jalal, Dhillon and Dimakis, "Inverting Deep Generative Models, One Layer at a Time",
NeurIPS 2019.

The public API, modelled on scipy.optimize (one front door per task, a result object):

- `invert(net, x, method)` -> `Inversion` (per layer, `LayerReport`; per sample solved on
  activation regions, `PatternReport`): a latent z with G(z) close to x, certified where the
  layers, or the region found, determine it;
- `reconstruct(net, y, measurement)` -> `Reconstruction`: the inverse problems, with the
  operators of `layerinv.measurements` (compose with `*`, as DeepInverse's);
- `Network`, `Layer`, `random_network`; the activations (`ReLU`, `LeakyReLU`, `ELU`,
  `Sigmoid`, `Tanh`, `IdentityActivation`, `get_activation` for names like 'leaky_relu(0.2)');
- `Status`, every status a result reports (a str enum); the errors.

Public modules: `layerinv.measurements`, `layerinv.solvers` (the LP backends; `register`
adds one), `layerinv.exact` (mixed-integer answers), `layerinv.baselines` (gradient descent),
`layerinv.pretrained` (the shipped MNIST models), `layerinv.datasets`. Modules whose names
start with `_` are private.
"""

from layerinv import measurements, solvers
from layerinv._reconstruct import reconstruct
from layerinv._version import __version__
from layerinv._walk import invert
from layerinv.activations import (
    ELU,
    Activation,
    LeakyReLU,
    ReLU,
    Sigmoid,
    Tanh,
    get_activation,
)
from layerinv.activations import Identity as IdentityActivation
from layerinv.errors import InputError, LayerinvError, NetworkFileError, UnsupportedLayerError
from layerinv.network import Layer, Network, random_network
from layerinv.results import Inversion, LayerReport, PatternReport, Reconstruction, Status

__all__ = [
    "ELU",
    "Activation",
    "IdentityActivation",
    "InputError",
    "Inversion",
    "Layer",
    "LayerReport",
    "LayerinvError",
    "LeakyReLU",
    "Network",
    "NetworkFileError",
    "PatternReport",
    "ReLU",
    "Reconstruction",
    "Sigmoid",
    "Status",
    "Tanh",
    "UnsupportedLayerError",
    "__version__",
    "get_activation",
    "invert",
    "measurements",
    "random_network",
    "reconstruct",
    "solvers",
]
