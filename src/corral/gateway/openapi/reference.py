"""`GET /openapi.json` and the reference page `GET /docs` (Swagger UI, from the
`swagger-ui-bundle-v2` package: nothing is loaded from a CDN).

`reference_routes(served)` documents exactly the routes it is given plus its own, so
the document lists what the app serves, and nothing else."""

from __future__ import annotations

import mimetypes
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from corral.gateway.errors import ApiError
from corral.gateway.openapi.document import build_openapi
from corral.gateway.openapi.operations import OPERATIONS, REFERENCE, Operation

# The files of the page, served by name (nothing else of the package is reachable).
ASSETS = ("swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png", "favicon-16x16.png")

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title} API reference</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css">
<link rel="icon" type="image/png" href="/docs/assets/favicon-32x32.png" sizes="32x32">
</head>
<body>
<div id="reference"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({{url: "/openapi.json", dom_id: "#reference", deepLinking: true,
                              presets: [SwaggerUIBundle.presets.apis], layout: "BaseLayout"}});
</script>
</body>
</html>
"""


def route_keys(routes: Iterable[BaseRoute]) -> set[tuple[str, str]]:
    """(path, method) of every HTTP route (HEAD, which Starlette adds to GET, left out)."""
    keys: set[tuple[str, str]] = set()
    for route in routes:
        if isinstance(route, Route):
            keys.update((route.path, m) for m in route.methods or () if m != "HEAD")
    return keys


def operations_for(routes: Iterable[BaseRoute]) -> list[Operation]:
    """The table's operations that these routes serve, in the table's order. A route
    with no entry in the table is an error: every route is documented."""
    served = route_keys(routes)
    known = {op.key for op in (*OPERATIONS, *REFERENCE)}
    missing = sorted(served - known)
    if missing:
        raise ValueError(f"routes missing from corral.gateway.openapi.operations: {missing}")
    return [op for op in OPERATIONS if op.key in served]


def assets_dir() -> Path:
    import swagger_ui_bundle

    return Path(str(swagger_ui_bundle.swagger_ui_path))


def reference_routes(served: Sequence[BaseRoute], *, title: str = "Corral") -> list[BaseRoute]:
    """`/openapi.json`, `/docs` and `/docs/assets/{name}`, documenting ``served`` and themselves."""
    document = build_openapi([*operations_for(served), *REFERENCE], title=title)
    body = orjson.dumps(document)
    page = PAGE.format(title=title).encode()
    folder = assets_dir()

    async def openapi(_: Request) -> Response:
        return Response(body, media_type="application/json")

    async def docs(_: Request) -> Response:
        return Response(page, media_type="text/html")

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in ASSETS:
            raise ApiError(404, f"No such file: {name}", code="not_found")
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        return Response((folder / name).read_bytes(), media_type=content_type,
                        headers={"cache-control": "public, max-age=86400"})

    return [
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
        Route("/docs/assets/{name}", asset, methods=["GET"]),
    ]


def document_of(routes: Sequence[BaseRoute]) -> dict[str, Any]:
    """The document `reference_routes` serves for an app with these routes."""
    served = [r for r in routes if not (isinstance(r, Route) and r.path in {o.path for o in REFERENCE})]
    return build_openapi([*operations_for(served), *REFERENCE])
