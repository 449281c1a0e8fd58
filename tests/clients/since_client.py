"""A stock python-socketio 5.x dashboard for tests/connection_state_recovery.rs:
python-socketio has no connection state recovery, so it catches up with
get_history {since: <last event_id>} after it was away. It records the `seq`
of every claude_event (live, then from the answer) and prints JSON lines.

Usage: python since_client.py <url>; reads commands on stdin: "leave"
(disconnect), "back" (connect again and ask get_history since the last id).
"""
import json
import sys
import threading

import socketio

url = sys.argv[1]
sio = socketio.Client(reconnection=False)
seqs = []
histories = []
last_id = None
lock = threading.Lock()


def line(value):
    sys.stdout.write(json.dumps(value) + "\n")
    sys.stdout.flush()


def record(event):
    global last_id
    with lock:
        seqs.append(event["seq"])
        last_id = event["event_id"]
        if event.get("last"):
            line({"type": "done", "seqs": seqs, "histories": histories, "badOffsets": 0})


@sio.on("claude_event")
def on_event(data):
    record(data)


@sio.on("event_history")
def on_history(answer):
    histories.append({"count": answer["count"], "more": answer.get("more"), "gap": answer.get("gap")})
    for event in answer["events"]:
        record(event)
    line({"type": "history", "count": answer["count"], "more": answer.get("more"), "gap": answer.get("gap")})


@sio.event
def connect():
    line({"type": "connect"})
    if last_id is not None:
        sio.emit("get_history", {"since": last_id})


sio.connect(url, transports=["websocket"])
for command in sys.stdin:
    command = command.strip()
    if command == "leave":
        sio.disconnect()
        line({"type": "left"})
    elif command == "back":
        sio.connect(url, transports=["websocket"])
