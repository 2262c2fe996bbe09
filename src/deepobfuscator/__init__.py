"""DeepObfuscator: privacy-preserving adversarial learning of on-device feature obfuscators."""

__version__ = "0.1.0"
