"""Compute choices shared by the simulator and the runtime (attention kernel, VAE tiling, dtypes).

A bottom layer: the simulator must count exactly what the runtime will run, so both import these
rather than one importing the other.
"""
