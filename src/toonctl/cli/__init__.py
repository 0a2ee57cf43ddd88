"""The command-line interface. Commands import torch and the models inside their bodies, so
``toonctl --help`` stays fast."""
