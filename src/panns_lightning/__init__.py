"""PANNs audio tagging with PyTorch Lightning + Hydra."""

__version__ = "0.1.0"
