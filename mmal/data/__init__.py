from mmal.data.multimodal import MultimodalData, MultimodalDataset
from mmal.data.pitfall import Pitfall
from mmal.data.synthetic import make_synthetic

__all__ = ["MultimodalData", "MultimodalDataset", "Pitfall", "make_synthetic"]
