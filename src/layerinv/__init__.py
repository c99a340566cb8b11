"""layerinv: invert deep generative networks one layer at a time with linear programming.

After Lei, Jalal, Dhillon and Dimakis, "Inverting Deep Generative Models, One Layer at a Time",
NeurIPS 2019.
"""

from layerinv import measurements
from layerinv._layer_inversion import LayerReport
from layerinv._reconstruct import (  # the function shadows the submodule name
    Reconstruction,
    reconstruct,
)
from layerinv._version import __version__
from layerinv._walk import Inversion, invert
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
    "ReLU",
    "Reconstruction",
    "Sigmoid",
    "Tanh",
    "UnsupportedLayerError",
    "__version__",
    "get_activation",
    "invert",
    "measurements",
    "random_network",
    "reconstruct",
]
