from mmal.models.classifier import ModelOutput, MultimodalClassifier

__all__ = ["ModelOutput", "MultimodalClassifier"]
