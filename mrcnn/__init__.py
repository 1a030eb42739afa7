"""mrcnn: fine-tune torchvision's Mask R-CNN with PyTorch Lightning and Hydra."""

__version__ = "0.2.0"
