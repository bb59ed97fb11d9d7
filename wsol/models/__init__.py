"""Backbones, the CAM classifier and the weight-map generator."""
