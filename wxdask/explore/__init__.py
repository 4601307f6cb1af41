"""``wxdask explore``: a read-only analog explorer for one store, in the browser.

One page over one store: a timeline of its slots (status, cluster ribbon,
interpolation residual), the picked slot's image on the map with its decoded
reconstruction and error, its k analogs (stored, or rerun for another
exclusion window), the regimes (decoded centroids, sizes, counts by month),
and the model's held-out scores against PCA.

Stack: the standard library's :class:`http.server.ThreadingHTTPServer`, JSON
endpoints, PNGs rendered on the server by :mod:`wxdask.plots` (matplotlib), and
one small static page (``static/``: HTML, JS, CSS, no build step, no
CDN). Why not Panel/Bokeh: a Bokeh server app keeps per-session Python state
over a websocket, is harder to test endpoint by endpoint with plain HTTP and
would redraw the maps in a second (browser-side) colour scheme instead of the
project's own drawing functions; starlette/uvicorn are not installed. The
stdlib server adds no dependency, every view is one GET that a test (or curl)
can check for its status code and content type, and the maps are exactly the
pictures the CLI draws.

Safety: the store is opened once, read-only (:func:`wxdask.store.open_store`,
``xarray.open_zarr``), and read lazily: only what a view needs is loaded (the
timeline reads 1-D ``(time,)`` variables of one lead; a slot view reads one
image chunk). No request parameter reaches the filesystem: static files are a
fixed table, times and leads must be ones the store holds. Bad requests get a
4xx with a JSON ``{"error": ...}`` message, never a traceback.

Tiles: where the store holds ``tile_embedding``, a click on the slot's map
queries the tile there. The slot's PNG is drawn by :func:`wxdask.plots.image_panel`
on linear longitude/latitude axes, and ``/api/slot_map`` answers where those
axes lie in that PNG and their limits (recorded as it was drawn), so the page
turns a click into ``(lon, lat)`` and asks ``/api/tiles?lat&lon`` for the tile
holding it and its k analog tiles (:func:`wxdask.tile_query.query_tile`, the
same search as ``wxdask search --tiles --time --lat --lon``);
``/img/tiles.png`` outlines them on their maps
(:func:`wxdask.tile_query.plot_tile_query`), ``/img/tile_regimes.png`` draws
the slot's tiles in their regime's colour where ``tile_cluster`` exists
(:func:`wxdask.tile_regimes.plot_regime_map`).

Modules: :mod:`~wxdask.explore.core` (the numpy query, the mosaic, request
errors and limits), :mod:`~wxdask.explore.responses` (responses and the static
files), :mod:`~wxdask.explore.base` (the store, request parameters, cached
reads, the decoder), :mod:`~wxdask.explore.views` (JSON views),
:mod:`~wxdask.explore.tile_views` (tile views), :mod:`~wxdask.explore.pictures`
(PNG views), :mod:`~wxdask.explore.app` (:class:`Explorer`: routes and
dispatch) and :mod:`~wxdask.explore.server` (the HTTP server).
"""

from __future__ import annotations

from wxdask.explore.app import Explorer
from wxdask.explore.base import load_decoder
from wxdask.explore.core import ANALOG_COLUMNS as ANALOG_COLUMNS
from wxdask.explore.core import MAX_K as MAX_K
from wxdask.explore.core import PNG_CACHE as PNG_CACHE
from wxdask.explore.core import TILE_CACHE as TILE_CACHE
from wxdask.explore.core import TILE_MODES as TILE_MODES
from wxdask.explore.core import TILE_PARAMS as TILE_PARAMS
from wxdask.explore.core import ExploreRequestError, brute_force_query, mosaic
from wxdask.explore.core import parse_window as parse_window
from wxdask.explore.responses import STATIC as STATIC
from wxdask.explore.responses import Response as Response
from wxdask.explore.server import make_server, serve

# The names after ``as`` are importable from here as before the split, and (as before) not in ``__all__``.
__all__ = ["ExploreRequestError", "Explorer", "brute_force_query", "load_decoder", "make_server", "mosaic", "serve"]
