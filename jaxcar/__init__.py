"""jaxcar: JPEG compression-artifact removal networks in JAX/Flax."""

__version__ = "0.1.0"
