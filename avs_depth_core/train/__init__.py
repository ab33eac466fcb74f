"""Trainers: supervised AVS-Net (avsnet.py) and self-supervised Monodepth2 (monodepth2.py), sharing loop.py."""
