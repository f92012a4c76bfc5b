"""A frozen flow policy steered by an RL actor through its noise, its actions or its bottleneck latent."""
