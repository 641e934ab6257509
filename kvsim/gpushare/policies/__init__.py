"""Dispatch policies: who decides when each kernel reaches the GPU (registry.POLICIES)."""
