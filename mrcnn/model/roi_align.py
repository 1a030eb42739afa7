"""RoIAlign on the CPU that uses every core, takes bf16 and channels_last as they come, and
computes what torchvision's ``roi_align`` computes.

Why: torchvision's CPU kernel loops serially over every output element, recomputes the bilinear
weights per channel in backward, has no bf16 kernel (under autocast every FPN level is cast to
float32 for each call) and makes its input contiguous (NCHW) again (``csrc/ops/cpu/
roi_align_kernel.cpp``; parallel versions are asked for upstream: pytorch/vision#4935, #6619).

How: RoIAlign's bilinear sampling is separable. For one RoI, the average over a bin's samples of
the interpolated feature is ``Ay @ F @ Ax.T`` per channel, where ``Ay`` [out_h, H] and ``Ax``
[out_w, W] hold the interpolation weights of the rows and columns the samples touch (at most two
rows per sample, torchvision's border rules included). Only a window of the feature map around
the RoI has non-zero weight, so each RoI's window is gathered (``index_select`` on the map seen
as [B*H*W, C]: rows of C contiguous values, what channels_last gives for free), and the two
products are batched matrix multiplications over RoIs. Every step is an ATen op that runs on all
cores and in the input's dtype; autograd differentiates it, except the gather, whose gradient is
a ``scatter_add_`` with an expanded index (ATen's parallel path for it) instead of
``index_select``'s serial ``index_add_``.

On CUDA, while scripting or exporting, :class:`MultiScaleRoIAlign` calls torchvision's op.
"""

from __future__ import annotations

import torch
import torchvision
from torch import Tensor
from torchvision.ops import MultiScaleRoIAlign as TorchvisionMultiScaleRoIAlign
from torchvision.ops.poolers import _convert_to_roi_format, _filter_input, _setup_scales

# RoIs per batch of the gather: its buffer is rois x window_h x window_w x channels values.
MAX_GATHERED = 1 << 24


class _GatherRows(torch.autograd.Function):
    """``table[index]`` for a 2-D table [N, C], differentiable through a parallel scatter-add."""

    @staticmethod
    def forward(ctx, table: Tensor, index: Tensor) -> Tensor:
        ctx.save_for_backward(index)
        ctx.rows = table.shape[0]
        return table.index_select(0, index)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        (index,) = ctx.saved_tensors
        grad = grad.contiguous()
        table_grad = grad.new_zeros((ctx.rows, grad.shape[1]))
        # An index expanded along the columns takes ATen's sorted, parallel scatter-add.
        table_grad.scatter_add_(0, index[:, None].expand_as(grad), grad)
        return table_grad, None


