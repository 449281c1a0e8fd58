"""A stock python-socketio client (5.18.1, default options: its usual
reconnection backoff) for tests/client_healing.rs: connects to argv[1] and
reports, one JSON line each on stdout, every connect, disconnect (with the
reason python-socketio gives) and claude_event. Exits when stdin closes."""
import json
import sys

import socketio


def out(line):
    print(json.dumps(line), flush=True)


sio = socketio.Client()


@sio.event
def connect():
    out({"ev": "connect", "id": sio.sid})


@sio.event
def disconnect(reason=None):
    out({"ev": "disconnect", "reason": str(reason)})


@sio.event
def connect_error(data):
    out({"ev": "connect_error", "reason": str(data)})


@sio.on("claude_event")
def claude_event(data=None, *_rest):
    out({"ev": "event", "data": data})


sio.connect(sys.argv[1], retry=True)
sys.stdin.read()
sio.disconnect()
