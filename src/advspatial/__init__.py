"""advspatial: where adversarial perturbations act, compared with where the classifier looks."""

__version__ = "0.1.0"
