"""What runs on the GPU: kvsim's paged-attention kernels and an OPT/LLaMA model runner.

- ``reference``: pure-torch kernels (the specification; what CPU-only code runs)
- ``kernels``: the CUDA versions (``csrc/*.cu``, compiled with NVRTC through cupy)
- ``ops``: picks one of the two by tensor device
- ``weights``, ``runner``: the model, driven by kvsim block tables
- ``timing``: step times for benchmarks and calibration

Nothing here is imported by the simulator; torch is needed only when these modules are.
See docs/gpu.md.
"""
