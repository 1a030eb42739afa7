"""Everything mrcnn draws: instances on images and panels of them (``draw``), evaluation errors
marked on an image (``errors``), and PR curves and confusion matrices (``plots``)."""

from mrcnn.visualize.draw import (
    PALETTE,
    class_colour,
    draw_instances,
    draw_prediction,
    draw_target,
    panel_grid,
    save_png,
    side_by_side,
    to_uint8_image,
)
from mrcnn.visualize.errors import ERROR_COLOURS, draw_errors, draw_marked
from mrcnn.visualize.plots import (
    figure_to_image,
    plot_confusion_matrix,
    plot_error_breakdown,
    plot_pr_curves,
)

__all__ = [
    "ERROR_COLOURS",
    "PALETTE",
    "class_colour",
    "draw_errors",
    "draw_instances",
    "draw_marked",
    "draw_prediction",
    "draw_target",
    "figure_to_image",
    "panel_grid",
    "plot_confusion_matrix",
    "plot_error_breakdown",
    "plot_pr_curves",
    "save_png",
    "side_by_side",
    "to_uint8_image",
]
