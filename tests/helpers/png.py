"""Reading PNG files back in tests."""

import struct


def png_size(path):
    """(width, height) from the PNG header, after checking the signature and IHDR chunk."""
    head = open(path, "rb").read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR", f"{path} is no PNG"
    return struct.unpack(">II", head[16:24])
