"""Ray actors: thin wrappers that run the medpo_ray library in a Ray cluster."""
