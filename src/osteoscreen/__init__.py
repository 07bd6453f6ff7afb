"""osteoscreen: research pre-screening of osteoporosis from dental panoramic radiographs.

Implements Fan et al. 2021 (a Siamese CNN over 8 landmark patches with group attention). Not a
diagnostic device.
"""

__version__ = "0.1.0"
