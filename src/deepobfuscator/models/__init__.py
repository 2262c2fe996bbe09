"""Model families: the VGG16 obfuscator/classifier split, reconstructors, and a name registry."""
from .reconstructors import MirrorReconstructor
from .registry import (
    CLASSIFIERS, RECONSTRUCTORS, build_classifier, build_obfuscator, build_reconstructor,
    register_classifier, register_reconstructor,
)
from .vgg import Obfuscator, VGGClassifier

__all__ = [
    "CLASSIFIERS", "MirrorReconstructor", "Obfuscator", "RECONSTRUCTORS", "VGGClassifier",
    "build_classifier", "build_obfuscator", "build_reconstructor", "register_classifier",
    "register_reconstructor",
]
