"""The gateway's published contract: the table of operations, the OpenAPI 3.1 document
built from it, and the routes that serve it (`/openapi.json`, `/docs`)."""

from corral.gateway.openapi.document import build_openapi, openapi_path
from corral.gateway.openapi.operations import OPERATIONS, REFERENCE, Answer, Header, Operation
from corral.gateway.openapi.reference import Reference, operations_for, reference_routes, route_keys

__all__ = [
    "OPERATIONS",
    "REFERENCE",
    "Answer",
    "Header",
    "Operation",
    "Reference",
    "build_openapi",
    "openapi_path",
    "operations_for",
    "reference_routes",
    "route_keys",
]
