"""Several models sharing one GPU: jobs as chains of kernels, thread blocks on SMs, and the
policies that decide which kernel runs (the GPU's hardware queues, MPS partitions, Paella's
software dispatcher). docs/gpushare.md describes the model and the commands."""
