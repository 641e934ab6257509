"""Is the profiler's slower graph pass CUPTI left on by torch.profiler? Times the executor's
whole-job graphs (kvsim.gpushare.cuda) before and after a torch.profiler session in the same
process, and graphs captured anew after it. Run on a GPU machine from the repository root:
``python docs/gpushare/real/cupti_probe.py`` (cupti-probe.log beside it is its output on an H200).
"""

import torch
import torchvision

from kvsim.gpushare.cuda import CudaGPU

gpu = CudaGPU(["resnet18", "inception_v3"], [1, 1], 1)
for m in (0, 1):
    gpu.time_alone(m, 20)
before = [gpu.time_alone(m, 50)[1] * 1e6 for m in (0, 1)]
net = torchvision.models.resnet18().eval().cuda()
x = torch.randn(1, 3, 224, 224, device="cuda")
with torch.inference_mode(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]):
    for _ in range(3):
        net(x)
        torch.cuda.synchronize()
after = [gpu.time_alone(m, 50)[1] * 1e6 for m in (0, 1)]
fresh = CudaGPU(["resnet18", "inception_v3"], [1, 1], 1)
for m in (0, 1):
    fresh.time_alone(m, 20)
after_new = [fresh.time_alone(m, 50)[1] * 1e6 for m in (0, 1)]
print(
    "whole-job graph pass us (resnet18, inception_v3): before profiler",
    [round(v, 1) for v in before],
    "after, same graphs",
    [round(v, 1) for v in after],
    "after, graphs captured anew",
    [round(v, 1) for v in after_new],
)
