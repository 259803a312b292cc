"""Sensor catalogue: band wavelengths, ids and thermal constants for the sensors xsensei knows.

SEnSeI encodes each band by its (min, centre, max) wavelength, so knowing a sensor means knowing
those three numbers per band; this package maps the ids STAC providers and file names use
(``"Sentinel-2A"``, ``"LC08"``, ``"swir16"``, ``"SR_B4"``...) to them.

>>> from xsensei.sensors import get_sensor
>>> get_sensor("LANDSAT_8").band("swir16").wavelengths_nm
(1566.5, 1609.1, 1651.2)
"""

from __future__ import annotations

from xsensei.sensors.catalogue import (
    BandInfo,
    SensorInfo,
    UnknownBandError,
    UnknownSensorError,
    find_sensor,
    get_sensor,
    list_sensors,
    normalise_name,
)

__all__ = [
    "BandInfo",
    "SensorInfo",
    "UnknownBandError",
    "UnknownSensorError",
    "find_sensor",
    "get_sensor",
    "list_sensors",
    "normalise_name",
]
