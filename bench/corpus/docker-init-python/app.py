"""A small ASGI service (Starlette on uvicorn): a health check and a list of notes."""

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

NOTES: list[str] = []


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def notes(request: Request) -> JSONResponse:
    if request.method == "POST":
        NOTES.append((await request.body()).decode())
    return JSONResponse({"notes": NOTES})


app = Starlette(routes=[Route("/healthz", healthz), Route("/notes", notes, methods=["GET", "POST"])])
