"""Layers: ``Dense``, ``Dropout``, ``InputLayer`` and the ``Layer`` base for your own."""

from fastckpt.layers.base import Layer
from fastckpt.layers.dense import Dense
from fastckpt.layers.dropout import Dropout
from fastckpt.layers.input_layer import Input, InputLayer

__all__ = ["Layer", "Dense", "Dropout", "InputLayer", "Input"]
