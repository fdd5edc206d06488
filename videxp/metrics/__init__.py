"""Video evaluation metrics on one streaming interface (PSNR, SSIM, LPIPS, FVD) and the report writer."""

from videxp.metrics.base import DistributionMetric, FrameMetric, Metric
from videxp.metrics.fvd import FVD
from videxp.metrics.lpips import LPIPS
from videxp.metrics.psnr import PSNR
from videxp.metrics.report import format_table, write_report
from videxp.metrics.ssim import SSIM

__all__ = [
    "Metric",
    "FrameMetric",
    "DistributionMetric",
    "PSNR",
    "SSIM",
    "LPIPS",
    "FVD",
    "write_report",
    "format_table",
]
