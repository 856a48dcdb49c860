"""The corruption service's user-facing error."""
from medpo_ray.errors import MedpoError


class CorruptionError(MedpoError, ValueError):
    """An image, mask or box that cannot be corrupted; the message names the field."""
