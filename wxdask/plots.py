"""Pictures: panels of reflectivity maps on the lat/lon grid, and images decoded from embeddings.

Core (pure): :func:`dbz_colormap`.
Files: :func:`image_panel` (one PNG of several maps, with a dBZ colour scale),
:func:`series_plot` (lines over time). Images decoded from embeddings come from
:func:`wxdask.model.decode_dbz` with a decoder from :mod:`wxdask.models`.

Maps follow the store's orientation (row 0 is the southern edge). Matplotlib
runs headless (the Agg backend); large grids are thinned for drawing only.
"""

from __future__ import annotations

import logging
from typing import IO, TYPE_CHECKING, Sequence, TypeVar, cast

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.colors import BoundaryNorm, ListedColormap

__all__ = [
    "DBZ_LEVELS",
    "DBZ_COLORS",
    "dbz_colormap",
    "image_panel",
    "series_plot",
]

logger = logging.getLogger(__name__)

#: Boundaries of the colour scale, dBZ (values below 5 dBZ are left blank: no echo).
DBZ_LEVELS = tuple(range(5, 80, 5))
#: The usual National Weather Service reflectivity colours, one per 5 dBZ band from 5 to 75.
DBZ_COLORS = (
    "#04e9e7", "#019ff4", "#0300f4", "#02fd02", "#01c501", "#008e00", "#fdf802",
    "#e5bc00", "#fd9500", "#fd0000", "#d40000", "#bc0000", "#f800fd", "#9854c6",
)
#: Largest side drawn; larger images are thinned (drawing only).
MAX_DRAW = 600


def dbz_colormap() -> tuple[ListedColormap, BoundaryNorm]:
    """The reflectivity colour map and its norm (5 dBZ bands from 5 to 75; blank below 5).

    Examples
    --------
    >>> cmap, norm = dbz_colormap()
    >>> cmap.N, int(norm.boundaries[0]), int(norm.boundaries[-1])
    (14, 5, 75)
    """
    from matplotlib.colors import BoundaryNorm, ListedColormap

    cmap = ListedColormap(list(DBZ_COLORS), name="nws_reflectivity").with_extremes(
        under=(1, 1, 1, 0), over=DBZ_COLORS[-1], bad=(0.85, 0.85, 0.85, 1))
    # with_extremes returns a copy of the same class; matplotlib's stubs say Colormap
    return cast("ListedColormap", cmap), BoundaryNorm(DBZ_LEVELS, cmap.N)


#: A file name, or a binary file object (the explorer draws into memory).
_PathOrFile = TypeVar("_PathOrFile", str, IO[bytes])


def _thin(a: np.ndarray) -> np.ndarray:
    step = max(1, int(np.ceil(max(a.shape[-2:]) / MAX_DRAW)))
    return a[..., ::step, ::step]


