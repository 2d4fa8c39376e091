"""Serve echo_app on 127.0.0.1:PORT with uvicorn and the given websocket protocol.

python serve.py PORT WS      (WS: a uvicorn --ws value, e.g. turbows.uvicorn:WebSocketProtocol or websockets-sansio)
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import uvicorn

if __name__ == "__main__":
    port, ws = int(sys.argv[1]), sys.argv[2]
    uvicorn.run(
        "echo_app:app",
        host="127.0.0.1",
        port=port,
        ws=ws,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        lifespan="off",
        ws_max_size=16 * 1024 * 1024,
    )
