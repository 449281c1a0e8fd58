"""The original stack, for the load tool: a python-socketio + aiohttp hub with
warden's relay behaviour (connection_ack on connect; a claude_event is stamped
with server_id and received_at and sent to every other client) and a
GET /status for the load tool's probe. No reliability layer.

    pip install -r bench/hubs/requirements.txt
    python3 bench/hubs/python_hub.py --port 8765
"""

import argparse
import datetime

import socketio
from aiohttp import web

parser = argparse.ArgumentParser()
parser.add_argument("--host", default="127.0.0.1")
parser.add_argument("--port", type=int, default=8765)
args = parser.parse_args()

SERVER_ID = f"python-hub-{args.port}"
sio = socketio.AsyncServer(async_mode="aiohttp", max_http_buffer_size=1_000_000)
app = web.Application()
sio.attach(app)
clients = set()


def now_iso():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@sio.event
async def connect(sid, environ):
    clients.add(sid)
    await sio.emit("connection_ack", {"server_id": SERVER_ID, "sid": sid, "timestamp": now_iso()}, to=sid)


@sio.event
async def disconnect(sid, *_):
    clients.discard(sid)


@sio.on("claude_event")
async def claude_event(sid, data):
    event = dict(data) if isinstance(data, dict) else {"data": data}
    event["server_id"] = SERVER_ID
    event["received_at"] = now_iso()
    await sio.emit("claude_event", event, skip_sid=sid)


async def status(_request):
    return web.json_response({"status": "running", "clients": len(clients)})


app.router.add_get("/status", status)
web.run_app(app, host=args.host, port=args.port, print=None)
