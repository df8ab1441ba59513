from mmal.data.features import load_features
from mmal.data.mfeat import make_mfeat
from mmal.data.multimodal import MultimodalData, MultimodalDataset
from mmal.data.pitfall import Pitfall
from mmal.data.synthetic import make_synthetic
from mmal.data.watch import make_watch

__all__ = ["MultimodalData", "MultimodalDataset", "Pitfall", "load_features", "make_mfeat", "make_synthetic",
           "make_watch"]
