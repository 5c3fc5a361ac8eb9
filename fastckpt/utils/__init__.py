"""``keras.utils``: seeding, custom-object registration, ``Sequence``/``PyDataset``."""

from fastckpt.backend import set_random_seed
from fastckpt.utils.data_adapter import PyDataset, Sequence
from fastckpt.saving.serialization import (custom_object_scope, get_registered_name,
                                           get_registered_object, register_keras_serializable)

CustomObjectScope = custom_object_scope

__all__ = ["set_random_seed", "register_keras_serializable", "custom_object_scope",
           "CustomObjectScope", "get_registered_object", "get_registered_name",
           "Sequence", "PyDataset"]
