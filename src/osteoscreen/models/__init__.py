"""Models: backbones shared over the 8 patches, fusion heads, and the assembled network."""
