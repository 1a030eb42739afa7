"""mrcnn: fine-tune torchvision's Mask R-CNN with PyTorch Lightning and Hydra."""

__version__ = "0.1.0"
