"""The Ray driver of medpo-ray: the on-policy loop over the actors (loop.py), how a run starts (launch.py),
and the `medpo-ray` command line. The only package that imports both medpo_ray and actors/."""
