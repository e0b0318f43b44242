"""Loading a model's processor for images and text only, without torchvision.

transformers 5 builds the Qwen-VL processors (and others with a video processor) only with their video processor,
which needs torchvision: `AutoProcessor.from_pretrained` fails without it, even for image-only input, and
torchvision's wheels do not import beside the CPU build of torch that local runs and CI use. This task never
passes videos, so for such processor classes it loads a variant without the video processor (the same class
otherwise, under the same name, so what it saves still loads with AutoProcessor where torchvision is installed).
Every other processor comes from AutoProcessor unchanged.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Union

VIDEO = "video_processor"


def load_processor(path: Union[str, Path], **kwargs):
    """The processor of a model id or from_pretrained directory; kwargs go to from_pretrained (e.g. Qwen-VL's
    min_pixels and max_pixels)."""
    import transformers
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    name = PROCESSOR_MAPPING_NAMES.get(transformers.AutoConfig.from_pretrained(path).model_type)
    cls = getattr(transformers, name, None) if name else None
    if cls is None or VIDEO not in cls.get_attributes():
        return transformers.AutoProcessor.from_pretrained(path, **kwargs)
    return image_only(cls).from_pretrained(path, **kwargs)


@functools.cache
def image_only(processor_class: type) -> type:
    """`processor_class` without its video processor: ProcessorMixin takes the sub-processors that
    get_attributes names (its __init__ drops the video processor it is handed, None here)."""
    attributes = [name for name in processor_class.get_attributes() if name != VIDEO]
    return type(processor_class.__name__, (processor_class,),
                {"get_attributes": classmethod(lambda cls: attributes), "__module__": __name__})
