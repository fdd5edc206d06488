"""Video IO in one place: the array conventions, reading and writing every supported format, grids, and
PyAV decoding (`videxp.video.decode`)."""

from videxp.video.io import (
    CONTAINER_SUFFIXES,
    FRAME_SUFFIXES,
    VideoError,
    check_video,
    ensure_rgb,
    make_grid,
    read_image,
    read_video,
    scale_16_to_8,
    to_float,
    to_uint8,
    to_unit,
    video_info,
    write_filmstrip,
    write_grid,
    write_video,
)

__all__ = [
    "CONTAINER_SUFFIXES",
    "FRAME_SUFFIXES",
    "VideoError",
    "check_video",
    "ensure_rgb",
    "make_grid",
    "read_image",
    "read_video",
    "scale_16_to_8",
    "to_float",
    "to_uint8",
    "to_unit",
    "video_info",
    "write_filmstrip",
    "write_grid",
    "write_video",
]
