"""CheXpert-style clinical finding labeler: surface rules that turn report text into claims with spans."""
from medpo_ray.labeler.chexpert import chexpert_labels
from medpo_ray.labeler.claims import Attr, Claim, Span
from medpo_ray.labeler.rules import attributes, label, sentences

__all__ = ["Attr", "Claim", "Span", "attributes", "chexpert_labels", "label", "sentences"]
