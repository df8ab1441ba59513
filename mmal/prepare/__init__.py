"""``mmal-prepare``: the real multimodal datasets of the published work, from the folders their authors
publish to the arrays mmal trains on, with every preprocessing choice fixed and recorded.

- ``layouts``: the raw folder layouts (UPMC Food-101, CREMA-D, AVE) as lists of samples;
- ``kinds``: each kind of modality (image, frames, text, audio) and what it needs; the preprocessing options;
- ``decode``: reading one source (image, frames, WAV, text) with the checksum of its bytes;
- ``extractors``: frozen embeddings of a local backbone, or raw tensors for end-to-end training;
- ``store``: the resumable output folder and its manifest;
- ``run``: one preparation; ``cli``: its command line.

Needs the ``[prepare]`` extra (``transformers``, ``pillow``, ``tqdm``); mmal's core does not import it.
"""

from mmal.prepare.run import prepare

__all__ = ["prepare"]
