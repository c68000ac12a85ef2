"""Training: optimizers, losses, sharded steps, the loop, checkpoints, NoGAN phases, multi-host setup."""
