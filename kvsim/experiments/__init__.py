"""Experiments: one run, sweeps, policy comparisons and validation campaigns, built from
configurations. Above the simulator and the GPU executor; the CLI only parses and prints."""
