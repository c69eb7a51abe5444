"""Small files that state their sizes where a header-only check does not look."""

import numpy as np
import tensorflow as tf

from helpers.gif import frame_descriptor, gif_bytes, sub_blocks


def far_frame_jpeg(image, padding=100_000):
    """`image` (uint8 [h, w, 3]) as a JPEG whose frame header comes after `padding` bytes of
    comment segments."""
    jpeg = tf.io.encode_jpeg(image).numpy()
    comments = b"".join(b"\xff\xfe" + (16_002).to_bytes(2, "big") + b"c" * 16_000
                        for _ in range(-(-padding // 16_004)))
    return jpeg[:2] + comments + jpeg[2:]


def oversized_frame_gif(width=16_000, height=16_000):
    """A GIF of a 1 × 1 logical screen holding one width × height frame (a few hundred bytes:
    its data stops short; giflib would allocate the frame before finding that out)."""
    header = gif_bytes((1, 1), [])[:-1]  # (without the trailer)
    return header + frame_descriptor(0, 0, width, height) + b"\x08" + sub_blocks(
        b"\0" * 600) + b";"


def many_frames_gif(frames=40, side=64, screen=(64, 64)):
    """An animated GIF: `frames` frames of side × side within `screen`."""
    grey = np.random.default_rng(0).integers(0, 256, (side, side), dtype=np.uint8)
    return gif_bytes(screen, [(0, 0, grey)] * frames)
