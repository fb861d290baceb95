"""Diagnostics of a data set before training: is a test set or an unlabelled pool in the training set's domain?"""

from eip2nn.diagnostics.adversarial import AdversarialResult, adversarial_validation, adversarial_validation_features

__all__ = ["AdversarialResult", "adversarial_validation", "adversarial_validation_features"]
