"""PR curves and confusion matrices drawn as RGB images."""

import pytest
import torch


def test_pr_curve_and_confusion_plots_are_rgb_images():
    import numpy as np

    from mrcnn.evaluation.diagnostics import PRCurve
    from mrcnn.visualize.plots import plot_confusion_matrix, plot_pr_curves

    recall = np.linspace(0, 1, 101)
    curves = [
        PRCurve(n, recall, 1 - recall * k / 3, 1 - recall * k / 2, 0.5, 0.4)
        for k, n in enumerate(["circle", "square"], start=1)
    ]
    plot = plot_pr_curves(curves, "segm")
    assert plot.dtype == torch.uint8 and plot.shape[0] == 3 and plot.shape[2] > plot.shape[1] > 300
    matrix = plot_confusion_matrix(np.array([[3, 1, 0], [0, 2, 1], [1, 0, 0]]), ["a", "b"], "m")
    assert matrix.dtype == torch.uint8 and matrix.shape[0] == 3 and min(matrix.shape[1:]) > 300
    with pytest.raises(ValueError, match="labels"):
        plot_confusion_matrix(np.zeros((2, 2)), ["a", "b"])
