"""GPU matrices that keep GGUF quantization in VRAM: layouts, Triton kernels, GpuQuantMatrix."""