def image_panel(
    images: Sequence[np.ndarray | None],
    titles: Sequence[str],
    path: _PathOrFile,
    *,
    latitude: np.ndarray | None = None,
    longitude: np.ndarray | None = None,
    suptitle: str | None = None,
    ncols: int | None = None,
    outlines: Sequence[Sequence[tuple[np.ndarray, np.ndarray, str]] | None] | None = None,
    axes_out: list | None = None,
) -> _PathOrFile:
    """Write one PNG of reflectivity maps side by side, with one dBZ colour bar.

    Parameters
    ----------
    images : sequence of numpy.ndarray or None
        ``(y, x)`` maps in dBZ (row 0 south); ``None`` draws an empty panel.
    titles : sequence of str
        One per image.
    path : str
        PNG to write.
    latitude, longitude : numpy.ndarray, optional
        ``(y, x)`` coordinates; maps are drawn on them when their shape
        matches, else in grid cells.
    suptitle : str, optional
        Title of the figure.
    ncols : int, optional
        Columns (default: up to 4).
    outlines : sequence, optional
        Per panel, ``None`` or lines ``(xs, ys, colour)`` drawn over the map, in
        longitude/latitude when the maps are drawn on them, else in grid cells
        (column, row); e.g. a tile's edge.
    axes_out : list, optional
        Filled, once the PNG is written, with one dict per drawn map: where its
        axes lie in the PNG (``left``, ``right``, ``top``, ``bottom`` as shares
        of the width and height, from the top left), its data limits
        (``x_min``, ``x_max``, ``y_min``, ``y_max``: longitude/latitude when
        ``on_latlon``, else grid column/row) and the PNG's ``width``/``height``
        in pixels; the axes are linear, so a pixel maps back to a point
        (the explorer's map clicks).

    Returns
    -------
    str
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    n = len(images)
    if n == 0:
        raise ValueError("image_panel needs at least one image")
    ncols = ncols or min(n, 4)
    nrows = int(np.ceil(n / ncols))
    shapes = [np.shape(im) for im in images if im is not None]
    lon = lat = None
    if latitude is not None and longitude is not None:
        lat = np.asarray(latitude, dtype=np.float64)
        lon = np.asarray(longitude, dtype=np.float64)
        lon = np.where(lon > 180, lon - 360, lon)
    on_grid = lat is not None and bool(shapes) and all(sh == lat.shape for sh in shapes)
    if on_grid:
        assert lat is not None and lon is not None  # on_grid implies both
        stretch = 1.0 / np.cos(np.deg2rad(np.nanmean(lat)))
        aspect = (np.nanmax(lat) - np.nanmin(lat)) * stretch / max(np.nanmax(lon) - np.nanmin(lon), 1e-9)
    else:
        aspect = shapes[0][0] / shapes[0][1] if shapes else 0.6
    width = 3.4
    title_lines = max(str(t).count("\n") + 1 for t in titles) if len(titles) else 1
    row_height = width * aspect + 0.35 + 0.18 * title_lines
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols + 1.2, row_height * nrows + 0.7),
                             squeeze=False, layout="constrained")
    cmap, norm = dbz_colormap()
    mappable = None
    for ax, img, title in zip(axes.ravel(), images, titles):
        ax.set_title(title, fontsize=8)
        ax.tick_params(labelsize=6)
        if img is None:
            ax.text(0.5, 0.5, "no image", ha="center", va="center", transform=ax.transAxes, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        img = np.asarray(img, dtype=np.float32)
        if on_grid:
            assert lat is not None and lon is not None
            mappable = ax.pcolormesh(_thin(lon), _thin(lat), _thin(img), cmap=cmap, norm=norm,
                                     shading="nearest", rasterized=True)
            ax.set_aspect(stretch)
        else:
            mappable = ax.imshow(_thin(img), origin="lower", cmap=cmap, norm=norm, interpolation="nearest")
    for ax, lines in zip(axes.ravel(), outlines or []):
        for xs, ys, colour in lines or []:
            if not on_grid:  # drawn in thinned grid cells
                step = max(1, int(np.ceil(max(shapes[0]) / MAX_DRAW))) if shapes else 1
                xs, ys = (np.asarray(xs) + 0.5) / step - 0.5, (np.asarray(ys) + 0.5) / step - 0.5
            ax.plot(xs, ys, color=colour, linewidth=1.5)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    if on_grid:
        fig.supxlabel("longitude", fontsize=8)
        fig.supylabel("latitude", fontsize=8)
    if mappable is not None:
        cbar = fig.colorbar(mappable, ax=axes, shrink=0.9, extend="both")
        cbar.set_label("composite reflectivity (dBZ)", fontsize=8)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.savefig(path, dpi=100)
    if axes_out is not None:  # positions after the draw: constrained layout and aspect applied
        width, height = round(fig.get_figwidth() * 100), round(fig.get_figheight() * 100)  # at dpi=100
        for i, (ax, img) in enumerate(zip(axes.ravel(), images)):
            if img is None:
                continue
            box = ax.get_position()
            (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
            axes_out.append({"panel": i, "left": box.x0, "right": box.x1, "top": 1.0 - box.y1,
                             "bottom": 1.0 - box.y0, "x_min": float(x0), "x_max": float(x1),
                             "y_min": float(y0), "y_max": float(y1), "on_latlon": bool(on_grid),
                             "width": int(width), "height": int(height)})
    plt.close(fig)
    logger.info("wrote %s", path)
    return path


def series_plot(
    time: np.ndarray,
    series: dict[str, np.ndarray],
    path: str,
    *,
    ylabel: str = "",
    title: str | None = None,
    logy: bool = True,
) -> str:
    """Write a PNG of one or more series over time (NaN breaks a line: gaps stay visible).

    Returns
    -------
    str
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.5))
    for name, values in series.items():
        ax.plot(np.asarray(time), np.asarray(values, dtype=np.float64), label=name, lw=0.9, marker=".", ms=2)
    if logy:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_xlabel("initialisation time (UTC)")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    logger.info("wrote %s", path)
    return path
