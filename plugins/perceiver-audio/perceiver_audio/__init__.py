"""perceiver-audio: raw audio waveforms as 8-bit mu-law tokens for perceiver's ``clm`` task.

Importing this package (or its ``plugin`` module, the entry point) does not import torch: the components are
registered as ``"module:attribute"`` strings and imported when they are built.
"""

__version__ = "0.1.0"