def _axis_samples(
    start: Tensor, length: Tensor, out_size: int, grid: Tensor, size: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One axis of torchvision's bilinear sampling: per RoI, bin and sample [R, out, grid], the
    low and high neighbour indices and their weights (already divided by the samples per bin;
    zero for a sample outside the map or beyond the RoI's own grid). ``start``/``length`` [R]
    are in feature-map units, ``grid`` [R] samples per bin, ``size`` the map's size."""
    max_grid = int(grid.max())
    bin_size = length / out_size
    step = torch.arange(max_grid, dtype=start.dtype)
    cell = torch.arange(out_size, dtype=start.dtype)
    coords = (  # the middle of each sub-bin
        start[:, None, None]
        + cell[None, :, None] * bin_size[:, None, None]
        + (step[None, None, :] + 0.5) * (bin_size / grid.clamp(min=1))[:, None, None]
    )
    valid = (coords >= -1.0) & (coords <= size) & (step[None, None, :] < grid[:, None, None])
    coords = coords.clamp(min=0)
    low = coords.floor().long()
    at_end = low >= size - 1
    low = low.clamp(max=size - 1)
    high = torch.where(at_end, low, low + 1)
    frac = torch.where(at_end, torch.zeros_like(coords), coords - low)
    scale = valid.to(coords.dtype) / grid.clamp(min=1).to(coords.dtype)[:, None, None]
    return low, high, (1 - frac) * scale, frac * scale


def _axis_matrix(
    low: Tensor, high: Tensor, w_low: Tensor, w_high: Tensor, first: Tensor, window: int
) -> Tensor:
    """[R, out, window]: each bin's average of its samples' interpolation weights over the
    window of rows (or columns) that starts at ``first`` [R]."""
    rois, out_size, _ = low.shape
    matrix = torch.zeros(rois, out_size, window, dtype=w_low.dtype)
    offset = first[:, None, None]
    matrix.scatter_add_(2, (low - offset).clamp(0, window - 1), w_low)
    matrix.scatter_add_(2, (high - offset).clamp(0, window - 1), w_high)
    return matrix


def _window(low: Tensor, high: Tensor, weight: Tensor) -> tuple[Tensor, Tensor]:
    """Each RoI's first row (or column) with a weight, and how many its samples span."""
    used = weight > 0
    big = torch.iinfo(low.dtype).max
    first = torch.where(used, low, big).amin(dim=(1, 2))
    last = torch.where(used, high, -1).amax(dim=(1, 2))
    empty = last < 0
    first = torch.where(empty, 0, first)
    return first, torch.where(empty, 1, last - first + 1)


def roi_align(
    input: Tensor,
    rois: Tensor,
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> Tensor:
    """torchvision's ``roi_align`` (``rois`` [K, 5]: batch index, x1, y1, x2, y2) on the CPU:
    the same values, on every core, in the input's dtype (see module doc)."""
    out_h, out_w = (output_size, output_size) if isinstance(output_size, int) else output_size
    batch, channels, height, width = input.shape
    count = rois.shape[0]
    if count == 0:
        return input.new_zeros((0, channels, out_h, out_w))
    # Coordinates and weights in float32 (float64 for float64 input), as torchvision's kernel
    # computes them in its scalar type; only the gathers and products run in the input's dtype.
    coord_dtype = torch.float64 if input.dtype == torch.float64 else torch.float32
    boxes = rois[:, 1:].to(coord_dtype) * spatial_scale - (0.5 if aligned else 0.0)
    x1, y1, x2, y2 = boxes.unbind(dim=1)
    roi_w, roi_h = x2 - x1, y2 - y1
    if not aligned:  # torchvision: a RoI is at least one cell wide unless aligned
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    if sampling_ratio > 0:
        grid_h = grid_w = torch.full((count,), sampling_ratio, dtype=torch.long)
    else:  # adaptive: ceil(roi size / output size) samples per bin side, per RoI
        grid_h, grid_w = torch.ceil(roi_h / out_h).long(), torch.ceil(roi_w / out_w).long()
    rows = _Axis(*_axis_samples(y1, roi_h, out_h, grid_h, height))
    cols = _Axis(*_axis_samples(x1, roi_w, out_w, grid_w, width))
    # [B*H*W, C]: one row of C values per map position (a view when input is channels_last).
    table = input.permute(0, 2, 3, 1).reshape(batch * height * width, channels)
    base = rois[:, 0].long() * (height * width)
    corners = 4 * rows.low.shape[1] * rows.low.shape[2] * cols.low.shape[1] * cols.low.shape[2]
    windows = rows.span * cols.span
    # Gathering every sample's four neighbours costs `corners` rows of C per RoI; the window
    # a RoI's samples touch costs its area plus two small products. Measured here (1 thread,
    # CPU time, forward and backward): box 7x7, 1 sample per bin on 32x32 maps, 6.4 ms by
    # points, 11.3 ms by windows (torchvision 16.3 ms); 2 samples on 100x100 maps, 1178 ms by
    # points, 365 ms by windows (torchvision 736 ms).
    pool = _pool_points if corners <= int(windows.float().mean()) else _pool_windows
    pooled = pool(table, base, rows, cols, width, channels)  # [R, out_h, out_w, C]
    return pooled.permute(0, 3, 1, 2)  # [R, C, out_h, out_w], channels_last in memory


class _Axis:
    """One axis of the samples (see :func:`_axis_samples`) and the window they span."""

    def __init__(self, low: Tensor, high: Tensor, w_low: Tensor, w_high: Tensor) -> None:
        self.low, self.high, self.w_low, self.w_high = low, high, w_low, w_high
        self.first, self.span = _window(low, high, w_low + w_high)

    def select(self, index: Tensor) -> _Axis:
        chosen = _Axis.__new__(_Axis)
        for name in ("low", "high", "w_low", "w_high", "first", "span"):
            setattr(chosen, name, getattr(self, name)[index])
        return chosen


def _pool_points(
    table: Tensor, base: Tensor, rows: _Axis, cols: _Axis, width: int, channels: int
) -> Tensor:
    """Every sample's four neighbours gathered and weighted, then averaged per bin."""
    count, out_h, grid_h = rows.low.shape
    _, out_w, grid_w = cols.low.shape
    per_roi = 4 * out_h * grid_h * out_w * grid_w * channels
    parts = []
    for start in range(0, count, max(1, MAX_GATHERED // per_roi)):
        chunk = slice(start, start + max(1, MAX_GATHERED // per_roi))
        ys = [(a[chunk].flatten(1), w[chunk].flatten(1)) for a, w in
              ((rows.low, rows.w_low), (rows.high, rows.w_high))]  # fmt: skip
        xs = [(a[chunk].flatten(1), w[chunk].flatten(1)) for a, w in
              ((cols.low, cols.w_low), (cols.high, cols.w_high))]  # fmt: skip
        index = torch.stack(
            [base[chunk, None, None] + y[:, :, None] * width + x[:, None, :]
             for y, _ in ys for x, _ in xs]
        )  # fmt: skip
        weight = torch.stack([wy[:, :, None] * wx[:, None, :] for _, wy in ys for _, wx in xs])
        gathered = _GatherRows.apply(table, index.reshape(-1)).view(*index.shape, channels)
        values = (gathered * weight[..., None].to(gathered.dtype)).sum(0)  # [r, Sy, Sx, C]
        parts.append(values.view(-1, out_h, grid_h, out_w, grid_w, channels).sum((2, 4)))
    return torch.cat(parts) if len(parts) > 1 else parts[0]


def _pool_windows(
    table: Tensor, base: Tensor, rows: _Axis, cols: _Axis, width: int, channels: int
) -> Tensor:
    """Each RoI's window gathered, then its rows and columns interpolated by two products."""
    count, out_h, _ = rows.low.shape
    out_w = cols.low.shape[1]
    result = table.new_empty((count, out_h, out_w, channels))
    order = torch.argsort(rows.span * cols.span)  # similar windows share a chunk's padding
    done = 0
    while done < count:
        smallest = int(rows.span[order[done]] * cols.span[order[done]])
        idx = order[done : done + max(1, MAX_GATHERED // (smallest * channels))]
        wh, ww = int(rows.span[idx].max()), int(cols.span[idx].max())
        idx = idx[: max(1, MAX_GATHERED // (wh * ww * channels))]
        done += len(idx)
        r, c = rows.select(idx), cols.select(idx)
        # Positions past the map's edge carry no weight: any in-map index will do.
        row_index = (r.first[:, None] + torch.arange(wh)).clamp(max=r.high.max())
        col_index = (c.first[:, None] + torch.arange(ww)).clamp(max=c.high.max())
        flat = base[idx, None, None] + row_index[:, :, None] * width + col_index[:, None, :]
        window = _GatherRows.apply(table, flat.reshape(-1)).view(len(idx), wh, ww * channels)
        ay = _axis_matrix(r.low, r.high, r.w_low, r.w_high, r.first, wh).to(window.dtype)
        ax = _axis_matrix(c.low, c.high, c.w_low, c.w_high, c.first, ww).to(window.dtype)
        # Rows, [r, out_h, wh] @ [r, wh, ww*C]; then columns, [r, out_w, ww] @ [r, ww, out_h*C].
        pooled = torch.bmm(ay, window).view(len(idx), out_h, ww, channels)
        pooled = pooled.transpose(1, 2).reshape(len(idx), ww, out_h * channels)
        pooled = torch.bmm(ax, pooled).view(len(idx), out_w, out_h, channels)
        result = result.index_put((idx,), pooled.transpose(1, 2).to(result.dtype))
    return result


class MultiScaleRoIAlign(TorchvisionMultiScaleRoIAlign):
    """torchvision's ``MultiScaleRoIAlign`` (the same levels, scales and empty state dict) with
    the CPU :func:`roi_align` above; on CUDA and while tracing it is torchvision's, and
    :func:`torchvision_poolers` puts torchvision's back for scripting and export."""

    def forward(
        self, x: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]
    ) -> Tensor:
        features = _filter_input(x, self.featmap_names)
        if features[0].device.type != "cpu" or torchvision._is_tracing():
            return super().forward(x, boxes, image_shapes)
        features, rois = pooling_inputs(self, x, boxes, image_shapes)
        size, ratio = self.output_size, self.sampling_ratio
        if len(features) == 1:
            return roi_align(features[0], rois, size, self.scales[0], ratio)
        levels = self.map_levels(boxes)
        result = features[0].new_zeros((len(rois), features[0].shape[1], *size))
        for level, (feature, scale) in enumerate(zip(features, self.scales, strict=True)):
            index = torch.where(levels == level)[0]
            pooled = roi_align(feature, rois[index], size, scale, ratio)
            result = result.index_put((index,), pooled.to(result.dtype))
        return result


def pooling_inputs(
    pooler: TorchvisionMultiScaleRoIAlign,
    x: dict[str, Tensor],
    boxes: list[Tensor],
    image_shapes: list[tuple[int, int]],
) -> tuple[list[Tensor], Tensor]:
    """The feature maps a multi-scale pooler pools from and its RoIs [K, 5], with the pooler's
    scales and level mapper set on first use, as torchvision's ``forward`` sets them."""
    features = _filter_input(x, pooler.featmap_names)
    if pooler.scales is None or pooler.map_levels is None:
        pooler.scales, pooler.map_levels = _setup_scales(
            features, image_shapes, pooler.canonical_scale, pooler.canonical_level
        )
    return features, _convert_to_roi_format(boxes)


def torchvision_poolers(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with every :class:`MultiScaleRoIAlign` turned back into torchvision's (same
    settings): TorchScript compiles torchvision's forward, not this module's Python."""
    for module in model.modules():
        if type(module) is MultiScaleRoIAlign:
            module.__class__ = TorchvisionMultiScaleRoIAlign
    return model
