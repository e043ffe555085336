"""A small ASGI service (Starlette on uvicorn): a health check and a list of notes.

Usage:
  app.py [--host=HOST] [--port=PORT]

Options:
  --host=HOST  The address to listen on [default: 127.0.0.1].
  --port=PORT  The port to listen on [default: 8000].
"""

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

if __name__ == "__main__":
    import uvicorn
    from docopt import docopt

    args = docopt(__doc__)
    uvicorn.run(app, host=args["--host"], port=int(args["--port"]))
