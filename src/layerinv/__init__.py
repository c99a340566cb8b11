"""layerinv: invert deep generative networks one layer at a time with linear programming.

After Lei, Jalal, Dhillon and Dimakis, "Inverting Deep Generative Models, One Layer at a Time",
NeurIPS 2019.
"""

from . import measurements
from .activations import Activation, LeakyReLU, ReLU, Sigmoid, Tanh, get_activation
from .activations import Identity as IdentityActivation
from .errors import InputError, LayerinvError, NetworkFileError, UnsupportedLayerError
from .invert import Inversion, invert
from .layer import LayerReport
from .network import Layer, Network, random_network
from .reconstruct import Reconstruction, reconstruct  # the function shadows the submodule name

__version__ = "0.1.0"

__all__ = [
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
