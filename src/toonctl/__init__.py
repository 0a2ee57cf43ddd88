"""toonctl: generative cartoon interpolation (ToonCrafter) from the command line.

Importing this package is cheap: it must not import torch (``toonctl --help`` stays fast).
"""

__version__ = "0.1.0"
