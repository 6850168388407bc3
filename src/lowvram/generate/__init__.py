"""Generation: load what the user has, apply the plan, run the diffusers pipeline, write the image."""
