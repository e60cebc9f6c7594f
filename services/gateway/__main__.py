"""`python -m services.gateway`: run the WebSocket gateway."""

from services.gateway.server import serve
from shared.service import run

if __name__ == "__main__":
    run("gateway", serve)
