"""GeoTIFF tags for test scenes (tifffile `extratags`): a 10 m UTM grid and a GDAL no-data value."""

UTM_KEYS = (1, 1, 0, 4, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32633, 3076, 0, 1, 9001)  # WGS 84 / UTM 33N, metres
GEOTAGS = [
    (33550, "d", 3, (10.0, 10.0, 0.0), True),  # ModelPixelScale: 10 m pixels
    (33922, "d", 6, (0.0, 0.0, 0.0, 500000.0, 4000000.0, 0.0), True),  # ModelTiepoint
    (34735, "H", len(UTM_KEYS), UTM_KEYS, True),  # GeoKeyDirectory
    (34737, "s", 0, "WGS 84 / UTM zone 33N|", True),  # GeoAsciiParams
]


def nodata_tag(value: str) -> tuple:
    """GDAL_NODATA as GDAL writes it (ASCII)."""
    return (42113, "s", 0, value, True)
