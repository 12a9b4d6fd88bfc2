"""Data sets (digits built in, ImageFolder, torchvision sets from a local root) and batch augmentation."""
