"""Neural-network parts: the SEnSeI encoder and its pre-training heads."""

from xsensei.nn.heads import PretrainHeads, PretrainHeadsConfig
from xsensei.nn.sensei import SEnSeI, SEnSeIConfig

__all__ = ["PretrainHeads", "PretrainHeadsConfig", "SEnSeI", "SEnSeIConfig"]
