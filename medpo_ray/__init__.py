"""medpo-ray: fine-grained on-policy preference optimization for medical VLMs (pure library, no Ray)."""

__version__ = "0.1.0"
