"""Pairwise quality ranking (seed 003): images with tiers S > A > B > C, a DINOv2 backbone and a projector that
scores each image, trained on pairs of different tiers."""
