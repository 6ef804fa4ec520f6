"""Small helpers over ``torch.nn`` modules that every layer of torchslim uses."""

from torchslim.nn.modes import eval_mode, model_device, train_mode, zero_image_pass

__all__ = ["eval_mode", "model_device", "train_mode", "zero_image_pass"]
