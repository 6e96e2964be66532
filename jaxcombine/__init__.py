"""jaxcombine: combine two images through the features of a pretrained VGG."""

__version__ = "0.1.0"
