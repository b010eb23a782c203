"""FisherTune: Fisher-guided robust fine-tuning of Vision Foundation Models for DGSS."""

__version__ = "0.1.0"
