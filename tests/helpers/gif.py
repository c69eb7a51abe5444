"""Writing GIF files in tests (TensorFlow decodes GIFs but does not encode them): grey
palette, LZW codes kept at 9 bits by a clear code every 250 pixels (no compression)."""

import numpy as np


def _lzw_nine_bit(indices):
    codes = []
    for start in range(0, len(indices), 250):
        codes += [256, *indices[start:start + 250]]  # clear, then ≤ 250 literal codes
    codes.append(257)  # end of information
    bits = "".join(format(code, "09b")[::-1] for code in codes)  # least significant first
    bits += "0" * (-len(bits) % 8)
    return bytes(int(bits[i:i + 8][::-1], 2) for i in range(0, len(bits), 8))


def sub_blocks(data):
    return b"".join(bytes([len(data[i:i + 255])]) + data[i:i + 255]
                    for i in range(0, len(data), 255)) + b"\0"


def frame_descriptor(left, top, width, height):
    return b"," + b"".join(v.to_bytes(2, "little") for v in (left, top, width, height)) + b"\0"


def gif_bytes(screen, frames):
    """A GIF89a of logical screen `screen` (width, height) with `frames`: [(left, top, grey
    uint8 [h, w])], each frame a descriptor and its LZW data."""
    palette = bytes(np.repeat(np.arange(256, dtype=np.uint8), 3))
    out = [b"GIF89a", screen[0].to_bytes(2, "little"), screen[1].to_bytes(2, "little"),
           bytes([0xF7, 0, 0]), palette]  # global colour table of 256 entries
    for left, top, pixels in frames:
        out += [frame_descriptor(left, top, pixels.shape[1], pixels.shape[0]), b"\x08",
                sub_blocks(_lzw_nine_bit([int(v) for v in pixels.ravel()]))]
    return b"".join(out) + b";"
