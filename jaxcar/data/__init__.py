"""Input data: image sources, the JPEG degradation, model inputs, the Grain training pipeline.

Nothing here imports JAX: these modules run inside Grain worker processes.
"""
