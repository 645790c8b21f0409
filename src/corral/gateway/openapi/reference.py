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
                              presets: [SwaggerUIBundle.presets.apis], layout: "BaseLayout",
                              validatorUrl: null}});  // no badge from an outside validator
</script>
</body>
</html>
"""


def route_keys(routes: Iterable[BaseRoute]) -> set[tuple[str, str]]:
    """(path, method) of every HTTP route (HEAD, which Starlette adds to GET, left out);
    routes with ``include_in_schema=False`` (the console's HTML pages) are not API."""
    keys: set[tuple[str, str]] = set()
    for route in routes:
        if isinstance(route, Route) and route.include_in_schema:
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


class Reference:
    """The document and the page. The document is built on its first request (generating
    every model's schema costs a noticeable part of startup), then served as bytes."""

    def __init__(self, operations: Sequence[Operation], *, title: str) -> None:
        self.operations = operations
        self.title = title
        self.page = PAGE.format(title=title).encode()
        self.assets = assets_dir()
        self._document: bytes | None = None

    def document(self) -> dict[str, Any]:
        return build_openapi(self.operations, title=self.title)

    async def openapi(self, _: Request) -> Response:
        if self._document is None:
            self._document = orjson.dumps(self.document())
        return Response(self._document, media_type="application/json")

    async def docs(self, _: Request) -> Response:
        return Response(self.page, media_type="text/html")

    async def asset(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in ASSETS:
            raise ApiError(404, f"No such file: {name}", code="not_found")
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        return Response((self.assets / name).read_bytes(), media_type=content_type,
                        headers={"cache-control": "public, max-age=86400"})


def reference_routes(served: Sequence[BaseRoute], *, title: str = "Corral") -> list[BaseRoute]:
    """`/openapi.json`, `/docs` and `/docs/assets/{name}`, documenting ``served`` and themselves."""
    reference = Reference([*operations_for(served), *REFERENCE], title=title)
    return [
        Route("/openapi.json", reference.openapi, methods=["GET"]),
        Route("/docs", reference.docs, methods=["GET"]),
        Route("/docs/assets/{name}", reference.asset, methods=["GET"]),
    ]
